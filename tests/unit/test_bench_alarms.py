"""bench/alarms.py's reading of the paging phones' SIPp logs."""

from __future__ import annotations

import datetime as dt

from bench.alarms import page_starts
from fastagi_dev.sandbox.sipp import SipMessage

EPOCH = dt.datetime(2026, 11, 28, 12, 0, 0)


class HeardPhone:
    def __init__(self, ext: int, invites: list[tuple[str, float]]) -> None:
        self.ext = ext
        self._invites = [
            SipMessage(
                time=EPOCH + dt.timedelta(seconds=at),
                received=True,
                text=f'INVITE sip:{ext}@127.0.0.1 SIP/2.0\nFrom: "{name}" <sip:70000@x>;tag=a\n'
                f"Call-ID: {ext}-{at}\n",
            )
            for name, at in invites
        ]

    def received(self, method_or_status: str) -> list[SipMessage]:
        return [m for m in self._invites if m.first_line.startswith(method_or_status)]


def at(seconds: float) -> float:
    return (EPOCH + dt.timedelta(seconds=seconds)).timestamp()


def test_a_page_whose_second_phone_was_dialled_seconds_late_is_one_page() -> None:
    # A saturated Asterisk dialled the second phone of the page at 10 s 6 s after the
    # first: grouping the INVITEs by time (5 s apart) counted it as a page more.
    phones = [
        HeardPhone(200, [("PANIC A", 0.0), ("PANIC A", 10.0), ("PANIC A", 20.0)]),
        HeardPhone(201, [("PANIC A", 0.05), ("PANIC A", 16.0), ("PANIC A", 20.02)]),
    ]

    starts = page_starts(phones)

    assert starts == {"PANIC A": [at(0.0), at(10.0), at(20.0)]}


def test_a_page_starts_at_its_first_phone_and_a_phone_that_missed_one_is_left_out() -> None:
    phones = [
        HeardPhone(200, [("PANIC A", 0.1), ("PANIC A", 10.0), ("PANIC B", 3.0)]),
        HeardPhone(201, [("PANIC A", 0.0), ("PANIC A", 10.2), ("PANIC B", 3.1)]),
        # Heard only B's page: not a phone of A's that heard all of A's.
        HeardPhone(202, [("PANIC B", 2.9)]),
        HeardPhone(203, [("PANIC A", 10.1)]),
    ]

    starts = page_starts(phones)

    assert starts == {"PANIC A": [at(0.0), at(10.0)], "PANIC B": [at(2.9)]}
