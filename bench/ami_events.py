"""What an AMI event nobody listens to costs the server: parsed and dropped (as before
the ``AMI: events nobody listens to`` commit) against left unparsed (now).

Every call on the PBX, ours or not, sends the server its ``call`` class events
(``Newchannel``, ``Newstate``, ``Hangup`` ...). This feeds :class:`AmiProtocol` the events of
``--calls`` calls, one event per ``data_received`` as they arrive from Asterisk, once with a
listener for every event (each one parsed into a Message and dispatched: the baseline) and
once with the listeners the server has between pages (the fallback adopter's
``UserEvent``). Both in this process, alternating, ``--repeats`` times; the ratio is
printed, the events' headers are those of an Asterisk 22 channel snapshot.

    python -m bench.ami_events [--calls 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence

from fastagi.ami.message import Message
from fastagi.ami.protocol import AmiProtocol

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
# What the server listens to between pages: the fallback adopter's UserEvent.
BETWEEN_PAGES = frozenset({"userevent"})


def _snapshot(number: int, state: str, state_desc: str) -> list[tuple[str, str]]:
    # main/manager_channels.c ast_manager_build_channel_state_string_prefix: the headers
    # of a channel snapshot, in Asterisk 22's order.
    channel = f"PJSIP/{100 + number % 100}-{number:08x}"
    return [
        ("Privilege", "call,all"),
        ("Channel", channel),
        ("ChannelState", state),
        ("ChannelStateDesc", state_desc),
        ("CallerIDNum", str(100 + number % 100)),
        ("CallerIDName", "Desk phone"),
        ("ConnectedLineNum", "<unknown>"),
        ("ConnectedLineName", "<unknown>"),
        ("Language", "en"),
        ("AccountCode", ""),
        ("Context", "from-internal"),
        ("Exten", "*599"),
        ("Priority", "1"),
        ("Uniqueid", f"1764300000.{number}"),
        ("Linkedid", f"1764300000.{number}"),
    ]


def _wire(event: str, headers: list[tuple[str, str]]) -> bytes:
    return (
        f"Event: {event}\r\n".encode()
        + b"".join(f"{key}: {value}\r\n".encode() for key, value in headers)
        + b"\r\n"
    )


def call_events(calls: int) -> list[bytes]:
    """The ``call`` class events of a short call, ``calls`` times."""
    events: list[bytes] = []
    for number in range(calls):
        events += [
            _wire("Newchannel", _snapshot(number, "4", "Ring")),
            _wire("Newstate", _snapshot(number, "6", "Up")),
            _wire("SoftHangupRequest", [*_snapshot(number, "6", "Up"), ("Cause", "16")]),
            _wire(
                "Hangup",
                [*_snapshot(number, "6", "Up"), ("Cause", "16"), ("Cause-txt", "Normal")],
            ),
        ]
    return events


def _feed(events: Sequence[bytes], wanted: frozenset[str] | None) -> tuple[float, int]:
    """Seconds of CPU to take ``events`` in; and how many reached the listener."""
    delivered = 0

    def on_event(message: Message) -> None:
        nonlocal delivered
        delivered += 1

    protocol = AmiProtocol(on_event, lambda _: None, lambda: wanted)
    protocol.data_received(BANNER)
    started = time.process_time()
    for data in events:
        protocol.data_received(data)
    return time.process_time() - started, delivered


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    events = call_events(args.calls)
    parsed: list[float] = []
    skipped: list[float] = []
    for _ in range(args.repeats):
        seconds, delivered = _feed(events, None)
        if delivered != len(events):
            print(f"only {delivered} of {len(events)} events delivered", file=sys.stderr)
            return 1
        parsed.append(seconds / len(events))
        seconds, delivered = _feed(events, BETWEEN_PAGES)
        if delivered:
            print(f"{delivered} events delivered that nobody listens to", file=sys.stderr)
            return 1
        skipped.append(seconds / len(events))
    ratios = sorted(s / p for s, p in zip(skipped, parsed, strict=True))
    per_call = len(events) // args.calls
    load = os.getloadavg()
    print(
        f"AMI events nobody listens to: {len(events)} events of {args.calls} calls"
        f" ({per_call} a call), {args.repeats} repetitions; load average"
        f" {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(f"  parsed and dispatched (before): {statistics.median(parsed) * 1e6:.2f} us an event")
    print(f"  left unparsed (now): {statistics.median(skipped) * 1e6:.2f} us an event")
    print(
        f"  now/before, repetition by repetition: median {statistics.median(ratios):.3f}"
        f" ({ratios[0]:.3f}-{ratios[-1]:.3f}); saved per call of {per_call} events:"
        f" {(statistics.median(parsed) - statistics.median(skipped)) * per_call * 1e6:.0f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
