"""PIN validation, hashing and verification; and the history events' PIN guard."""

from __future__ import annotations

import base64
import json
import time
from uuid import UUID

import pytest

from fastagi.domain import pins
from fastagi.domain.events import EventKind, HistoryEvent


@pytest.fixture(scope="module")
def stored() -> str:
    return pins.hash_pin("482913")


def test_a_hash_verifies_its_pin_only(stored: str) -> None:
    assert pins.verify_pin("482913", stored)
    assert not pins.verify_pin("482914", stored)
    assert not pins.verify_pin("48291", stored)
    assert not pins.verify_pin("", stored)
    assert not pins.verify_pin("48291\uff13", stored)  # a non-ASCII digit


def test_the_hash_carries_its_parameters_and_never_the_pin(stored: str) -> None:
    scheme, n, r, p, salt, digest = stored.split("$")

    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**14, 8, 1)
    assert len(base64.b64decode(salt)) == pins.SALT_BYTES
    assert len(base64.b64decode(digest)) == pins.HASH_BYTES
    assert "482913" not in stored
    assert pins.is_pin_hash(stored)


def test_two_hashes_of_one_pin_differ_by_their_salt() -> None:
    first, second = pins.hash_pin("1234"), pins.hash_pin("1234")

    assert first != second
    assert pins.verify_pin("1234", first)
    assert pins.verify_pin("1234", second)


def test_a_tampered_hash_verifies_nothing(stored: str) -> None:
    head, _, digest = stored.rpartition("$")
    raw = bytearray(base64.b64decode(digest))
    raw[0] ^= 1
    flipped = f"{head}${base64.b64encode(bytes(raw)).decode()}"
    scheme, n, r, p, salt, digest = stored.split("$")
    other_salt = "$".join([scheme, n, r, p, base64.b64encode(b"x" * 16).decode(), digest])
    cheaper = "$".join([scheme, str(2**10), r, p, salt, digest])

    assert not pins.verify_pin("482913", flipped)
    assert not pins.verify_pin("482913", other_salt)
    assert not pins.verify_pin("482913", cheaper)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "482913",
        "bcrypt$14$8$1$c2FsdA==$aGFzaA==",
        "scrypt$16384$8$1$not base64$aGFzaA==",
        "scrypt$16383$8$1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==",  # n not a power of 2
        "scrypt$1048576$64$1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==",  # 8 GiB: refused
        "scrypt$16384$8$1$c2FsdHNhbHQ=",
    ],
)
def test_a_malformed_hash_verifies_nothing_and_raises_nothing(garbage: str) -> None:
    assert not pins.verify_pin("482913", garbage)
    assert not pins.is_pin_hash(garbage)


