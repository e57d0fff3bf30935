"""The sans-IO FastAGI core, driven by byte transcripts of what Asterisk sends."""

from __future__ import annotations

import pytest

from fastagi.agi.protocol import (
    MAX_COMMAND_WORDS,
    NEED_DATA,
    AgiConnection,
    ConnectionClosed,
    ConnectionState,
    Environment,
    Event,
    HangupNotice,
    LocalProtocolError,
    RemoteProtocolError,
    Reply,
    UsageReply,
    encode_command,
)

# What res_agi.c setup_env() sends for AGI(agi://127.0.0.1:4573/probe?source=dialplan,201)
# (Asterisk 22, PJSIP caller with a name, no account code: note "agi_accountcode: ").
ENV_BYTES = (
    b"agi_network: yes\n"
    b"agi_network_script: probe?source=dialplan\n"
    b"agi_request: agi://127.0.0.1:4573/probe?source=dialplan\n"
    b"agi_channel: PJSIP/201-00000001\n"
    b"agi_language: en\n"
    b"agi_type: PJSIP\n"
    b"agi_uniqueid: 1732546012.1\n"
    b"agi_version: 22.0.0\n"
    b"agi_callerid: 201\n"
    b"agi_calleridname: Reception: Front Desk\n"
    b"agi_callingpres: 0\n"
    b"agi_callingani2: 0\n"
    b"agi_callington: 0\n"
    b"agi_callingtns: 0\n"
    b"agi_dnid: *599\n"
    b"agi_rdnis: unknown\n"
    b"agi_context: fastagi-panic-probe\n"
    b"agi_extension: s\n"
    b"agi_priority: 4\n"
    b"agi_enhanced: 0.0\n"
    b"agi_accountcode: \n"
    b"agi_threadid: 140301418612288\n"
    b"agi_arg_1: 201\n"
    b"\n"
)
ENV_VARIABLES = {
    "agi_network": "yes",
    "agi_network_script": "probe?source=dialplan",
    "agi_request": "agi://127.0.0.1:4573/probe?source=dialplan",
    "agi_channel": "PJSIP/201-00000001",
    "agi_language": "en",
    "agi_type": "PJSIP",
    "agi_uniqueid": "1732546012.1",
    "agi_version": "22.0.0",
    "agi_callerid": "201",
    "agi_calleridname": "Reception: Front Desk",
    "agi_callingpres": "0",
    "agi_callingani2": "0",
    "agi_callington": "0",
    "agi_callingtns": "0",
    "agi_dnid": "*599",
    "agi_rdnis": "unknown",
    "agi_context": "fastagi-panic-probe",
    "agi_extension": "s",
    "agi_priority": "4",
    "agi_enhanced": "0.0",
    "agi_accountcode": "",
    "agi_threadid": "140301418612288",
    "agi_arg_1": "201",
}

USAGE_BYTES = (
    b"520-Invalid command syntax.  Proper usage follows:\n"
    b" Usage: DATABASE GET <family> <key>\n"
    b"\tRetrieves an entry in the Asterisk database for a given family and key.\n"
    b"520 End of proper usage.\n"
)
USAGE_LINES = (
    "Invalid command syntax.  Proper usage follows:",
    " Usage: DATABASE GET <family> <key>",
    "\tRetrieves an entry in the Asterisk database for a given family and key.",
)


def drain(conn: AgiConnection) -> list[Event]:
    """Every event the buffered bytes make, up to NEED_DATA or ConnectionClosed."""
    events: list[Event] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events


def feed(conn: AgiConnection, data: bytes, *, chunk: int | None = None) -> list[Event]:
    """Feed ``data`` whole (chunk None) or in chunks of ``chunk`` bytes; all events."""
    events: list[Event] = []
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        conn.receive_data(data[start : start + step])
        events += drain(conn)
    return events


def idle_connection() -> AgiConnection:
    conn = AgiConnection()
    assert feed(conn, ENV_BYTES) == [Environment(ENV_VARIABLES)]
    return conn


def reply_events(data: bytes, *, chunk: int | None = None) -> list[Event]:
    conn = idle_connection()
    conn.send_command("NOOP")
    return feed(conn, data, chunk=chunk)


