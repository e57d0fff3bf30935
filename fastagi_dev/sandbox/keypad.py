"""The person at a SIPp test phone: types keys when a prompt plays, as a person does.

A key has to reach Asterisk while a command that reads keys runs. Between AGI commands
res_agi's ``run_agi`` loop reads every frame of the channel and drops it, DTMF included,
so a key sent on a timer ("1.5 s after the answer") is lost whenever the server is still
preparing its prompt (a cold text-to-speech render on a loaded machine).

When does a prompt play? Asterisk says so on its AMI, exactly:

- ``AGIExecStart`` is published just before an AGI command's handler runs (res_agi.c
  ``agi_handle_command``), and the AGI thread reads nothing from the channel in between:
  a key that arrives after the event waits in the channel's queue for that command.
- ``Newexten`` announces a dialplan application (``Read()`` in the fallback question);
  the dialplan reads nothing between applications either.
- ``DTMFEnd`` (Direction Received) tells that Asterisk has read a key.

The audio the phone receives cannot tell it: Asterisk's RTP runs on from one prompt to
the next with no gap, no jump and no marker bit (res_rtp_asterisk marks a new talkspurt
only after more than 80 ms without audio; measured on the sandbox: four back-to-back
prompts, 13 packets, none marked, none late by more than 20 ms), so a phone listening to
RTP hears that something plays, never where one prompt ends and the next begins.

SIPp sees nothing but SIP, so the phone's scenario (``uac_call_dtmf.xml``,
``uas_answer_dtmf.xml``) listens on its own SIP port for two requests that only this
module sends, matched to the call by its Call-ID: ``KEYPAD`` with ``Keys: 1234#`` (the
phone sends one SIP INFO per key) and ``HANGUP``. They never reach Asterisk.

What the person types: one string of keys per prompt that reads keys, in order ("" hears
that prompt and stays silent). A prompt is one command that plays a file and stops on a
key (AGI GET DATA, STREAM FILE with escape digits, ...; dialplan Read()). WAIT FOR DIGIT
plays nothing: a person does not answer silence (unless told to answer before the
prompt, as a caller who knows the question does). The next answer waits until Asterisk
has read every key of the last one and the next prompt starts, so the keys for a
question asked again never land in the question before it.
"""

from __future__ import annotations

import asyncio
import itertools
import shlex
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastagi_dev.sandbox.ami import AmiClient, AmiError, AmiMessage

__all__ = [
    "HANG_UP",
    "KEYS",
    "MAX_KEYS",
    "Person",
    "Prompt",
    "answer_calls",
    "keypad_request",
    "prompt_started",
    "stop",
    "type_answers",
]

#: The keys a phone has (SIP INFO application/dtmf-relay carries these).
KEYS = frozenset("0123456789*#ABCD")
#: The phone's scenarios send at most this many keys per prompt (SIPp has no loops over
#: a string: one INFO element per key).
MAX_KEYS = 8
#: What :meth:`Person.hears` returns when the person hangs up.
HANG_UP = "HANGUP"

# AGI commands that play a file, and the index of their escape-digits word: with escape
# digits (GET DATA always) a key stops the prompt and is read; without, it is dropped.
_AGI_PLAYERS: dict[tuple[str, ...], int | None] = {
    ("GET", "DATA"): None,
    ("STREAM", "FILE"): 3,
    ("CONTROL", "STREAM", "FILE"): 4,
    ("GET", "OPTION"): 3,
    ("SAY", "ALPHA"): 3,
    ("SAY", "DIGITS"): 3,
    ("SAY", "NUMBER"): 3,
    ("SAY", "PHONETIC"): 3,
}
# Dialplan applications (and AGI's EXEC of them) that play to the caller.
_APPS_READING = frozenset({"read", "background", "readexten"})
_APPS_PLAYING = frozenset({"playback", "saydigits", "saynumber", "sayalpha", "controlplayback"})


@dataclass(frozen=True, slots=True)
class Prompt:
    """Asterisk started ``what`` on ``channel``: ``plays`` something to the caller, and
    (``reads_keys``) a key stops it and is read. WAIT FOR DIGIT reads and plays nothing:
    the server listens, silently."""

    channel: str
    what: str
    reads_keys: bool
    plays: bool = True


