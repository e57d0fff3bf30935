"""The sans-IO AMI wire format: framing, parsing, action encoding, variable escaping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastagi.ami.errors import AmiProtocolError, AmiValueError
from fastagi.ami.framing import (
    MAX_LINE_BYTES,
    FrameDecoder,
    encode_action,
    encode_variable,
    parse_message,
)
from fastagi.ami.message import Message

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
# Real Asterisk 22 replies (main/manager.c): a Getvar of an empty variable ends with
# "Value: " and its trailing space; an event with a non-ASCII caller name.
TRANSCRIPT = (
    BANNER
    + b"Response: Success\r\nActionID: a-1\r\nMessage: Authentication accepted\r\n\r\n"
    + b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 5\r\nLastReload: 5\r\n"
    + b"Status: Fully Booted\r\n\r\n"
    + b"Response: Success\r\nActionID: a-2\r\nVariable: EMPTY\r\nValue: \r\n\r\n"
    + "Event: Newchannel\r\nCallerIDName: Ren\u00e9e Caf\u00e9\r\n\r\n".encode()
)
EXPECTED = [
    "Response: Success\r\nActionID: a-1\r\nMessage: Authentication accepted",
    "Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 5\r\nLastReload: 5\r\n"
    "Status: Fully Booted",
    "Response: Success\r\nActionID: a-2\r\nVariable: EMPTY\r\nValue: ",
    "Event: Newchannel\r\nCallerIDName: Ren\u00e9e Caf\u00e9",
]


def feed_in_chunks(data: bytes, size: int) -> tuple[FrameDecoder, list[str]]:
    decoder = FrameDecoder()
    out: list[str] = []
    for start in range(0, len(data), size):
        out += decoder.feed(data[start : start + size])
    return decoder, out


def test_transcript_whole() -> None:
    decoder, got = feed_in_chunks(TRANSCRIPT, len(TRANSCRIPT))
    assert got == EXPECTED
    assert decoder.banner == "Asterisk Call Manager/9.0.0"


def test_transcript_one_byte_at_a_time() -> None:
    # Every UTF-8 character and every terminator is split across reads here.
    _, got = feed_in_chunks(TRANSCRIPT, 1)
    assert got == EXPECTED


@given(st.integers(min_value=1, max_value=len(TRANSCRIPT)))
def test_transcript_any_chunk_size(size: int) -> None:
    _, got = feed_in_chunks(TRANSCRIPT, size)
    assert got == EXPECTED


def test_utf8_split_across_reads_stays_intact() -> None:
    decoder = FrameDecoder()
    encoded = "Event: UserEvent\r\nDepartment: Caf\u00e9\r\n\r\n".encode()
    cut = encoded.index(b"\xc3") + 1  # between the two bytes of "é"
    assert decoder.feed(BANNER + encoded[:cut]) == []
    assert decoder.feed(encoded[cut:]) == ["Event: UserEvent\r\nDepartment: Caf\u00e9"]


def test_trailing_partial_message_waits() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(BANNER + b"Event: A\r\n\r\nEvent: B\r\n") == ["Event: A"]
    assert decoder.feed(b"\r\n") == ["Event: B"]


def test_invalid_utf8_is_replaced_not_dropped() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(BANNER + b"Event: X\r\nName: Ren\xe9e\r\n\r\n") == [
        "Event: X\r\nName: Ren\ufffde"
    ]


def test_not_asterisk_is_refused() -> None:
    with pytest.raises(AmiProtocolError):
        FrameDecoder().feed(b"SSH-2.0-OpenSSH_9.2\r\n")


def test_oversized_message_is_refused() -> None:
    decoder = FrameDecoder(max_message_bytes=100)
    decoder.feed(BANNER)
    with pytest.raises(AmiProtocolError):
        decoder.feed(b"Event: X\r\nData: " + b"x" * 200)


def test_parse_message_keeps_order_repeats_and_empty_values() -> None:
    pairs = parse_message("Response: Success\r\nOutput: a\r\nOutput: b: c\r\nValue: ")
    assert pairs == [("Response", "Success"), ("Output", "a"), ("Output", "b: c"), ("Value", "")]
    message = Message(pairs)
    assert message["output"] == "a"
    assert message.get_all("OUTPUT") == ["a", "b: c"]
    assert message.response == "Success"
    assert message.event is None
    assert list(message) == ["Response", "Output", "Value"]


def test_encode_action() -> None:
    data = encode_action([("Action", "Originate"), ("Priority", 1), ("Variable", ["A=1", "B=2"])])
    assert data == b"Action: Originate\r\nPriority: 1\r\nVariable: A=1\r\nVariable: B=2\r\n\r\n"


@pytest.mark.parametrize("bad", ["a\r\nAction: Hangup", "a\nb", "a\rb", "a\x00b"])
def test_encode_action_refuses_line_breaks_and_nul(bad: str) -> None:
    with pytest.raises(AmiValueError) as info:
        encode_action([("Action", "Originate"), ("Channel", bad)])
    assert "Channel" in str(info.value)
    assert bad not in str(info.value)


def test_encode_action_refuses_bad_field_names_and_long_lines() -> None:
    with pytest.raises(AmiValueError):
        encode_action([("Action: x\r\nB", "1")])
    with pytest.raises(AmiValueError):
        encode_action([("Data", "x" * MAX_LINE_BYTES)])


def test_encode_variable_escapes_app_args_separators() -> None:
    # main/app.c __ast_app_separate_args would split on the comma and forge ALARM_ID.
    assert encode_variable("DEPT", "Sales, ALARM_ID=7") == r"DEPT=Sales\, ALARM_ID=7"
    assert encode_variable("X", 'a"b(c)[d]\\e') == r"X=a\"b\(c\)\[d\]\\e"
    assert encode_variable("PJSIP_HEADER(add,Alert-Info)", "x") == (
        "PJSIP_HEADER(add,Alert-Info)=x"
    )


@pytest.mark.parametrize("name", ["", "A=B", "A B", "A\nB", "1A"])
def test_encode_variable_refuses_bad_names(name: str) -> None:
    with pytest.raises(AmiValueError):
        encode_variable(name, "x")


def test_encode_variable_refuses_line_breaks_in_value() -> None:
    with pytest.raises(AmiValueError) as info:
        encode_variable("DEPT", "Sales\r\nAction: Hangup")
    assert "Action: Hangup" not in str(info.value)