# -- the environment block ----------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_environment_whole_and_in_pieces(chunk):
    conn = AgiConnection()

    got = feed(conn, ENV_BYTES, chunk=chunk)

    assert got == [Environment(ENV_VARIABLES)]
    assert conn.state is ConnectionState.IDLE


def test_environment_with_trailing_data_keeps_it_for_the_next_event():
    conn = AgiConnection()

    got = feed(conn, ENV_BYTES + b"HANGUP\n200 res")

    assert got == [Environment(ENV_VARIABLES), HangupNotice()]
    assert conn.trailing_data == b"200 res"


def test_environment_tolerates_crlf():
    conn = AgiConnection()

    got = feed(conn, ENV_BYTES.replace(b"\n", b"\r\n"))

    assert got == [Environment(ENV_VARIABLES)]


def test_environment_splits_on_the_first_colon_space_only():
    conn = AgiConnection()

    got = feed(conn, b"agi_calleridname: a: b: c\nagi_request: agi://h:4573/x\n\n")

    assert got == [Environment({"agi_calleridname": "a: b: c", "agi_request": "agi://h:4573/x"})]


def test_environment_accepts_a_bare_colon_for_an_empty_value():
    conn = AgiConnection()

    got = feed(conn, b"agi_accountcode:\n\n")

    assert got == [Environment({"agi_accountcode": ""})]


def test_environment_decodes_invalid_utf8_with_replacement_characters():
    conn = AgiConnection()

    got = feed(conn, "agi_calleridname: Jos\u00e9 ".encode("latin-1") + b"\xe2\x82\n\n")

    assert got == [Environment({"agi_calleridname": "Jos\ufffd \ufffd"})]


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"no separator\n\n",
        b": value without a name\n\n",
        b"agi name: value\n\n",
        b"agi_x: nul \x00 byte\n\n",
    ],
)
def test_environment_garbage_is_a_remote_protocol_error(data):
    conn = AgiConnection()
    conn.receive_data(data)

    with pytest.raises(RemoteProtocolError):
        drain(conn)
    assert conn.state is ConnectionState.ERROR
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


@pytest.mark.parametrize("cut", [1, 10, len(ENV_BYTES) - 1])
def test_eof_before_the_blank_line_is_a_remote_protocol_error(cut):
    conn = AgiConnection()
    conn.receive_data(ENV_BYTES[:cut])
    assert drain(conn) == []

    conn.receive_data(b"")

    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_eof_before_any_byte_is_a_remote_protocol_error():
    conn = AgiConnection()
    conn.receive_data(b"")

    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_environment_line_too_long_fails_before_its_newline_arrives():
    conn = AgiConnection(max_line_size=100)
    conn.receive_data(b"agi_x: " + b"a" * 94)
    assert drain(conn) == []  # 101 bytes: still room for a "\r"

    conn.receive_data(b"aa")

    with pytest.raises(RemoteProtocolError, match="longer than 100"):
        conn.next_event()


def test_environment_line_at_the_limit_is_accepted_and_one_more_byte_is_not():
    line = b"agi_x: " + b"a" * (8192 - 7)
    assert len(line) == 8192

    assert feed(AgiConnection(), line + b"\n\n") == [Environment({"agi_x": "a" * 8185})]
    with pytest.raises(RemoteProtocolError):
        feed(AgiConnection(), line + b"a\n\n")


def test_default_line_limit_bounds_the_buffer_without_a_newline():
    conn = AgiConnection()
    conn.receive_data(b"x" * 8193)
    assert drain(conn) == []

    conn.receive_data(b"x")

    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_environment_line_count_limit():
    conn = AgiConnection(max_environment_lines=3)

    with pytest.raises(RemoteProtocolError, match="3 lines"):
        feed(conn, b"a: 1\nb: 2\nc: 3\nd: 4\n\n")


def test_environment_line_count_limit_counts_the_blank_line_too():
    assert feed(AgiConnection(max_environment_lines=3), b"a: 1\nb: 2\n\n") == [
        Environment({"a": "1", "b": "2"})
    ]


def test_environment_size_limit():
    conn = AgiConnection(max_environment_size=1000)

    with pytest.raises(RemoteProtocolError, match="1000 bytes"):
        feed(conn, b"".join(b"agi_arg_%d: %s\n" % (n, b"v" * 50) for n in range(1, 30)))


