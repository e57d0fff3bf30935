"""AgiSession as AgiServer serves it, against a scripted Asterisk on loopback TCP.

The session a test drives is the one the server built for the connection: replies reach
it through the server's ``data_received`` (the push path production uses).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from fastagi.agi.errors import (
    AgiCommandFailure,
    AgiDeadChannel,
    AgiHangup,
    AgiInvalidCommand,
    AgiProtocolError,
    AgiTimeout,
    AgiUsageError,
)
from fastagi.agi.session import AgiEnvironment, AgiSession, DigitsResult
from tests.scripted_asterisk import STALL
from tests.scripted_asterisk import ScriptedAsterisk as _Scripted

ENV_BYTES = (
    b"agi_network: yes\n"
    b"agi_network_script: probe?source=dialplan&empty=\n"
    b"agi_request: agi://127.0.0.1:4573/probe?source=dialplan&empty=\n"
    b"agi_channel: PJSIP/201-00000001\n"
    b"agi_language: de\n"
    b"agi_type: PJSIP\n"
    b"agi_uniqueid: 1732546012.1\n"
    b"agi_version: 22.0.0\n"
    b"agi_callerid: 201\n"
    b"agi_calleridname: Reception\n"
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
    b"agi_arg_2: two words\n"
    b"\n"
)


class ScriptedAsterisk(_Scripted):
    """Asterisk calling the probe route; when the script runs out, it closes its side."""

    def __init__(self, *replies: bytes | None, greeting: bytes = ENV_BYTES) -> None:
        super().__init__(*replies, greeting=greeting)


@pytest.fixture
async def accepted() -> AsyncIterator[Callable[..., Awaitable[AgiSession]]]:
    """``await accepted(asterisk)``: the session AgiServer built for the scripted call,
    handed to the test body; the call ends (the server closes it) after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def accept(
            asterisk: ScriptedAsterisk,
            *,
            environment_timeout: float | None = None,
            reply_timeout: float | None = None,
        ) -> AgiSession:
            settings = {
                name: value
                for name, value in [
                    ("environment_timeout", environment_timeout),
                    ("reply_timeout", reply_timeout),
                ]
                if value is not None
            }
            return await stack.enter_async_context(asterisk.session(**settings))

        yield accept


@pytest.fixture
def agi_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="fastagi")
    return caplog


async def never_called(session: AgiSession) -> None:
    raise AssertionError("the flow ran without a complete environment")


def closing_error(caplog: pytest.LogCaptureFixture) -> BaseException:
    """The error the server closed a connection with before its flow could run."""
    (record,) = [r for r in caplog.records if r.getMessage().startswith("closing connection:")]
    assert record.levelno == logging.WARNING
    (error,) = record.args  # type: ignore[misc]
    assert isinstance(error, BaseException)
    return error


# -- the environment ----------------------------------------------------------------


async def test_environment_of_a_real_call(accepted):
    asterisk = ScriptedAsterisk()
    session = await accepted(asterisk)
    env = session.environment

    assert env.script == "probe"
    assert dict(env.query) == {"source": "dialplan", "empty": ""}
    assert env.args == ("201", "two words")
    assert env.uniqueid == "1732546012.1"
    assert env.channel == "PJSIP/201-00000001"
    assert env.callerid == "201"
    assert env.calleridname == "Reception"
    assert env.context == "fastagi-panic-probe"
    assert env.extension == "s"
    assert env.language == "de"
    assert env.variables["agi_accountcode"] == ""
    assert session.peer == asterisk.address  # the client's host:port, as the server saw it
    assert asterisk.address.startswith("127.0.0.1:")
    assert session.hung_up is False


def test_environment_args_are_in_numeric_order():
    env = AgiEnvironment.from_variables(
        {"agi_arg_10": "ten", "agi_arg_2": "two", "agi_arg_1": "one", "agi_arg_x": "no"}
    )

    assert env.args == ("one", "two", "ten")


@pytest.mark.parametrize(
    ("network_script", "script", "query"),
    [
        ("panic", "panic", {}),
        ("/panic?", "panic", {}),
        ("flows/deactivate?pin=1&pin=2&x", "flows/deactivate", {"pin": "2", "x": ""}),
        ("?only=query", "", {"only": "query"}),
    ],
)
def test_environment_script_and_query(network_script, script, query):
    env = AgiEnvironment.from_variables({"agi_network_script": network_script})

    assert env.script == script
    assert dict(env.query) == query


def test_environment_without_a_script_routes_as_empty():
    env = AgiEnvironment.from_variables({"agi_network": "yes"})

    assert env.script == ""
    assert dict(env.query) == {}
    assert env.args == ()