def prompt_started(event: AmiMessage) -> Prompt | None:
    """The prompt an AMI event announces, or None."""
    channel = event.get("Channel", "")
    if event.get("Event") == "AGIExecStart":
        return _agi_prompt(channel, event.get("Command", ""))
    if event.get("Event") == "Newexten":
        return _app_prompt(channel, event.get("Application", ""))
    return None


def _agi_prompt(channel: str, command: str) -> Prompt | None:
    try:
        # AGI's parse_args() quotes and escapes as a POSIX shell does, near enough.
        words = shlex.split(command)
    except ValueError:
        return None
    if len(words) > 1 and words[0].upper() == "EXEC":
        return _app_prompt(channel, words[1], what=command)
    if [word.upper() for word in words[:3]] == ["WAIT", "FOR", "DIGIT"]:
        return Prompt(channel, command, reads_keys=True, plays=False)
    for verb, escape_at in _AGI_PLAYERS.items():
        if tuple(word.upper() for word in words[: len(verb)]) == verb:
            reads = escape_at is None or (len(words) > escape_at and words[escape_at] != "")
            return Prompt(channel, command, reads)
    return None


def _app_prompt(channel: str, application: str, *, what: str = "") -> Prompt | None:
    name = application.lower()
    if name in _APPS_READING:
        return Prompt(channel, what or application, reads_keys=True)
    if name in _APPS_PLAYING:
        return Prompt(channel, what or application, reads_keys=False)
    return None


def key_read_on(event: AmiMessage) -> str | None:
    """The channel on which Asterisk has just read a key from the phone, or None."""
    if event.get("Event") == "DTMFEnd" and event.get("Direction") == "Received":
        return event.get("Channel")
    return None


class Person:
    """What the person at one call does: types ``answers`` at the prompts that read keys,
    one string per prompt ("" stays silent at one), then, with ``hang_up``, hangs up at
    the next prompt of any kind. ``before_prompt``: the first answer goes as soon as the
    server listens, before any prompt plays (a caller who knows the question)."""

    def __init__(
        self, answers: Sequence[str], *, hang_up: bool = False, before_prompt: bool = False
    ) -> None:
        for keys in answers:
            if len(keys) > MAX_KEYS or not set(keys) <= KEYS:
                raise ValueError(f"an answer is up to {MAX_KEYS} of {''.join(sorted(KEYS))}")
        self._answers = deque(answers)
        self._hang_up = hang_up
        self._before_prompt = before_prompt
        self._unread = 0

    def key_read(self) -> None:
        """Asterisk read one of the keys typed."""
        self._unread = max(0, self._unread - 1)

    def hears(self, prompt: Prompt) -> str | None:
        """What the person does at ``prompt``: the keys to type, :data:`HANG_UP`, or None
        (listens on)."""
        if self._unread:
            # The last answer is still on its way: this prompt may be the one it stops.
            return None
        if self._answers:
            if not prompt.reads_keys or not (prompt.plays or self._before_prompt):
                return None
            self._before_prompt = False
            keys = self._answers.popleft()
            self._unread = len(keys)
            return keys or None
        if self._hang_up and prompt.plays:
            self._hang_up = False
            return HANG_UP
        return None

    @property
    def untyped(self) -> tuple[str, ...]:
        """The answers never typed (and "hang up" if the person never did)."""
        return (*self._answers, *(["hang up"] if self._hang_up else []))