def test_default_environment_limits_accept_128_arguments():
    args = b"".join(b"agi_arg_%d: value %d\n" % (n, n) for n in range(1, 128))

    (event,) = feed(AgiConnection(), ENV_BYTES[:-1] + args + b"\n")

    assert isinstance(event, Environment)
    assert event.variables["agi_arg_127"] == "value 127"


def test_no_command_before_the_environment():
    conn = AgiConnection()

    with pytest.raises(LocalProtocolError):
        conn.send_command("ANSWER")


# -- replies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"200 result=0\n", Reply(200, "0", None, None, False, "200 result=0")),
        (b"200 result=1\r\n", Reply(200, "1", None, None, False, "200 result=1")),
        (
            b"200 result=1 (PJSIP/201-00000001)\n",
            Reply(200, "1", "PJSIP/201-00000001", None, False, "200 result=1 (PJSIP/201-00000001)"),
        ),
        (
            b"200 result=1 (value (with) parens) )\n",
            Reply(
                200,
                "1",
                "value (with) parens) ",
                None,
                False,
                "200 result=1 (value (with) parens) )",
            ),
        ),
        (b"200 result=1 ()\n", Reply(200, "1", "", None, False, "200 result=1 ()")),
        (
            b"200 result=49 endpos=12640\n",
            Reply(200, "49", None, 12640, False, "200 result=49 endpos=12640"),
        ),
        (b"200 result=-1 endpos=0\n", Reply(200, "-1", None, 0, False, "200 result=-1 endpos=0")),
        (
            b"200 result= (timeout)\n",
            Reply(200, "", "timeout", None, True, "200 result= (timeout)"),
        ),
        (
            b"200 result=123 (timeout)\n",
            Reply(200, "123", "timeout", None, True, "200 result=123 (timeout)"),
        ),
        (b"200 result=*12#\n", Reply(200, "*12#", None, None, False, "200 result=*12#")),
        (b"200 result=\n", Reply(200, "", None, None, False, "200 result=")),
        (
            b"200 result=0 (timeout) endpos=16000\n",
            Reply(200, "0", "timeout", 16000, True, "200 result=0 (timeout) endpos=16000"),
        ),
        (
            b"200 result=0 Gosub complete\n",
            Reply(200, "0", None, None, False, "200 result=0 Gosub complete"),
        ),
        (
            b"510 Invalid or unknown command\n",
            Reply(510, "", None, None, False, "510 Invalid or unknown command"),
        ),
        (
            b"511 Command Not Permitted on a dead channel or intercept routine\n",
            Reply(
                511,
                "",
                None,
                None,
                False,
                "511 Command Not Permitted on a dead channel or intercept routine",
            ),
        ),
        (
            b"503 result=-2 Memory allocation failure\n",
            Reply(503, "-2", None, None, False, "503 result=-2 Memory allocation failure"),
        ),
    ],
)
@pytest.mark.parametrize("chunk", [None, 1])
def test_single_line_replies(data, expected, chunk):
    assert reply_events(data, chunk=chunk) == [expected]


def test_trying_line_is_skipped_and_the_real_reply_follows():
    got = reply_events(b"100 result=0 Trying...\n200 result=0 Gosub complete\n")

    assert got == [Reply(200, "0", None, None, False, "200 result=0 Gosub complete")]


def test_single_line_520_is_a_usage_reply():
    got = reply_events(b"520 Invalid command syntax.  Proper usage not available.\n")

    assert got == [UsageReply(("Invalid command syntax.  Proper usage not available.",))]


@pytest.mark.parametrize("chunk", [None, 1, 5])
def test_multi_line_520_is_one_usage_reply(chunk):
    conn = idle_connection()
    conn.send_command("DATABASE", "GET")

    got = feed(conn, USAGE_BYTES + b"HANGUP\n", chunk=chunk)

    assert got == [UsageReply(USAGE_LINES), HangupNotice()]
    assert conn.state is ConnectionState.IDLE


def test_520_terminator_glued_to_the_last_usage_line():
    # Older res_agi.c printed the usage text without its final newline.
    got = reply_events(
        b"520-Invalid command syntax.  Proper usage follows:\n"
        b"Answers channel if not already in answer state.520 End of proper usage.\n"
    )

    assert got == [
        UsageReply(
            (
                "Invalid command syntax.  Proper usage follows:",
                "Answers channel if not already in answer state.",
            )
        )
    ]


