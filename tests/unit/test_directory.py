"""The extension directory: parsing mappings, matching, and which mapping wins."""

from __future__ import annotations

import re

import pytest

from fastagi.domain import directory as directory_module
from fastagi.domain.directory import (
    UNKNOWN_DEPARTMENT,
    Department,
    Directory,
    ExtensionPattern,
    PatternKind,
    alarm_key,
    department_name,
)


def department(department_id: int, name: str, interval: int | None = None) -> Department:
    return Department(
        id=department_id,
        name=name,
        paging_group_id=None,
        interval_seconds=interval,
        devices=(f"PJSIP/{200 + department_id}",),
    )


# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical", "kind"),
    [
        ("101", "101", PatternKind.EXACT),
        (" 0042 ", "0042", PatternKind.EXACT),
        ("100-149", "100-149", PatternKind.RANGE),
        ("100 - 149", "100-149", PatternKind.RANGE),
        ("_1XX", "_1XX", PatternKind.PATTERN),
        ("_1xx", "_1XX", PatternKind.PATTERN),
        ("_1-XX", "_1XX", PatternKind.PATTERN),
        ("_1[2-4]X", "_1[2-4]X", PatternKind.PATTERN),
        ("_[0-9]X", "_XX", PatternKind.PATTERN),
        ("_[5]Z", "_5Z", PatternKind.PATTERN),
        ("_[9351]N", "_[1359]N", PatternKind.PATTERN),
        ("_9.", "_9.", PatternKind.PATTERN),
        ("_9!", "_9!", PatternKind.PATTERN),
        ("_.", "_.", PatternKind.PATTERN),
    ],
)
def test_parse_accepts_and_canonicalises(text: str, canonical: str, kind: PatternKind) -> None:
    parsed = ExtensionPattern.parse(text)

    assert parsed.text == canonical
    assert parsed.kind is kind
    assert str(parsed) == canonical
    assert ExtensionPattern.parse(canonical) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("200-100", "malformed extension range '200-100': first is after last"),
        ("10-200", "malformed extension range '10-200': first and last must have the same"),
        ("100-100", "malformed extension range '100-100': first equals last"),
        ("100-", "malformed extension range '100-': last is empty"),
        ("1a0-150", "malformed extension range '1a0-150': first '1a0' is not made of digits"),
        ("abc", "malformed extension 'abc': expected digits (101), a range"),
        ("+4930123", "malformed extension '+4930123'"),
        ("1" * 21, "is longer than 20 digits"),
        ("", "malformed extension pattern '': it is empty"),
        ("_", "malformed extension pattern '_': it matches no digit"),
        ("_1Y", "unexpected 'Y'"),
        ("_1.X", "'.' must come last"),
        ("_1!2", "'!' must come last"),
        ("_1[23", "'[' is not closed by ']'"),
        ("_1[]", "'[]' is empty"),
        ("_1[5-1]", "[5-1] runs backwards"),
        ("_1[a]", "in [...] is not a digit"),
        ("_" + "X" * 21, "longer than 20 digits"),
    ],
)
def test_parse_refuses_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ExtensionPattern.parse(text)


# -- matching and counting -------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "extension", "expected"),
    [
        ("101", "101", True),
        ("101", "1010", False),
        ("100-149", "100", True),
        ("100-149", "149", True),
        ("100-149", "150", False),
        ("100-149", "0120", False),  # another length is another extension
        ("_1XX", "199", True),
        ("_1XX", "1999", False),
        ("_1XX", "99", False),
        ("_Z", "0", False),
        ("_N", "1", False),
        ("_N", "2", True),
        ("_1[2-4]X", "135", True),
        ("_1[2-4]X", "155", False),
        ("_9.", "9", False),
        ("_9.", "91", True),
        ("_9.", "9123456", True),
        ("_9!", "9", True),
        ("_1XX", "1a1", False),
        ("101", "", False),
    ],
)
def test_matches(pattern: str, extension: str, expected: bool) -> None:
    assert ExtensionPattern.parse(pattern).matches(extension) is expected


@pytest.mark.parametrize(
    ("pattern", "length", "count"),
    [
        ("101", 3, 1),
        ("101", 4, 0),
        ("100-149", 3, 50),
        ("_1XX", 3, 100),
        ("_1ZN", 3, 72),
        ("_1[2-4]X", 3, 30),
        ("_9.", 1, 0),
        ("_9.", 3, 100),
        ("_9!", 1, 1),
        ("_9!", 3, 100),
    ],
)
def test_count_of_extensions_of_a_length(pattern: str, length: int, count: int) -> None:
    assert ExtensionPattern.parse(pattern).count(length) == count


# -- the directory ---------------------------------------------------------------------

ER, PHARMACY, RECEPTION, NIGHT = (
    department(1, "Emergency Room", interval=30),
    department(2, "Pharmacy"),
    department(3, "Reception"),
    department(4, "Night Desk"),
)