@pytest.mark.parametrize("value", ["unknown", ""])
def test_missing_caller_id_is_none(value):
    env = AgiEnvironment.from_variables({"agi_callerid": value, "agi_calleridname": value})

    assert env.callerid is None
    assert env.calleridname is None


def test_environment_is_immutable():
    env = AgiEnvironment.from_variables({"agi_network_script": "panic"})

    with pytest.raises(dataclasses.FrozenInstanceError):
        env.script = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        env.variables["agi_network_script"] = "other"  # type: ignore[index]


async def test_accept_keeps_bytes_that_follow_the_environment(accepted):
    asterisk = ScriptedAsterisk(b"200 result=1\n", greeting=ENV_BYTES + b"HANGUP\n")
    session = await accepted(asterisk)

    await session.set_variable("A", "b")

    assert session.hung_up is True
    assert asterisk.sent == [b"SET VARIABLE A b\n"]


async def test_accept_eof_mid_environment_is_a_protocol_error(agi_logs):
    asterisk = ScriptedAsterisk(greeting=ENV_BYTES[:100])
    asterisk.feed(b"")

    await asterisk.run(never_called)  # returns once the server has closed the connection

    error = closing_error(agi_logs)
    assert isinstance(error, AgiProtocolError)
    assert error.local is False
    assert asterisk.sent == []


async def test_accept_times_out_on_a_staller(agi_logs):
    asterisk = ScriptedAsterisk(greeting=b"agi_network: yes\n")

    await asterisk.run(never_called, environment_timeout=0.05)

    assert isinstance(closing_error(agi_logs), AgiTimeout)
    assert asterisk.sent == []


# -- typed commands -------------------------------------------------------------------


async def test_answer(accepted):
    asterisk = ScriptedAsterisk(b"200 result=0\n")
    session = await accepted(asterisk)

    await session.answer()

    assert asterisk.sent == [b"ANSWER\n"]


async def test_answer_failure_is_a_hangup(accepted):
    session = await accepted(ScriptedAsterisk(b"200 result=-1\n"))

    with pytest.raises(AgiHangup):
        await session.answer()
    assert session.hung_up is True


@pytest.mark.parametrize(
    ("reply", "expected"),
    [(b"200 result=0 endpos=16000\n", None), (b"200 result=50 endpos=4000\n", "2")],
)
async def test_stream_file(reply, expected, accepted):
    asterisk = ScriptedAsterisk(reply)
    session = await accepted(asterisk)

    got = await session.stream_file("custom/panic-menu", "123")

    assert got == expected
    assert asterisk.sent == [b"STREAM FILE custom/panic-menu 123\n"]


async def test_stream_file_without_escape_digits_sends_an_empty_argument(accepted):
    asterisk = ScriptedAsterisk(b"200 result=0 endpos=100\n")
    session = await accepted(asterisk)

    await session.stream_file("beep")

    assert asterisk.sent == [b'STREAM FILE beep ""\n']


async def test_stream_file_minus_one_is_a_hangup(accepted):
    session = await accepted(ScriptedAsterisk(b"200 result=-1 endpos=0\n"))

    with pytest.raises(AgiHangup):
        await session.stream_file("custom/missing")
    assert session.hung_up is True


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"200 result=1234\n", DigitsResult("1234", False)),
        (b"200 result=12 (timeout)\n", DigitsResult("12", True)),
        (b"200 result= (timeout)\n", DigitsResult("", True)),
        (b"200 result=*#\n", DigitsResult("*#", False)),
    ],
)
async def test_get_data(reply, expected, accepted):
    asterisk = ScriptedAsterisk(reply)
    session = await accepted(asterisk)

    got = await session.get_data("custom/enter-pin", timeout_ms=5000, max_digits=4)

    assert got == expected
    assert asterisk.sent == [b"GET DATA custom/enter-pin 5000 4\n"]


async def test_get_data_optional_arguments(accepted):
    asterisk = ScriptedAsterisk(b"200 result=1\n", b"200 result=1\n", b"200 result=1\n")
    session = await accepted(asterisk)

    await session.get_data("p")
    await session.get_data("p", max_digits=4)
    await session.get_data("p", timeout_ms=3000)

    assert asterisk.sent == [b"GET DATA p\n", b"GET DATA p 0 4\n", b"GET DATA p 3000\n"]


async def test_get_data_minus_one_is_a_hangup(accepted):
    session = await accepted(ScriptedAsterisk(b"200 result=-1\n"))

    with pytest.raises(AgiHangup):
        await session.get_data("p", 1000, 4)