def test_usage_reply_line_limit():
    conn = AgiConnection(max_usage_lines=3)
    feed(conn, ENV_BYTES)
    conn.send_command("X")

    with pytest.raises(RemoteProtocolError):
        feed(conn, b"520-a\nb\nc\nd\ne\n")


def test_hangup_notice_before_the_reply_is_not_the_reply():
    conn = idle_connection()
    conn.send_command("STREAM", "FILE", "hello", "")

    got = feed(conn, b"HANGUP\n200 result=-1 endpos=0\n")

    assert got == [HangupNotice(), Reply(200, "-1", None, 0, False, "200 result=-1 endpos=0")]
    assert conn.state is ConnectionState.IDLE


def test_hangup_notice_while_idle_then_511():
    conn = idle_connection()

    assert feed(conn, b"HANGUP\n") == [HangupNotice()]
    conn.send_command("ANSWER")
    assert feed(conn, b"511 Command Not Permitted on a dead channel\n") == [
        Reply(511, "", None, None, False, "511 Command Not Permitted on a dead channel")
    ]


def test_unsolicited_reply_while_idle_is_a_remote_protocol_error():
    conn = idle_connection()

    with pytest.raises(RemoteProtocolError, match="unsolicited"):
        feed(conn, b"200 result=0\n")


@pytest.mark.parametrize(
    "data",
    [
        b"200\n",
        b"200 response=1\n",
        b"2000 result=1\n",
        b"abc result=1\n",
        b"510-continued\n",
        b"hangup\n",
        b"\n",
        b"200 result=1 \x00\n",
    ],
)
def test_malformed_replies_are_remote_protocol_errors(data):
    with pytest.raises(RemoteProtocolError):
        reply_events(data)


def test_reply_line_too_long():
    conn = AgiConnection(max_line_size=64)
    feed(conn, b"a: b\n\n")
    conn.send_command("GET", "VARIABLE", "X")

    with pytest.raises(RemoteProtocolError):
        feed(conn, b"200 result=1 (" + b"x" * 100)


def test_eof_while_idle_is_connection_closed_every_time_after():
    conn = idle_connection()
    conn.receive_data(b"")

    assert conn.next_event() == ConnectionClosed()
    assert conn.next_event() == ConnectionClosed()
    assert conn.state is ConnectionState.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.send_command("NOOP")


def test_eof_while_awaiting_a_reply_is_connection_closed():
    conn = idle_connection()
    conn.send_command("ANSWER")

    assert feed(conn, b"HANGUP\n") == [HangupNotice()]
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()


@pytest.mark.parametrize("data", [b"200 result=", b"520-Invalid\nusage text\n"])
def test_eof_mid_reply_is_a_remote_protocol_error(data):
    conn = idle_connection()
    conn.send_command("ANSWER")
    feed(conn, data)

    conn.receive_data(b"")

    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_receive_data_after_eof_is_refused():
    conn = AgiConnection()
    conn.receive_data(b"")
    conn.receive_data(b"")  # a second EOF is harmless

    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"more")


def test_a_conversation_transcript():
    conn = AgiConnection()
    sent: list[bytes] = []
    got = feed(conn, ENV_BYTES)
    sent.append(conn.send_command("ANSWER"))
    got += feed(conn, b"200 result=0\n")
    sent.append(conn.send_command("GET", "DATA", "enter-pin", "5000", "4"))
    got += feed(conn, b"200 result=12 (timeout)\n")
    sent.append(conn.send_command("SET", "VARIABLE", "FASTAGI_STATUS", "OK"))
    got += feed(conn, b"HANGUP\n200 result=1\n")

    assert sent == [
        b"ANSWER\n",
        b"GET DATA enter-pin 5000 4\n",
        b"SET VARIABLE FASTAGI_STATUS OK\n",
    ]
    assert got == [
        Environment(ENV_VARIABLES),
        Reply(200, "0", None, None, False, "200 result=0"),
        Reply(200, "12", "timeout", None, True, "200 result=12 (timeout)"),
        HangupNotice(),
        Reply(200, "1", None, None, False, "200 result=1"),
    ]


