"""Run SIPp scenarios (tests/sipp_scenarios/*.xml) against the sandbox: from async tests,
and from ``python -m fastagi_dev demo``.

One-shot scenarios (a desk phone calling, subscribing)::

    result = await sipp.call_dtmf(sandbox, tmp_path, service="*599", answers=["1234"])
    result.check()                       # AssertionError with the SIP trace on failure

The person at a test phone types each answer when a prompt plays (told by Asterisk's
AMI, :mod:`fastagi_dev.sandbox.keypad`), never after a pause: a key Asterisk gets while
no command reads the channel is lost.

Paging phones (long-running UAS on ``phone_base + ext``)::

    async with sipp.PagingPhone(sandbox, 201, tmp_path) as phone:
        ...                              # make Asterisk call PJSIP/201
        await phone.wait_invites(1)
    phone.invite_times                   # when each INVITE arrived (datetime)

    busy = sipp.Phone(sandbox, 243, tmp_path, "uas_busy.xml")   # any uas_*.xml scenario
    await busy.wait("INVITE", 2); busy.received("BYE"); busy.sent("INFO")
    desk = sipp.Responder(sandbox, 241, tmp_path, answers=["1"])  # answers, types 1

Every run writes SIPp's message, error and screen logs into ``workdir`` (use pytest's
``tmp_path``), and the result carries them for assertions and failure output.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import secrets
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Self

from fastagi_dev.sandbox.ami import AmiClient
from fastagi_dev.sandbox.image import repo_root
from fastagi_dev.sandbox.instance import Sandbox
from fastagi_dev.sandbox.keypad import Person, answer_calls, stop, type_answers
from fastagi_dev.sandbox.ports import udp_ports_bound_by

# The scenarios live with the tests, where integrators look for them; the demo runs from
# a clone of the repository.
SCENARIOS = repo_root() / "tests" / "sipp_scenarios"
# What a phone's microphone sends once answered (uac_call_dtmf.xml, uas_answer_dtmf.xml
# stream this file in a loop): G.711 u-law at 8 kHz. By default one second of silence
# (0xFF encodes zero); a test gives other audio (a voice, a tone) with ``microphone``.
MICROPHONE_FILE = "microphone.ulaw"
SILENCE = b"\xff" * 8000
# Header of one entry in SIPp's -message_file: a dashed line with the time, then
# "UDP message received [N] bytes :" or "UDP message sent (N bytes):", then the message.
_ENTRY = re.compile(
    r"^-+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n(UDP message (?:received|sent)[^\n]*)\n",
    re.M,
)


@dataclass(frozen=True)
class SipMessage:
    time: dt.datetime
    received: bool
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    def header(self, *names: str) -> str:
        """The first header with one of ``names`` (case-insensitive; give the compact form
        too, e.g. ``"Call-ID", "i"``), or ""."""
        wanted = {name.lower() for name in names}
        for line in self.text.split("\n")[1:]:
            if not line.strip():
                break  # the body begins
            name, _, value = line.partition(":")
            if name.strip().lower() in wanted:
                return value.strip()
        return ""

    @property
    def transaction(self) -> tuple[str, str, str, str]:
        """What a retransmission repeats exactly (RFC 3261 17.1.1.2, 17.2.1): the start
        line, Call-ID, CSeq and the top Via's branch."""
        via = self.header("Via", "v")
        branch = via.partition("branch=")[2].split(";", 1)[0]
        return (self.first_line, self.header("Call-ID", "i"), self.header("CSeq"), branch)


def first_arrivals(messages: list[SipMessage]) -> list[SipMessage]:
    """``messages`` without retransmissions: over UDP, Asterisk sends a request (or a final
    response) again when the answer to it comes late (Timer A/G, 500 ms doubling), and
    SIPp logs every copy. One page is one INVITE transaction, however often it was sent."""
    seen: set[tuple[bool, tuple[str, str, str, str]]] = set()
    firsts = []
    for message in messages:
        key = (message.received, message.transaction)
        if key not in seen:
            seen.add(key)
            firsts.append(message)
    return firsts


def parse_messages(log: str) -> list[SipMessage]:
    """The SIP messages of a SIPp ``-message_file`` log, in order."""
    entries = list(_ENTRY.finditer(log))
    messages = []
    for index, entry in enumerate(entries):
        end = entries[index + 1].start() if index + 1 < len(entries) else len(log)
        messages.append(
            SipMessage(
                time=dt.datetime.fromisoformat(entry.group(1)),
                received="received" in entry.group(2),
                text=log[entry.end() : end].strip("\n"),
            )
        )
    return messages


