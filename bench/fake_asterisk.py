"""Asterisk's side of FastAGI, for load tests: connect, send the environment, answer commands.

Theory of operation: each session is one TCP connection played by a ``_SessionProtocol``
(a plain asyncio ``Protocol``, not streams, so the driver spends as little CPU per byte as
it can and stays out of the way of the server under test). The session sends an environment
block laid out like ``res_agi.c`` writes it, then for every command line the server sends it
checks the line against the next step of a fixed script and writes the reply Asterisk would
give. After the reply to HANGUP the server must close the connection.

Measured per session:
- command latency: from the moment the driver wrote the environment (or its previous reply)
  until the server's next command line arrived, i.e. the server's turnaround per command;
- close latency: from the reply to HANGUP until the server's EOF;
- session duration: from ``connect()`` until the server's EOF.

Anything else (a wrong command, a command sent before its predecessor was answered, bytes
after HANGUP, an early EOF, a connect error, a session slower than the timeout) is counted
as an error, by kind, with the first few messages kept for the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

DEFAULT_SCRIPT_NAME = "bench"
DEFAULT_CALLER_ID = "1001"
DIGITS = "1234"
MAX_LINE = 8192
_ERROR_SAMPLES = 5


@dataclass(frozen=True, slots=True)
class Step:
    """One command the server must send, and the reply Asterisk gives to it."""

    words: tuple[str, ...]  # the command's name, matched case-insensitively as Asterisk does
    args: tuple[str, ...]  # its arguments after AGI quoting is undone, matched exactly
    reply: bytes

    def describe(self) -> str:
        return " ".join((*self.words, *(a or '""' for a in self.args)))


def bench_script(caller_id: str = DEFAULT_CALLER_ID) -> tuple[Step, ...]:
    """The six commands of the benchmark flow, with real Asterisk replies."""
    return (
        Step(("ANSWER",), (), b"200 result=0\n"),
        Step(("GET", "VARIABLE"), ("CALLERID(num)",), f"200 result=1 ({caller_id})\n".encode()),
        # escape digits "" : no key can interrupt; result=0 means no digit was pressed.
        Step(("STREAM", "FILE"), ("beep", ""), b"200 result=0 endpos=12345\n"),
        Step(("GET", "DATA"), ("prompt", "3000", "4"), f"200 result={DIGITS}\n".encode()),
        Step(("SET", "VARIABLE"), ("RESULT", DIGITS), b"200 result=1\n"),
        Step(("HANGUP",), (), b"200 result=1\n"),
    )


def environment(
    *,
    script_name: str,
    uniqueid: str,
    channel_suffix: str,
    caller_id: str = DEFAULT_CALLER_ID,
    host: str = "127.0.0.1",
) -> bytes:
    """The block ``res_agi.c`` sends first, in its field order, ending with a blank line."""
    lines = ["agi_network: yes"]
    if script_name:  # omitted by Asterisk when the URL has no path
        lines.append(f"agi_network_script: {script_name}")
    lines += [
        f"agi_request: agi://{host}/{script_name}",
        f"agi_channel: PJSIP/{caller_id}-{channel_suffix}",
        "agi_language: en",
        "agi_type: PJSIP",
        f"agi_uniqueid: {uniqueid}",
        "agi_version: 22.1.0",
        f"agi_callerid: {caller_id}",
        "agi_calleridname: Front Desk",
        "agi_callingpres: 0",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        "agi_dnid: *911",
        "agi_rdnis: unknown",
        "agi_context: from-internal",
        "agi_extension: *911",
        "agi_priority: 1",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",  # Asterisk writes the ": " even for an empty value
        "agi_threadid: 140179871885056",
        "agi_arg_1: panic",
        "",
        "",
    ]
    return "\n".join(lines).encode()


def split_command(line: str) -> list[str]:
    """Split a command line the way ``res_agi.c`` ``parse_args`` does.

    Whitespace separates arguments, ``"`` groups (``""`` is one empty argument) and ``\\``
    escapes the next character.
    """
    args: list[str] = []
    current: list[str] = []
    started = quoted = escaped = False
    for ch in line:
        if escaped:
            current.append(ch)
            started, escaped = True, False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted, started = not quoted, True
        elif ch in " \t" and not quoted:
            if started:
                args.append("".join(current))
                current.clear()
                started = False
        else:
            current.append(ch)
            started = True
    if started:
        args.append("".join(current))
    return args


def check_command(step: Step, line: str) -> str | None:
    """None when ``line`` is the command ``step`` expects, else why not."""
    got = split_command(line)
    n = len(step.words)
    words = [w.upper() for w in got[:n]]
    if tuple(words) != step.words or tuple(got[n:]) != step.args:
        return f"expected {step.describe()!r}, got {line!r}"
    return None


@dataclass(slots=True)
class _Outcome:
    error_kind: str | None = None
    error: str = ""
    latencies: list[float] = field(default_factory=list)
    close_latency: float = 0.0
    duration: float = 0.0


class _SessionProtocol(asyncio.Protocol):
    """One fake Asterisk channel running ``script`` against the server."""

    def __init__(
        self,
        env: bytes,
        script: Sequence[Step],
        accepted: Sequence[set[bytes]],
        done: asyncio.Future[_Outcome],
        started: float,
    ) -> None:
        self._env = env
        self._script = script
        self._accepted = accepted  # per step: command lines already checked, shared
        self._done = done
        self._started = started
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._step = 0
        self._sent_at = 0.0
        self._outcome = _Outcome()

    # asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._env)
        self._sent_at = time.perf_counter()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self._done.done():
            return
        if self._step >= len(self._script):
            self._fail("after_hangup", f"bytes after the HANGUP reply: {data[:80]!r}")
            return
        buffer = self._buffer + data
        newline = buffer.find(b"\n")
        if newline < 0:
            if len(buffer) > MAX_LINE:
                self._fail("line_too_long", f"command longer than {MAX_LINE} bytes")
            self._buffer = buffer
            return
        if newline != len(buffer) - 1:
            # Asterisk handles one command at a time: the server must wait for each reply.
            self._fail("pipelined", f"command sent before the reply: {buffer[:120]!r}")
            return
        self._buffer = b""
        self._outcome.latencies.append(now - self._sent_at)
        step = self._script[self._step]
        accepted = self._accepted[self._step]
        if buffer not in accepted:
            # A spelling not seen yet: check it once, then accept it by its bytes.
            line = buffer[:-1].rstrip(b"\r").decode("utf-8", "replace")
            problem = check_command(step, line)
            if problem is not None:
                self._fail("wrong_command", f"step {self._step + 1}: {problem}")
                return
            accepted.add(buffer)
        self._step += 1
        assert self._transport is not None
        self._transport.write(step.reply)
        self._sent_at = time.perf_counter()

    def eof_received(self) -> bool:
        now = time.perf_counter()
        if self._done.done():
            return False
        if self._step < len(self._script) or self._buffer:
            want = self._script[self._step].describe() if self._step < len(self._script) else ""
            self._fail("early_eof", f"server closed at step {self._step + 1} (waiting for {want})")
            return False
        self._outcome.close_latency = now - self._sent_at
        self._outcome.duration = now - self._started
        self._done.set_result(self._outcome)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._fail("connection_lost", f"connection lost at step {self._step + 1}: {exc!r}")

    # -------------------------------------------------------------------------------------

    def _fail(self, kind: str, message: str) -> None:
        self._outcome.error_kind = kind
        self._outcome.error = message
        if not self._done.done():
            self._done.set_result(self._outcome)
        if self._transport is not None:
            self._transport.abort()

    def timeout(self) -> None:
        step = self._step + 1
        self._fail("timeout", f"no progress at step {step}: session took too long")


@dataclass
class LoadResult:
    """What one load run measured. Times are in seconds."""

    concurrency: int
    sessions: int = 0  # completed without error
    errors: int = 0
    elapsed: float = 0.0
    command_latencies: list[float] = field(default_factory=list)
    # The same latencies by step: [0] is environment -> ANSWER, the server's accept path.
    step_latencies: list[list[float]] = field(default_factory=list)
    close_latencies: list[float] = field(default_factory=list)
    session_durations: list[float] = field(default_factory=list)
    error_kinds: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)

    @property
    def sessions_per_second(self) -> float:
        return self.sessions / self.elapsed if self.elapsed > 0 else 0.0

    def record_error(self, kind: str, message: str) -> None:
        self.errors += 1
        self.error_kinds[kind] += 1
        if len(self.error_samples) < _ERROR_SAMPLES:
            self.error_samples.append(message)

    def summary(self) -> dict[str, object]:
        """Plain numbers (milliseconds for latencies), for tables and JSON."""
        return {
            "concurrency": self.concurrency,
            "sessions": self.sessions,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed, 3),
            "sessions_per_s": round(self.sessions_per_second, 1),
            "command_p50_ms": _ms(percentile(self.command_latencies, 50)),
            "command_p99_ms": _ms(percentile(self.command_latencies, 99)),
            "command_max_ms": _ms(max(self.command_latencies, default=0.0)),
            "step_p50_ms": [_ms(percentile(step, 50)) for step in self.step_latencies],
            "step_p99_ms": [_ms(percentile(step, 99)) for step in self.step_latencies],
            "close_p50_ms": _ms(percentile(self.close_latencies, 50)),
            "session_p50_ms": _ms(percentile(self.session_durations, 50)),
            "session_p99_ms": _ms(percentile(self.session_durations, 99)),
            "error_kinds": dict(self.error_kinds),
            "error_samples": list(self.error_samples),
        }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats drifting
    return ordered[min(len(ordered), int(rank)) - 1]


async def run_load(
    host: str,
    port: int,
    *,
    concurrency: int,
    max_sessions: int,
    duration: float,
    script_name: str = DEFAULT_SCRIPT_NAME,
    session_timeout: float = 10.0,
) -> LoadResult:
    """Keep ``concurrency`` sessions running until ``max_sessions`` have started or
    ``duration`` seconds have passed, whichever comes first; then wait for those in flight.
    """
    if concurrency < 1 or max_sessions < 1:
        raise ValueError("concurrency and max_sessions must be at least 1")
    loop = asyncio.get_running_loop()
    result = LoadResult(concurrency=concurrency)
    counter = itertools.count()
    epoch = int(time.time())
    begin = time.perf_counter()
    deadline = begin + duration

    async def one_session(
        number: int, script: Sequence[Step], accepted: Sequence[set[bytes]], caller_id: str
    ) -> None:
        env = environment(
            script_name=script_name,
            uniqueid=f"{epoch}.{number}",
            channel_suffix=f"{number:08x}",
            caller_id=caller_id,
            host=host,
        )
        done: asyncio.Future[_Outcome] = loop.create_future()
        started = time.perf_counter()
        protocol = _SessionProtocol(env, script, accepted, done, started)
        watchdog = loop.call_later(session_timeout, protocol.timeout)
        try:
            try:
                await loop.create_connection(lambda: protocol, host, port)
            except OSError as exc:
                result.record_error("connect", f"connect: {exc!r}")
                return
            outcome = await done
        finally:
            watchdog.cancel()
        if outcome.error_kind is not None:
            result.record_error(outcome.error_kind, outcome.error)
            return
        result.sessions += 1
        result.command_latencies.extend(outcome.latencies)
        if not result.step_latencies:
            result.step_latencies = [[] for _ in outcome.latencies]
        for step, latency in zip(result.step_latencies, outcome.latencies, strict=True):
            step.append(latency)
        result.close_latencies.append(outcome.close_latency)
        result.session_durations.append(outcome.duration)

    async def worker(index: int) -> None:
        caller_id = str(1000 + index % 9000)
        script = bench_script(caller_id)
        accepted: list[set[bytes]] = [set() for _ in script]
        while time.perf_counter() < deadline:
            number = next(counter)
            if number >= max_sessions:
                return
            await one_session(number, script, accepted, caller_id)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    result.elapsed = time.perf_counter() - begin
    return result


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fake_asterisk",
        description="Play Asterisk against a running FastAGI server.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4573)
    parser.add_argument("--script", default=DEFAULT_SCRIPT_NAME, help="agi_network_script")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-n", "--sessions", type=int, default=100)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one load level against a server someone else started; print the summary."""
    args = _parse_args(argv)
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(
            run_load(
                args.host,
                args.port,
                concurrency=args.concurrency,
                max_sessions=args.sessions,
                duration=args.duration,
                script_name=args.script,
            )
        )
    for key, value in result.summary().items():
        print(f"{key}: {value}")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