# -- the command encoder --------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("ANSWER",), b"ANSWER\n"),
        (("STREAM", "FILE", "custom/panic-armed", ""), b'STREAM FILE custom/panic-armed ""\n'),
        (("STREAM", "FILE", "hello", "#*0123"), b"STREAM FILE hello #*0123\n"),
        (
            ("VERBOSE", "fastagi: no route for x", "1"),
            b'VERBOSE "fastagi: no route for x" 1\n',
        ),
        (
            ("SET", "VARIABLE", "X", 'say "hi" \\ bye'),
            b'SET VARIABLE X "say \\"hi\\" \\\\ bye"\n',
        ),
        (("SET", "VARIABLE", "X", "tab\there"), b'SET VARIABLE X "tab\there"\n'),
        (("SET", "VARIABLE", "X", "caf\u00e9"), b'SET VARIABLE X "caf\xc3\xa9"\n'),
        (("EXEC", "Dial", "PJSIP/201,30,tT"), b"EXEC Dial PJSIP/201,30,tT\n"),
    ],
)
def test_encoder_quotes_what_parse_args_needs(words, expected):
    assert encode_command(*words) == expected


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "\n", "ends\r"])
def test_encoder_refuses_cr_lf_nul(bad):
    with pytest.raises(LocalProtocolError):
        encode_command("SET", "VARIABLE", "X", bad)


def test_encoder_refuses_a_lone_surrogate():
    with pytest.raises(LocalProtocolError):
        encode_command("VERBOSE", "\udcff")


def test_encoder_word_count_limit():
    assert encode_command(*(["NOOP"] * MAX_COMMAND_WORDS)).count(b"NOOP") == 127

    with pytest.raises(LocalProtocolError):
        encode_command(*(["NOOP"] * (MAX_COMMAND_WORDS + 1)))


def test_encoder_line_size_limit_counts_the_newline():
    fits = "VERBOSE " + "x" * (8192 - len("VERBOSE ") - 1)

    assert len(encode_command(*fits.split(" "))) == 8192
    with pytest.raises(LocalProtocolError, match="8193 bytes"):
        encode_command(*(fits + "x").split(" "))


def test_encoder_refuses_no_words_and_non_strings():
    with pytest.raises(LocalProtocolError):
        encode_command()
    with pytest.raises(LocalProtocolError):
        encode_command("WAIT", "FOR", "DIGIT", 5000)  # type: ignore[arg-type]


def test_only_one_command_may_be_outstanding():
    conn = idle_connection()
    assert conn.send_command("ANSWER") == b"ANSWER\n"

    with pytest.raises(LocalProtocolError, match="already waiting"):
        conn.send_command("ANSWER")

    feed(conn, b"200 result=0\n")
    assert conn.send_command("HANGUP") == b"HANGUP\n"


def test_a_refused_command_does_not_change_the_state():
    conn = idle_connection()

    with pytest.raises(LocalProtocolError):
        conn.send_command("VERBOSE", "two\nlines")

    assert conn.state is ConnectionState.IDLE
    assert conn.send_command("VERBOSE", "one line") == b'VERBOSE "one line"\n'


def test_only_the_cr_of_a_crlf_is_taken_off_a_reply_line():
    # "200 result=1 (x)\r" sent as "...\r\r\n" keeps one CR: it is not the CRLF reply.
    first, second = AgiConnection(), AgiConnection()
    for conn in (first, second):
        conn.receive_data(b"agi_network: yes\n\n")
        assert isinstance(conn.next_event(), Environment)
        conn.send_command("NOOP")
    first.receive_data(b"200 result=1 (x)\r\r\n")
    second.receive_data(b"200 result=1 (x)\r\n")
    assert first.next_event() == Reply(200, "1", "x", None, False, "200 result=1 (x)\r")
    assert second.next_event() == Reply(200, "1", "x", None, False, "200 result=1 (x)")


def test_the_command_size_limit_counts_the_newline():
    assert encode_command("VERBOSE", "hello") == b"VERBOSE hello\n"
    with pytest.raises(LocalProtocolError):
        encode_command("VERBOSE", "hello", max_size=10)
    assert encode_command("VERBOSE", "hello", max_size=14) == b"VERBOSE hello\n"