@dataclass(frozen=True)
class SippResult:
    """Exit status and logs of one SIPp run. Exit 0 means every call succeeded;
    ``untyped``: what the person at the phone was to type but had no prompt for."""

    scenario: str
    returncode: int
    messages_log: str
    errors_log: str
    screen: str
    timed_out: bool = False
    untyped: tuple[str, ...] = ()

    @property
    def messages(self) -> list[SipMessage]:
        return parse_messages(self.messages_log)

    def received(self, method_or_status: str) -> list[SipMessage]:
        """Received messages whose first line starts with ``method_or_status``
        (``"BYE"``, ``"NOTIFY"``, ``"SIP/2.0 200"``), retransmissions left out."""
        return [
            m
            for m in first_arrivals(self.messages)
            if m.received and m.first_line.startswith(method_or_status)
        ]

    def check(self) -> None:
        """Raise AssertionError with the trace unless the scenario completed and the
        person typed every answer."""
        if self.returncode != 0 or self.timed_out or self.untyped:
            raise AssertionError(str(self))

    def __str__(self) -> str:
        status = "timed out" if self.timed_out else f"exit {self.returncode}"
        if self.untyped:
            status += f", never typed {list(self.untyped)} (no prompt asked for them)"
        return (
            f"SIPp {self.scenario}: {status}\n--- errors\n{self.errors_log[-3000:]}\n"
            f"--- messages\n{self.messages_log[-6000:]}\n--- screen\n{self.screen[-1500:]}"
        )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def sipp_command(
    scenario: str,
    *,
    remote: str | None,
    local_port: int,
    workdir: Path,
    service: str | None = None,
    keys: dict[str, str] | None = None,
    calls: int | None = 1,
    pause_ms: int | None = None,
    recv_timeout_ms: int | None = None,
    extra: tuple[str, ...] = (),
    microphone: bytes = SILENCE,
) -> list[str]:
    """The sipp command line, to run in ``workdir``; logs go to
    ``workdir/<scenario>.{messages,errors,screen}`` (``workdir`` is created, with the
    ``microphone`` audio the phone streams, u-law)."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MICROPHONE_FILE).write_bytes(microphone)
    stem = Path(scenario).stem
    command = ["sipp"]
    if remote is not None:
        command.append(remote)
    command += [
        "-sf",
        str(SCENARIOS / scenario),
        "-i",
        "127.0.0.1",
        "-p",
        str(local_port),
        "-nostdin",
        "-trace_msg",
        "-message_file",
        str(workdir / f"{stem}.messages"),
        "-trace_err",
        "-error_file",
        str(workdir / f"{stem}.errors"),
    ]
    if calls is not None:
        command += ["-m", str(calls)]
    if service is not None:
        command += ["-s", service]
    if pause_ms is not None:
        command += ["-d", str(pause_ms)]
    if recv_timeout_ms is not None:
        command += ["-recv_timeout", str(recv_timeout_ms)]
    for name, value in (keys or {}).items():
        command += ["-key", name, value]
    return [*command, *extra]


async def run_scenario(
    scenario: str,
    workdir: Path,
    *,
    sip_port: int,
    service: str | None = None,
    keys: dict[str, str] | None = None,
    pause_ms: int | None = None,
    recv_timeout_ms: int | None = 20_000,
    local_port: int,
    within: float = 30.0,
    extra: tuple[str, ...] = (),
    microphone: bytes = SILENCE,
) -> SippResult:
    """Run one call of ``scenario`` against 127.0.0.1:``sip_port``; never raises on a
    failed call (see ``SippResult.check``). On timeout SIPp is killed."""
    stem = Path(scenario).stem
    command = sipp_command(
        scenario,
        remote=f"127.0.0.1:{sip_port}",
        local_port=local_port,
        workdir=workdir,
        service=service,
        keys=keys,
        pause_ms=pause_ms,
        recv_timeout_ms=recv_timeout_ms,
        extra=extra,
        microphone=microphone,
    )
    screen_path = workdir / f"{stem}.screen"
    with screen_path.open("wb") as screen:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=screen,
            stderr=screen,
        )
        timed_out = False
        try:
            async with asyncio.timeout(within):
                returncode = await process.wait()
        except TimeoutError:
            timed_out = True
            process.kill()
            returncode = await process.wait()
        except BaseException:
            process.kill()
            await process.wait()
            raise
    return SippResult(
        scenario=scenario,
        returncode=returncode,
        messages_log=_read(workdir / f"{stem}.messages"),
        errors_log=_read(workdir / f"{stem}.errors"),
        screen=_read(screen_path),
        timed_out=timed_out,
    )


async def call_dtmf(
    sandbox: Sandbox,
    workdir: Path,
    *,
    service: str,
    ext: int | str = 101,
    answers: Sequence[str] = (),
    hang_up: bool = False,
    before_prompt: bool = False,
    within: float = 30.0,
    microphone: bytes = SILENCE,
) -> SippResult:
    """Desk phone ``ext`` (or the endpoint "trunk") calls ``service``, and the person at
    it types ``answers`` (one string of keys per prompt that reads keys, "" to stay
    silent at one) as the prompts play, as SIP INFO; then waits for Asterisk's BYE, or,
    with ``hang_up``, hangs up at the next prompt. ``before_prompt``: the first answer
    goes as soon as the server listens (WAIT FOR DIGIT), before any prompt plays.
    ``result.check()`` fails when an answer found no prompt. ``microphone``: the u-law
    audio the phone streams, in a loop, from the answer on (silence by default)."""
    person = Person(answers, hang_up=hang_up, before_prompt=before_prompt)
    local_port = sandbox.caller_port()
    # The Call-ID is fixed, so that the keypad can tell this call's channel from others.
    token = f"keypad-{secrets.token_hex(8)}"
    async with await sandbox.ami() as ami:
        # Listening before the call starts, so that no prompt goes unseen.
        keypad = asyncio.create_task(
            type_answers(
                ami,
                person,
                call_id=f"{token}@127.0.0.1",
                endpoint=str(ext),
                phone_port=local_port,
            )
        )
        try:
            result = await run_scenario(
                "uac_call_dtmf.xml",
                workdir,
                sip_port=sandbox.sip_port,
                service=service,
                keys={"ext": str(ext)},
                recv_timeout_ms=int(within * 1000),
                local_port=local_port,
                within=within + 5,
                extra=("-cid_str", f"{token}@%s"),
                microphone=microphone,
            )
        finally:
            await stop(keypad)
    return replace(result, untyped=person.untyped)


async def subscribe_dialog(
    sandbox: Sandbox, workdir: Path, *, service: str, ext: int = 101, notifies: int = 1
) -> SippResult:
    """Desk phone ``ext`` subscribes to the hint ``service`` (Event: dialog), takes
    ``notifies`` NOTIFYs, unsubscribes. ``result.received("NOTIFY")`` has the bodies."""
    return await run_scenario(
        "subscribe_dialog.xml",
        workdir,
        sip_port=sandbox.sip_port,
        service=service,
        keys={"ext": str(ext), "notifies": str(notifies)},
        local_port=sandbox.caller_port(),
    )


class Phone:
    """Paging phone ``ext``: a SIPp UAS on ``phone_base + ext`` (the static contact of PJSIP
    endpoint 2NN) running ``scenario`` for every INVITE, until stopped.

    ``scenario`` is one of the ``uas_*.xml`` (``uas_answer.xml`` answers, ``uas_busy.xml``
    answers 486; :class:`Responder` runs ``uas_answer_dtmf.xml``); ``keys`` are its ``-key``
    values besides ``ext``. ``answer_options``: answer Asterisk's OPTIONS pings with 200
    (SIPp's ``-aa``), for a phone the sandbox qualifies (``qualified_phones``).
    ``async with Phone(sandbox, 241, tmp_path, ...) as phone:``, or ``start()`` and
    ``stop()``. What the phone saw is in SIPp's message log:
    ``received("BYE")``, ``sent("INFO")``, ``invite_times``, and ``wait("BYE", 2)``.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        ext: int,
        workdir: Path,
        scenario: str = "uas_answer.xml",
        keys: Mapping[str, str] | None = None,
        *,
        answer_options: bool = False,
    ) -> None:
        self.ext = ext
        self.port = sandbox.ports.phone_port(ext)
        self.workdir = workdir / f"phone-{ext}"
        self.scenario = scenario
        self.keys = {"ext": str(ext), **(keys or {})}
        self._stem = Path(scenario).stem
        self._extra = ("-aa",) if answer_options else ()
        self._process: asyncio.subprocess.Process | None = None
        self.returncode: int | None = None

    @property
    def messages_log(self) -> str:
        return _read(self.workdir / f"{self._stem}.messages")

    @property
    def messages(self) -> list[SipMessage]:
        return parse_messages(self.messages_log)

    def received(self, method_or_status: str | tuple[str, ...]) -> list[SipMessage]:
        """Messages received whose first line starts with ``method_or_status`` (or with
        one of them, a tuple: ``("BYE", "CANCEL")``), retransmissions left out."""
        return [
            m
            for m in first_arrivals(self.messages)
            if m.received and m.first_line.startswith(method_or_status)
        ]

    def sent(self, method_or_status: str | tuple[str, ...]) -> list[SipMessage]:
        """Messages sent whose first line starts with ``method_or_status``."""
        return [
            m for m in self.messages if not m.received and m.first_line.startswith(method_or_status)
        ]

    @property
    def invite_times(self) -> list[dt.datetime]:
        """When each INVITE arrived."""
        return [m.time for m in self.received("INVITE ")]

    async def wait(
        self, method_or_status: str | tuple[str, ...], count: int = 1, *, within: float = 15.0
    ) -> list[dt.datetime]:
        """Wait until ``count`` such messages have arrived; when each did.

        Reads SIPp's message log, which it flushes per message: there is no other signal
        from a SIPp process, so an Event cannot replace this poll.
        """
        async with asyncio.timeout(within):
            while len(found := self.received(method_or_status)) < count:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        return [m.time for m in found]

    async def wait_invites(self, count: int, *, within: float = 10.0) -> list[dt.datetime]:
        """Wait until ``count`` INVITEs have arrived; when each did."""
        return await self.wait("INVITE ", count, within=within)

    async def start(self, *, within: float = 5.0, poll_interval: float = 0.02) -> None:
        command = sipp_command(
            self.scenario,
            remote=None,
            local_port=self.port,
            workdir=self.workdir,
            keys=self.keys,
            calls=None,
            extra=self._extra,
        )
        with (self.workdir / f"{self._stem}.screen").open("wb") as screen:
            self._process = await asyncio.create_subprocess_exec(
                *command,
                cwd=self.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=screen,
                stderr=screen,
            )
        # SIPp gives no sign when its socket is bound: watch its sockets (without binding
        # the port, which would take it from SIPp for that moment) until the port shows
        # up or SIPp has exited.
        async with asyncio.timeout(within):
            while self.port not in udp_ports_bound_by(self._process.pid):
                if self._process.returncode is not None:
                    raise AssertionError(f"SIPp UAS for {self.ext} exited:\n{self.log_tail()}")
                await asyncio.sleep(poll_interval)

    async def stop(self) -> None:
        if self._process is None:
            return
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(5):
                    await self._process.wait()
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        self.returncode = self._process.returncode
        self._process = None

    def log_tail(self) -> str:
        screen = _read(self.workdir / f"{self._stem}.screen")
        errors = _read(self.workdir / f"{self._stem}.errors")
        return f"{errors[-2000:]}\n{screen[-1500:]}"

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            # No __aexit__ follows a failed __aenter__: stop what start() got going (the
            # SIPp process, a keypad's AMI connection) here, or it outlives the test.
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class PagingPhone(Phone):
    """A paging phone that answers every INVITE (``uas_answer.xml``) and waits for the BYE."""

    def __init__(self, sandbox: Sandbox, ext: int, workdir: Path) -> None:
        super().__init__(sandbox, ext, workdir)