@pytest.mark.parametrize(
    ("reply", "expected"), [(b"200 result=0\n", None), (b"200 result=35\n", "#")]
)
async def test_wait_for_digit(reply, expected, accepted):
    asterisk = ScriptedAsterisk(reply)
    session = await accepted(asterisk)

    assert await session.wait_for_digit(3000) == expected
    assert asterisk.sent == [b"WAIT FOR DIGIT 3000\n"]


async def test_wait_for_digit_minus_one_is_a_hangup(accepted):
    session = await accepted(ScriptedAsterisk(b"200 result=-1\n"))

    with pytest.raises(AgiHangup):
        await session.wait_for_digit(-1)


async def test_say_digits(accepted):
    asterisk = ScriptedAsterisk(b"200 result=0\n", b"200 result=57\n")
    session = await accepted(asterisk)

    assert await session.say_digits("1234") is None
    assert await session.say_digits("5678", "9") == "9"
    assert asterisk.sent == [b'SAY DIGITS 1234 ""\n', b"SAY DIGITS 5678 9\n"]


async def test_exec_joins_application_arguments_into_one_word(accepted):
    asterisk = ScriptedAsterisk(b"200 result=0\n", b"200 result=0\n")
    session = await accepted(asterisk)

    assert await session.exec("Dial", "PJSIP/201", "30", "tT") == 0
    assert await session.exec("Wait", "1") == 0
    assert asterisk.sent == [b"EXEC Dial PJSIP/201,30,tT\n", b"EXEC Wait 1\n"]


async def test_exec_of_a_missing_application_fails(accepted):
    session = await accepted(ScriptedAsterisk(b"200 result=-2\n"))

    with pytest.raises(AgiCommandFailure) as info:
        await session.exec("NoSuchApp")
    assert info.value.reply.result == "-2"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"200 result=1 (PJSIP/201-00000001)\n", "PJSIP/201-00000001"),
        (b"200 result=1 (a (b) c)\n", "a (b) c"),
        (b"200 result=1 ()\n", ""),
        (b"200 result=0\n", None),
    ],
)
async def test_get_variable(reply, expected, accepted):
    asterisk = ScriptedAsterisk(reply)
    session = await accepted(asterisk)

    assert await session.get_variable("CHANNEL(name)") == expected
    assert asterisk.sent == [b"GET VARIABLE CHANNEL(name)\n"]


async def test_set_variable_verbose_hangup(accepted):
    asterisk = ScriptedAsterisk(b"200 result=1\n", b"200 result=1\n", b"200 result=1\n")
    session = await accepted(asterisk)

    await session.set_variable("FASTAGI_STATUS", "two words")
    await session.verbose("hello there", level=3)
    await session.hangup()

    assert asterisk.sent == [
        b'SET VARIABLE FASTAGI_STATUS "two words"\n',
        b'VERBOSE "hello there" 3\n',
        b"HANGUP\n",
    ]
    assert session.hung_up is True


# -- out-of-band HANGUP, dead channels, errors ---------------------------------------


async def test_hangup_notice_before_the_reply_is_not_taken_for_the_reply(accepted):
    asterisk = ScriptedAsterisk(b"HANGUP\n200 result=1 (yes)\n")
    session = await accepted(asterisk)

    got = await session.get_variable("X")

    assert got == "yes"
    assert session.hung_up is True


async def test_511_after_hangup_then_dead_channel_commands_still_work(accepted):
    asterisk = ScriptedAsterisk(
        b"HANGUP\n511 Command Not Permitted on a dead channel or intercept routine\n",
        b"200 result=1\n",
    )
    session = await accepted(asterisk)

    with pytest.raises(AgiDeadChannel) as info:
        await session.stream_file("custom/panic-armed")
    assert isinstance(info.value, AgiHangup)
    assert session.hung_up is True

    await session.set_variable("FASTAGI_STATUS", "HANGUP")
    assert asterisk.sent == [
        b'STREAM FILE custom/panic-armed ""\n',
        b"SET VARIABLE FASTAGI_STATUS HANGUP\n",
    ]


async def test_510_is_an_invalid_command(accepted):
    session = await accepted(ScriptedAsterisk(b"510 Invalid or unknown command\n"))

    with pytest.raises(AgiInvalidCommand):
        await session.command("FROB")


async def test_520_is_a_usage_error_with_the_usage_text(accepted):
    session = await accepted(
        ScriptedAsterisk(
            b"520-Invalid command syntax.  Proper usage follows:\n"
            b" Usage: WAIT FOR DIGIT <timeout>\n"
            b"520 End of proper usage.\n"
        )
    )

    with pytest.raises(AgiUsageError) as info:
        await session.command("WAIT", "FOR", "DIGIT")
    assert info.value.usage == (
        "Invalid command syntax.  Proper usage follows:\n Usage: WAIT FOR DIGIT <timeout>"
    )


