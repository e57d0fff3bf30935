"""The log line format (fastagi/logs.py): what an administrator greps for."""

from __future__ import annotations

import logging
import sys

import pytest

from fastagi.logs import KeyValueFormatter


def formatted(message: str, exc_info: bool = False, **extra: object) -> str:
    record = logging.getLogger("fastagi.test").makeRecord(
        "fastagi.test", logging.INFO, __file__, 1, message, (), None, extra=extra
    )
    if exc_info:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            record.exc_info = sys.exc_info()
    return KeyValueFormatter().format(record)


def test_extras_follow_the_message_sorted_by_key() -> None:
    line = formatted("alarm re-triggered", extension="142", alarm_id=7, activate_ms=3.2)

    assert line.endswith(
        " INFO fastagi.test: alarm re-triggered activate_ms=3.2 alarm_id=7 extension=142"
    )


def test_a_record_without_extras_is_the_plain_line() -> None:
    assert formatted("listening").endswith(" INFO fastagi.test: listening")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("", '""'),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("tab\there", '"tab\there"'),
        ("carriage\rreturn", '"carriage\rreturn"'),
        ("back\\slash", "back\\slash"),
        ('back\\slash "quoted"', '"back\\\\slash \\"quoted\\""'),
        (None, "None"),
        (12.5, "12.5"),
    ],
)
def test_values_are_quoted_where_a_reader_would_split_them(value: object, shown: str) -> None:
    assert formatted("m", key=value).endswith(f" m key={shown}")


def test_private_extras_are_left_out() -> None:
    assert formatted("m", _internal="x", shown="y").endswith(" m shown=y")


def test_the_pairs_stay_on_the_first_line_of_a_traceback() -> None:
    lines = formatted("failed", exc_info=True, alarm_id=3).splitlines()

    assert lines[0].endswith(" failed alarm_id=3")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: boom"