def directory(*mappings: tuple[Department, str]) -> Directory:
    return Directory.build(
        departments=[ER, PHARMACY, RECEPTION, NIGHT],
        mappings=[(dept.id, text) for dept, text in mappings],
        default_interval_seconds=60,
    )


def test_exact_beats_small_range_beats_big_range_beats_pattern() -> None:
    # Listed least specific first: the order of rows must not matter.
    found = directory(
        (NIGHT, "_1XX"),
        (RECEPTION, "100-199"),
        (PHARMACY, "120-129"),
        (ER, "125"),
    )

    assert found.department_for("125") == ER
    assert found.department_for("121") == PHARMACY
    assert found.department_for("150") == RECEPTION
    assert found.department_for("100") == RECEPTION
    assert found.department_for("1000") is None


def test_a_range_beats_a_narrower_pattern() -> None:
    found = directory((ER, "_12X"), (PHARMACY, "100-199"))

    assert found.department_for("123") == PHARMACY


def test_among_patterns_the_one_matching_fewer_wins() -> None:
    found = directory(
        (NIGHT, "_X."),
        (RECEPTION, "_1XX"),
        (PHARMACY, "_1[2-4]X"),
        (ER, "_12N"),
    )

    assert found.department_for("128") == ER  # 8 extensions
    assert found.department_for("121") == PHARMACY  # 30 (12N does not match 1)
    assert found.department_for("151") == RECEPTION  # 100
    assert found.department_for("251") == NIGHT  # 1000 of length 3
    assert found.department_for("9") is None  # _X. needs a second digit


def test_the_count_depends_on_the_callers_length() -> None:
    # For 3 digits _1. covers 100 extensions and _1ZX 90; for 5 digits _1ZX matches none.
    found = directory((ER, "_1."), (PHARMACY, "_1ZX"))

    assert found.department_for("123") == PHARMACY
    assert found.department_for("12345") == ER


def test_ties_go_to_the_lexically_smaller_text() -> None:
    forward = directory((ER, "_1X5"), (PHARMACY, "_12X"))
    backward = directory((PHARMACY, "_12X"), (ER, "_1X5"))

    assert forward.department_for("125") == PHARMACY
    assert backward.department_for("125") == PHARMACY


def test_lookup_says_which_mapping_decided() -> None:
    found = directory((ER, "100-119"), (RECEPTION, "_1XX"))

    match = found.lookup("105")
    unknown = found.lookup("205")

    assert match is not None
    assert match.department == ER
    assert match.pattern.text == "100-119"
    assert unknown is None


def test_unknown_extension_gets_an_alarm_of_its_own() -> None:
    found = directory((ER, "100-119"))

    dept = found.department_for("555")

    assert dept is None
    assert department_name(dept) == UNKNOWN_DEPARTMENT == "unknown department"
    assert alarm_key(dept, "555") == "extension:555"
    assert alarm_key(ER, "105") == "department:1"
    assert found.interval_for(dept) == 60


def test_intervals_fall_back_to_the_default() -> None:
    found = directory()

    assert found.interval_for(ER) == 30
    assert found.interval_for(PHARMACY) == 60
    assert found.department(2) == PHARMACY
    assert found.department(99) is None


def test_a_mapping_to_a_missing_department_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown department ids \[9\]"):
        Directory.build(departments=[ER], mappings=[(9, "101")])


@pytest.mark.parametrize(
    ("text", "example"),
    [("101", "101"), ("100-149", "100"), ("007-009", "007"), ("_1XX", "100"), ("_[2-4]NX", "220"),
     ("_1.", "10"), ("_1!", "1")],
)  # fmt: skip
def test_a_mapping_gives_an_example_it_matches(text: str, example: str) -> None:
    pattern = ExtensionPattern.parse(text)

    assert pattern.example() == example
    assert pattern.matches(example)


@pytest.mark.parametrize("indexed", [0, 7, 100_000])
def test_indexed_lookup_answers_as_a_scan_of_every_mapping(monkeypatch, indexed):
    """Listing narrow mappings' extensions (and leaving the rest to a scan) changes only the
    speed: every answer is the most specific matching mapping, whatever fits the index."""
    monkeypatch.setattr(directory_module, "INDEXED_EXTENSIONS", indexed)
    texts = ["101", "100-149", "_1XX", "_1[0-2]X", "_1.", "_X!", "120-121", "0100-0109", "_01XX"]
    departments = [Department(n, f"D{n}", None, None) for n in range(1, len(texts) + 1)]
    directory = Directory.build(departments, enumerate(texts, start=1))
    for extension in [
        "101",
        "120",
        "121",
        "149",
        "150",
        "199",
        "1",
        "10",
        "1000",
        "0105",
        "0150",
        "7",
    ]:
        matching = [m for m in directory.mappings if m.pattern.matches(extension)]
        best = min(matching, key=lambda m: m.pattern.specificity(len(extension)))
        match = directory.lookup(extension)
        assert match is not None
        assert match.pattern == best.pattern, extension