async def test_trying_then_reply(accepted):
    session = await accepted(
        ScriptedAsterisk(b"100 result=0 Trying...\n200 result=0 Gosub complete\n")
    )

    reply = await session.command("GOSUB", "sub", "s", "1")

    assert (reply.code, reply.result) == (200, "0")


async def test_other_codes_are_command_failures(accepted):
    session = await accepted(ScriptedAsterisk(b"503 result=-2 Memory allocation failure\n"))

    with pytest.raises(AgiCommandFailure) as info:
        await session.command("GOSUB", "x", "s", "1")
    assert info.value.reply.code == 503


async def test_eof_while_waiting_is_a_hangup_and_the_session_is_over(accepted):
    asterisk = ScriptedAsterisk(b"")
    session = await accepted(asterisk)

    with pytest.raises(AgiHangup):
        await session.answer()
    with pytest.raises(AgiHangup):
        await session.verbose("after EOF")

    assert asterisk.sent == [b"ANSWER\n"]
    assert session.hung_up is True
    assert session.usable is False


async def test_reply_timeout_leaves_the_session_unusable(accepted):
    asterisk = ScriptedAsterisk(STALL, b"200 result=1\n")
    session = await accepted(asterisk, reply_timeout=0.05)

    with pytest.raises(AgiTimeout):
        await session.answer()
    with pytest.raises(AgiProtocolError):
        await session.verbose("late")

    assert asterisk.sent == [b"ANSWER\n"]
    assert session.usable is False


async def test_garbage_reply_is_a_remote_protocol_error(accepted):
    session = await accepted(ScriptedAsterisk(b"HTTP/1.1 400 Bad Request\n"))

    with pytest.raises(AgiProtocolError) as info:
        await session.answer()
    assert info.value.local is False
    assert session.usable is False


async def test_unsendable_argument_is_a_local_error_and_the_session_stays_usable(accepted):
    asterisk = ScriptedAsterisk(b"200 result=1\n")
    session = await accepted(asterisk)

    with pytest.raises(AgiProtocolError) as info:
        await session.set_variable("X", "two\nlines")
    assert info.value.local is True

    await session.set_variable("X", "one line")
    assert asterisk.sent == [b'SET VARIABLE X "one line"\n']


async def test_concurrent_commands_run_one_at_a_time(accepted):
    asterisk = ScriptedAsterisk(b"200 result=0\n", b"200 result=1 (v)\n", b"200 result=1\n")
    session = await accepted(asterisk)

    results = await asyncio.gather(
        session.answer(), session.get_variable("A"), session.set_variable("B", "c")
    )

    assert list(results) == [None, "v", None]
    assert asterisk.sent == [b"ANSWER\n", b"GET VARIABLE A\n", b"SET VARIABLE B c\n"]


async def test_cancelled_command_leaves_the_session_unusable(accepted):
    asterisk = ScriptedAsterisk(STALL)
    session = await accepted(asterisk)
    task = asyncio.create_task(session.answer())
    await asterisk.something_sent.wait()  # ANSWER is on the wire

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert session.usable is False
    with pytest.raises(AgiProtocolError):
        await session.verbose("after cancel")


async def test_a_command_cancelled_while_queued_gives_up_its_turn(accepted):
    asterisk = ScriptedAsterisk(b"200 result=0\n", b"200 result=1\n")
    session = await accepted(asterisk)
    first = asyncio.create_task(session.answer())
    queued = asyncio.create_task(session.verbose("queued"))
    last = asyncio.create_task(session.set_variable("A", "b"))
    await asterisk.something_sent.wait()  # ANSWER is on the wire, the other two wait
    queued.cancel()

    await first
    await last
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert asterisk.sent == [b"ANSWER\n", b"SET VARIABLE A b\n"]
    assert session.usable is True


async def test_a_command_cancelled_once_handed_its_turn_passes_it_on(accepted):
    asterisk = ScriptedAsterisk(b"200 result=0\n", b"200 result=1\n")
    session = await accepted(asterisk)
    first = asyncio.create_task(session.answer())
    handed = asyncio.create_task(session.verbose("handed"))
    last = asyncio.create_task(session.set_variable("A", "b"))
    await asterisk.something_sent.wait()
    # Polled, not awaited: awaiting `first` would let `handed` run before this task resumes.
    while not first.done():  # noqa: ASYNC110 (the reply hands the turn to `handed`)
        await asyncio.sleep(0)
    handed.cancel()

    await last
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert asterisk.sent == [b"ANSWER\n", b"SET VARIABLE A b\n"]
    assert session.usable is True