def keypad_request(call_id: str, action: str, *, phone_port: int, own_port: int, seq: int) -> bytes:
    """The request that makes the phone's scenario type ``action`` (keys) or hang up
    (:data:`HANG_UP`). A SIP request in form, so SIPp matches it to the call by Call-ID."""
    method, keys = (HANG_UP, None) if action == HANG_UP else ("KEYPAD", action)
    if keys is not None and (not keys or len(keys) > MAX_KEYS or not set(keys) <= KEYS):
        raise ValueError(f"not keys a phone can type: {keys!r}")
    if any(c in call_id for c in "\r\n"):
        raise ValueError("CR or LF in a Call-ID")
    lines = [
        f"{method} sip:phone@127.0.0.1:{phone_port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{own_port};branch=z9hG4bK-keypad-{seq}",
        "From: <sip:keypad@127.0.0.1>;tag=keypad",
        "To: <sip:phone@127.0.0.1>",
        f"Call-ID: {call_id}",
        f"CSeq: {seq} {method}",
        "Max-Forwards: 70",
        *([f"Keys: {keys}"] if keys is not None else []),
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class _Call:
    call_id: str
    person: Person


class _Keypad:
    """Sends the phone's requests to its SIP port on 127.0.0.1."""

    def __init__(self, phone_port: int) -> None:
        self._phone_port = phone_port
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._socket.bind(("127.0.0.1", 0))
        self._seq = itertools.count(1)

    def send(self, call_id: str, action: str) -> None:
        request = keypad_request(
            call_id,
            action,
            phone_port=self._phone_port,
            own_port=self._socket.getsockname()[1],
            seq=next(self._seq),
        )
        # One datagram on loopback: the kernel takes it at once or raises.
        self._socket.sendto(request, ("127.0.0.1", self._phone_port))

    def close(self) -> None:
        self._socket.close()


async def _call_id(ami: AmiClient, channel: str) -> str | None:
    try:
        response = await ami.action(
            {"Action": "Getvar", "Channel": channel, "Variable": "CHANNEL(pjsip,call-id)"}
        )
    except AmiError:
        return None  # gone already, or no PJSIP channel
    return response.get("Value") or None


async def _identify(
    ami: AmiClient, channel: str, person_for: Callable[[str], Person | None]
) -> _Call | None:
    """The call on ``channel``, if it is one of ours: its Call-ID, and who answers."""
    call_id = await _call_id(ami, channel)
    if call_id is None:
        return None
    person = person_for(call_id)
    return None if person is None else _Call(call_id, person)


async def _serve(
    ami: AmiClient,
    *,
    endpoint: str,
    phone_port: int,
    person_for: Callable[[str], Person | None],
) -> None:
    """Type into the calls of PJSIP endpoint ``endpoint`` (its channels are named
    ``PJSIP/<endpoint>-<sequence>``) what ``person_for(call_id)`` answers, until cancelled."""
    prefix = f"PJSIP/{endpoint}-"
    calls: dict[str, _Call | None] = {}  # channel -> the call, or None: not ours
    keypad = _Keypad(phone_port)
    try:
        while True:
            event = await ami.next_event(within=None)
            channel = event.get("Channel", "")
            if not channel.startswith(prefix):
                continue
            if event.get("Event") == "Hangup":
                calls.pop(channel, None)
                continue
            call = calls.get(channel)
            if key_read_on(event) and call is not None:
                call.person.key_read()
                continue
            prompt = prompt_started(event)
            if prompt is None:
                continue
            if channel not in calls:
                call = calls[channel] = await _identify(ami, channel, person_for)
            if call is not None and (action := call.person.hears(prompt)) is not None:
                keypad.send(call.call_id, action)
    finally:
        keypad.close()


async def type_answers(
    ami: AmiClient, person: Person, *, call_id: str, endpoint: str, phone_port: int
) -> None:
    """For the call ``call_id`` that desk phone ``endpoint`` (a SIPp UAC on ``phone_port``)
    places: ``person`` answers its prompts. Runs until cancelled; start it before the
    call, so that no event is missed."""
    await _serve(
        ami,
        endpoint=endpoint,
        phone_port=phone_port,
        person_for=lambda seen: person if seen == call_id else None,
    )


async def answer_calls(
    ami: AmiClient, answers: Sequence[str], *, endpoint: str, phone_port: int
) -> None:
    """For every call that reaches phone ``endpoint`` (a SIPp UAS on ``phone_port``): a
    person types ``answers`` at its prompts. Runs until cancelled."""
    Person(answers)  # checks them now rather than at the first call
    await _serve(
        ami,
        endpoint=endpoint,
        phone_port=phone_port,
        person_for=lambda _: Person(answers),
    )


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel a keypad task and wait for it; a failure of its own is raised."""
    if not task.done():
        task.cancel()
        await asyncio.wait([task])
    if not task.cancelled() and (error := task.exception()) is not None:
        raise error
