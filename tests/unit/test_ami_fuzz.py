"""Property tests of the AMI wire format: the frame decoder never crashes beyond its own
AmiProtocolError, never hangs, never buffers without bound, whatever the bytes and their
chunking; and an encoded action or Originate variable reads back, through ports of
manager.c's line reader and main/app.c's argument splitter, as exactly what was meant."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fastagi.ami.errors import AmiProtocolError, AmiValueError
from fastagi.ami.framing import (
    BANNER_PREFIX,
    MAX_LINE_BYTES,
    FrameDecoder,
    encode_action,
    encode_variable,
    parse_message,
)

# Three times the profile's examples (300 in make test): the parsers face the network.
FUZZ = settings(max_examples=3 * settings().max_examples)
BANNER = BANNER_PREFIX + b"9.0.0\r\n"
SMALL_LIMIT = 4096

PLAUSIBLE = [
    b"Response: Success\r\n",
    b"Event: Newchannel\r\n",
    b"ActionID: a-1\r\n",
    b"Value: \r\n",
    b"CallerIDName: Ren\xc3\xa9e\r\n",
    b"\xc3",
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b": ",
    b"Output: a: b\r\n",
]

chunks = st.lists(st.sampled_from(PLAUSIBLE) | st.binary(max_size=64), max_size=60)


def decode(data: bytes, cuts: list[int]) -> tuple[list[str], bool]:
    """Messages and whether the decoder refused, feeding ``data`` cut at ``cuts``."""
    decoder = FrameDecoder(max_message_bytes=SMALL_LIMIT)
    out: list[str] = []
    start = 0
    try:
        for cut in [*sorted(set(cuts)), len(data)]:
            out += decoder.feed(data[start:cut])
            start = cut
    except AmiProtocolError:
        return out, True
    return out, False


@FUZZ
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=20))
def test_arbitrary_bytes_only_ever_raise_ami_protocol_error(data, cuts):
    messages, _ = decode(data, [c for c in cuts if c <= len(data)])
    for message in messages:
        assert isinstance(message, str)
        parse_message(message)  # never raises


@FUZZ
@given(chunks, st.lists(st.integers(0, 4000), max_size=30))
def test_chunking_never_changes_the_messages(parts, cuts):
    data = BANNER + b"".join(parts)
    cuts = [c for c in cuts if c <= len(data)]
    whole, whole_failed = decode(data, [])
    chunked, chunked_failed = decode(data, cuts)
    if not (whole_failed or chunked_failed):
        assert chunked == whole
    for message in whole + chunked:
        assert "\r\n\r\n" not in message
        for key, _value in parse_message(message):
            assert "\r\n" not in key


@FUZZ
@given(st.integers(1, 50), st.integers(1, 400))
def test_a_message_that_never_ends_is_refused_not_buffered(step, size):
    decoder = FrameDecoder(max_message_bytes=SMALL_LIMIT)
    decoder.feed(BANNER)
    fed = 0
    try:
        while fed < SMALL_LIMIT * 3:
            decoder.feed(b"X" * size + b"\r\n" * (step % 2))
            fed += size + 2 * (step % 2)
    except AmiProtocolError:
        return
    raise AssertionError("a message larger than the limit was buffered")


def manager_lines(data: bytes) -> list[bytes]:
    """main/manager.c get_input(): a line ends at CRLF or at a bare LF."""
    return data.replace(b"\r\n", b"\n").split(b"\n")


def separate_args(text: str) -> list[str]:
    """main/app.c __ast_app_separate_args(delim=',', remove_chars=1), which
    man_do_variable_value runs on every Originate ``Variable`` header."""
    args: list[str] = []
    i = 0
    while i < len(text):
        out: list[str] = []
        paren = bracket = 0
        quote = False
        while i < len(text):
            char = text[i]
            i += 1
            if char == "(":
                paren += 1
            elif char == ")":
                paren = max(paren - 1, 0)
            elif char == "[":
                bracket += 1
            elif char == "]":
                bracket = max(bracket - 1, 0)
            elif char == '"':
                quote = not quote
                continue
            elif char == "\\":
                if i < len(text):
                    out.append(text[i])
                    i += 1
                continue
            elif char == "," and not (paren or quote or bracket):
                break
            out.append(char)
        args.append("".join(out))
    return args


HOSTILE = st.sampled_from(
    [
        'Ward "7"\\ ; DROP TABLE alarms;--',
        "x\nEXEC Dial PJSIP/999",
        "Sales, ALARM_ID=7",
        "Notaufnahme S\u00fcd",
        "${SHELL(id)}",
        "Action: Originate\r\n",
        "a(b,c)d",
        "[x,y]",
        "\\",
        '"',
        ",",
    ]
)


@FUZZ
@given(st.lists(HOSTILE | st.text(max_size=40), min_size=1, max_size=4).map("".join))
def test_an_originate_variable_reads_back_as_one_literal_value(value):
    try:
        header = encode_variable("PANIC_CALLER_NAME", value)
        data = encode_action([("Action", "Originate"), ("Variable", header)])
    except AmiValueError:
        assert (
            any(char in value for char in "\r\n\x00") or len(value.encode()) > MAX_LINE_BYTES // 2
        )
        return
    lines = manager_lines(data)
    # Two header lines and the blank line that ends the action: nothing was injected.
    assert lines == [b"Action: Originate", b"Variable: " + header.encode(), b"", b""]
    assert separate_args(header) == [f"PANIC_CALLER_NAME={value}"]


@FUZZ
@given(st.text(max_size=200))
def test_any_text_is_one_header_or_refused(value):
    try:
        data = encode_action([("Action", "UserEvent"), ("Data", value)])
    except AmiValueError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert value not in message  # the value may be the secret
        return
    assert manager_lines(data) == [b"Action: UserEvent", b"Data: " + value.encode(), b"", b""]