class Responder(Phone):
    """A phone whose person answers every call and types ``answers`` at its prompts (one
    string of keys per prompt that reads keys, "" to stay silent at one), as SIP INFO
    (``uas_answer_dtmf.xml``): the security desk acknowledging an emergency call."""

    def __init__(self, sandbox: Sandbox, ext: int, workdir: Path, answers: Sequence[str]) -> None:
        super().__init__(sandbox, ext, workdir, "uas_answer_dtmf.xml")
        Person(answers)  # a bad answer fails here, not at the first call
        self._sandbox = sandbox
        self._answers = tuple(answers)
        self._ami: AmiClient | None = None
        self._keypad: asyncio.Task[None] | None = None

    async def start(self, *, within: float = 5.0, poll_interval: float = 0.02) -> None:
        # Listening before the phone can take a call, so that no prompt goes unseen.
        self._ami = await self._sandbox.ami()
        self._keypad = asyncio.create_task(
            answer_calls(self._ami, self._answers, endpoint=str(self.ext), phone_port=self.port)
        )
        await super().start(within=within, poll_interval=poll_interval)

    async def stop(self) -> None:
        try:
            await super().stop()
        finally:
            keypad, ami = self._keypad, self._ami
            self._keypad = self._ami = None
            try:
                if keypad is not None:
                    await stop(keypad)
            finally:
                if ami is not None:
                    await ami.close()
