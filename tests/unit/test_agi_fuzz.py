"""Property tests: the core never hangs or crashes on any bytes, in any chunking, and the
encoder's output reads back through a port of res_agi.c's parse_args() unchanged."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from fastagi.agi.protocol import (
    MAX_COMMAND_WORDS,
    NEED_DATA,
    AgiConnection,
    ConnectionClosed,
    ConnectionState,
    Event,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    Reply,
    UsageReply,
    _environment_item,
    _environment_items,
    encode_command,
)

# Three times the profile's examples (300 in make test): the parsers face the network.
FUZZ = settings(max_examples=3 * settings().max_examples)

ENV = b"agi_network: yes\nagi_network_script: panic?x=1\nagi_uniqueid: 1.1\n\n"

# Lines that are each valid somewhere, so random sequences of them reach deep states.
PLAUSIBLE_LINES = [
    b"agi_channel: PJSIP/201-00000001",
    b"agi_arg_1: a: b",
    b"",
    b"HANGUP",
    b"200 result=0",
    b"200 result=49 endpos=1600",
    b"200 result= (timeout)",
    b"200 result=12 (timeout)",
    b"200 result=1 (va)lue)",
    b"100 result=0 Trying...",
    b"510 Invalid or unknown command",
    b"511 Command Not Permitted on a dead channel",
    b"520 Invalid command syntax.  Proper usage not available.",
    b"520-Invalid command syntax.  Proper usage follows:",
    b" Usage: ANSWER",
    b"520 End of proper usage.",
    b"200",
    b"\xff\xfe garbage \x80",
    b"x" * 300,
]

line_soup = st.lists(
    st.tuples(st.sampled_from(PLAUSIBLE_LINES), st.sampled_from([b"\n", b"\r\n", b""])),
    max_size=25,
).map(lambda parts: b"".join(line + end for line, end in parts))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def run(chunks: list[bytes], *, max_line_size: int = 8192) -> tuple[list[Event], str | None]:
    """Feed chunks then EOF, keeping one command outstanding whenever the core is idle.

    Returns the events and the name of the protocol error that ended it, if any.  Any
    other exception escapes and fails the test; a loop that does not progress fails the
    event-count bound.
    """
    conn = AgiConnection(max_line_size=max_line_size, max_environment_lines=64)
    total = sum(len(chunk) for chunk in chunks)
    events: list[Event] = []
    try:
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            while True:
                if conn.state is ConnectionState.IDLE:
                    conn.send_command("NOOP")
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                events.append(event)
                # Every event but the last (ConnectionClosed) consumes at least one byte.
                assert len(events) <= total + 1
                if isinstance(event, ConnectionClosed):
                    return events, None
    except ProtocolError as exc:
        return events, type(exc).__name__
    raise AssertionError("EOF was fed but no ConnectionClosed or error came")


@FUZZ
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=20))
def test_arbitrary_bytes_only_ever_raise_protocol_errors(data, cuts):
    run(split(data, cuts), max_line_size=256)


@FUZZ
@given(
    body=line_soup,
    with_env=st.booleans(),
    cuts=st.lists(st.integers(0, 4000), max_size=20),
)
def test_chunking_never_changes_the_outcome(body, with_env, cuts):
    data = (ENV if with_env else b"") + body

    whole = run([data], max_line_size=256)
    chunked = run(split(data, cuts), max_line_size=256)
    byte_by_byte = run([data[i : i + 1] for i in range(len(data))], max_line_size=256)

    assert chunked == whole
    assert byte_by_byte == whole


@FUZZ
@given(body=line_soup)
def test_every_reply_event_is_well_formed(body):
    events, _ = run([ENV + body])

    for event in events:
        if isinstance(event, Reply):
            # 100 "Trying..." is skipped and 520 becomes a UsageReply.
            assert event.code in {200, 510, 511}
            assert "\n" not in event.raw
        if isinstance(event, UsageReply):
            assert all("\n" not in line for line in event.lines)


def parse_args(line: bytes) -> list[bytes]:
    """A line-for-line port of res_agi.c parse_args() (Asterisk 13-22)."""
    argv: list[bytearray] = []
    quoted = escaped = False
    whitespace = True
    for byte in line:
        char = bytes([byte])
        if char == b'"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                argv.append(bytearray())
                whitespace = False
            continue
        if char in (b" ", b"\t") and not quoted and not escaped:
            whitespace = True
            continue
        if char == b"\\" and not escaped:
            escaped = True
            continue
        if whitespace:
            argv.append(bytearray())
            whitespace = False
        argv[-1] += char
        escaped = False
    return [bytes(arg) for arg in argv]


wire_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00"),
    max_size=40,
)


@FUZZ
@given(words=st.lists(wire_text, min_size=1, max_size=12))
def test_encoded_words_read_back_unchanged_through_parse_args(words):
    line = encode_command(*words)

    assert line.endswith(b"\n")
    assert parse_args(line[:-1]) == [word.encode("utf-8") for word in words]


@FUZZ
@given(
    words=st.lists(wire_text, min_size=1, max_size=5),
    bad=st.sampled_from(["\r", "\n", "\x00"]),
    where=st.integers(0, 100),
)
def test_cr_lf_nul_anywhere_is_refused(words, bad, where):
    index = where % len(words)
    word = words[index]
    cut = where % (len(word) + 1)
    words[index] = word[:cut] + bad + word[cut:]

    try:
        encode_command(*words)
    except LocalProtocolError:
        pass
    else:
        raise AssertionError(f"encoded a command containing {bad!r}")


def test_parse_args_port_matches_known_asterisk_behaviour():
    assert parse_args(b'STREAM FILE hello ""') == [b"STREAM", b"FILE", b"hello", b""]
    assert parse_args(b'VERBOSE "a \\"b\\" c" 1') == [b"VERBOSE", b'a "b" c', b"1"]
    assert len(parse_args(b" ".join([b"w"] * MAX_COMMAND_WORDS))) == MAX_COMMAND_WORDS


# Lines an environment may hold, good and bad: names with spaces, tabs and other Unicode
# whitespace, colons without a space, CR at the end or inside, repeated names.
environment_line = st.one_of(
    st.text(alphabet=st.sampled_from("agi_x1: \t\r\u00a0\u2003\u00e9\u0661:"), max_size=12),
    st.builds(
        lambda name, value, cr: f"{name}: {value}" + ("\r" if cr else ""),
        st.sampled_from(["agi_arg_1", "agi_x", "a b", "a\u00a0b", "\u00e9t\u00e9", "1x", "", "x:"]),
        st.text(max_size=8),
        st.booleans(),
    ),
)


@FUZZ
@given(st.lists(environment_line, max_size=8))
def test_the_environments_fast_path_reads_every_line_as_the_general_one(lines):
    # The general reading of a block, line by line, is the reference.
    try:
        expected: dict[str, str] | type[RemoteProtocolError] = dict(map(_environment_item, lines))
    except RemoteProtocolError:
        expected = RemoteProtocolError

    try:
        got: dict[str, str] | type[RemoteProtocolError] = _environment_items(lines)
    except RemoteProtocolError:
        got = RemoteProtocolError

    assert got == expected


def test_no_character_is_both_whitespace_and_part_of_an_identifier():
    # The fast path takes a name that is an identifier as free of whitespace.
    both = [
        hex(code)
        for code in range(0x110000)
        if chr(code).isspace() and ("a" + chr(code)).isidentifier()
    ]

    assert both == []