@pytest.mark.parametrize(
    ("pin", "message"),
    [
        ("123", "PIN too short: at least 4 digits"),
        ("", "PIN too short: at least 4 digits"),
        ("1234567890123", "PIN too long: at most 12 digits"),
        ("12a4", "PIN must be made of digits only"),
        ("12 34", "PIN must be made of digits only"),
        ("\uff11\uff12\uff13\uff14", "PIN must be made of digits only"),
    ],
)
def test_validation(pin: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        pins.validate_pin(pin)
    with pytest.raises(ValueError, match=f"^{message}$"):
        pins.hash_pin(pin)


def test_the_boundaries_are_valid() -> None:
    pins.validate_pin("0000")
    pins.validate_pin("012345678901")


def test_hashing_is_slow_on_purpose() -> None:
    started = time.perf_counter()
    pins.hash_pin("1234")
    elapsed = time.perf_counter() - started

    assert elapsed > 0.01  # scrypt with 16 MiB: tens of milliseconds, never instant


def test_the_dummy_hash_is_well_formed() -> None:
    assert pins.is_pin_hash(pins._DUMMY_HASH)


async def test_async_wrappers_run_off_the_loop(stored: str) -> None:
    made = await pins.hash_pin_async("9876")

    assert await pins.verify_pin_async("9876", made)
    assert not await pins.verify_pin_async("9875", made)
    assert await pins.verify_pin_async("482913", stored)
    assert not await pins.verify_pin_async("482913", None)


# -- history events must not carry a PIN -----------------------------------------------------


@pytest.mark.parametrize(
    "details",
    [
        {"pin": "1234"},
        {"PIN": "1234"},
        {"entered_pin": "1234"},
        {"attempt": {"Pin": "1234"}},
        {"attempts": [{"pin_digits": "1234"}]},
        {"attempts": ({"note": "x"}, {"Entered PIN": "1234"})},
        {"deep": [[{"a": {"b": [{"pin": 1}]}}]]},
        {1: {"pin": "1234"}},
    ],
)
def test_an_event_refuses_a_pin_in_its_details(details: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must not hold a PIN"):
        HistoryEvent(EventKind.DEACTIVATION_FAILED, 1, "150", "ER", details)


@pytest.mark.parametrize(
    "details",
    [
        {"route": "panic", "known_extension": True, "prompts": 2, "ms": 1.5, "error": None},
        {"devices": ("PJSIP/201",), "n": 1},
        {"kind": EventKind.ACTIVATED, 7: "seven"},
        {},
    ],
)
def test_an_event_holds_its_details_as_json_reads_them_back(details: dict[object, object]) -> None:
    event = HistoryEvent(EventKind.PAGE_CYCLE, 1, "101", "ER", details)  # type: ignore[arg-type]

    plain = json.loads(json.dumps(details))
    assert dict(event.details) == plain
    assert [type(value) for value in event.details.values()] == [type(v) for v in plain.values()]
    assert json.loads(event.details_json) == plain


def test_an_event_refuses_details_that_are_not_json() -> None:
    with pytest.raises(ValueError, match="must be JSON"):
        HistoryEvent(EventKind.ERROR, None, None, None, {"when": object()})
    with pytest.raises(ValueError, match="must be JSON"):
        HistoryEvent(EventKind.ERROR, None, None, None, {"ratio": float("nan")})


def test_an_event_is_json_and_round_trips() -> None:
    event = HistoryEvent("page_cycle", None, "101", "ER", {"devices": ("PJSIP/201",), "n": 1})  # type: ignore[arg-type]

    again = HistoryEvent.from_dict(event.to_dict())
    bound = event.with_alarm(7)

    assert event.kind is EventKind.PAGE_CYCLE
    assert dict(event.details) == {"devices": ["PJSIP/201"], "n": 1}
    assert again == event
    assert isinstance(event.event_id, UUID)
    assert event.occurred_at.tzinfo is not None
    assert (bound.alarm_id, bound.event_id) == (7, event.event_id)
    assert bound == HistoryEvent(
        EventKind.PAGE_CYCLE,
        7,
        "101",
        "ER",
        {"devices": ["PJSIP/201"], "n": 1},
        event_id=event.event_id,
        occurred_at=event.occurred_at,
    )
    assert bound.details_json == event.details_json
    assert event.alarm_id is None  # a copy, not a change


def test_an_event_of_another_kind_is_the_same_event() -> None:
    activated = HistoryEvent(EventKind.ACTIVATED, None, "101", "ER", {"uniqueid": "1.2"})

    retriggered = activated.with_kind(EventKind.RETRIGGERED)

    assert retriggered.kind is EventKind.RETRIGGERED
    assert activated.kind is EventKind.ACTIVATED
    assert (retriggered.event_id, retriggered.occurred_at) == (
        activated.event_id,
        activated.occurred_at,
    )
    assert retriggered.details == activated.details
    assert retriggered.details_json == activated.details_json


def test_an_event_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(ValueError, match="event details must be JSON"):
        HistoryEvent(EventKind.ERROR, None, None, None, {"when": object()})
    with pytest.raises(ValueError, match="not a valid EventKind"):
        HistoryEvent("exploded", None, None, None, {})  # type: ignore[arg-type]
