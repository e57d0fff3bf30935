"""AmiClient against a small fake Asterisk manager on 127.0.0.1.

The fake speaks the wire format of main/manager.c: a banner, ``Key: Value`` lines, an
empty line after each message, ``Authentication failed`` then a closed socket for a bad
secret (action_login), ``FullyBooted`` after a good login, ``Ping: Pong``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import SecretStr

from fastagi.ami import (
    AmiActionError,
    AmiAuthError,
    AmiClient,
    AmiConnectionLost,
    AmiTimeout,
    AmiValueError,
    ConnectionState,
    Message,
    OriginateReason,
)
from fastagi.ami.framing import FrameDecoder, parse_message
from fastagi.ami.protocol import AmiProtocol

SECRET = "s3cr3t-Ki7vQ-do-not-log"
USER = "fastagi"
BANNER = b"Asterisk Call Manager/9.0.0\r\n"

Handler = Callable[["FakeConnection", Message], Awaitable[None]]


def wire(*pairs: tuple[str, str]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in pairs).encode() + b"\r\n"


class FakeConnection:
    def __init__(self, server: FakeAmi, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, action: Message, *pairs: tuple[str, str]) -> None:
        response, *rest = pairs
        await self.send(wire(response, ("ActionID", action.action_id or ""), *rest))


class FakeAmi:
    """A scripted manager. ``handlers`` maps lowercase action names to coroutines."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections: list[FakeConnection] = []
        self.actions: list[Message] = []
        self.raw: list[bytes] = []
        self.logins = 0
        self.login_event = asyncio.Event()
        self.ended = 0  # connections whose client closed its end (EOF read)
        self.ended_event = asyncio.Event()
        self.answer_pings = True
        self.refuse_connections = 0  # close this many new connections at once
        self.variables: dict[str, str] = {"DEVICE_STATE(Custom:PANIC)": "UNKNOWN"}
        self.channels = {"PJSIP/201-00000001"}
        self.originate_reason = "4"
        self.handlers: dict[str, Handler] = {
            "login": self._login,
            "ping": self._ping,
            "originate": self._originate,
            "setvar": self._setvar,
            "getvar": self._getvar,
            "hangup": self._hangup,
            "logoff": self._logoff,
        }

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.drop_all()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    def drop_all(self) -> None:
        for conn in self.connections:
            conn.writer.close()
        self.connections.clear()

    def of(self, name: str) -> list[Message]:
        return [a for a in self.actions if (a.get("Action") or "").lower() == name.lower()]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse_connections:
            self.refuse_connections -= 1
            writer.close()
            return
        conn = FakeConnection(self, reader, writer)
        self.connections.append(conn)
        decoder = FrameDecoder()
        decoder.feed(BANNER)  # the decoder expects a banner first; ours is implied
        try:
            await conn.send(BANNER)
            while data := await reader.read(4096):
                self.raw.append(data)
                for text in decoder.feed(data):
                    action = Message(parse_message(text))
                    self.actions.append(action)
                    handler = self.handlers.get((action.get("Action") or "").lower())
                    if handler is not None:
                        await handler(conn, action)
            self.ended += 1
            self.ended_event.set()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _login(self, conn: FakeConnection, action: Message) -> None:
        if action.get("Username") == USER and action.get("Secret") == SECRET:
            await conn.reply(
                action, ("Response", "Success"), ("Message", "Authentication accepted")
            )
            await conn.send(wire(("Event", "FullyBooted"), ("Status", "Fully Booted")))
            self.logins += 1
            self.login_event.set()
        else:
            await conn.reply(action, ("Response", "Error"), ("Message", "Authentication failed"))
            conn.writer.close()

    async def _ping(self, conn: FakeConnection, action: Message) -> None:
        if self.answer_pings:
            await conn.reply(action, ("Response", "Success"), ("Ping", "Pong"))

    async def _originate(self, conn: FakeConnection, action: Message) -> None:
        if action.get("Exten") == "nowhere":
            await conn.reply(
                action, ("Response", "Error"), ("Message", "Extension does not exist.")
            )
            return
        await conn.reply(
            action, ("Response", "Success"), ("Message", "Originate successfully queued")
        )
        # Events of the call come first, without ActionID, then the OriginateResponse.
        await conn.send(wire(("Event", "Newchannel"), ("Channel", "PJSIP/201-00000002")))
        success = self.originate_reason == "4"
        await conn.send(
            wire(
                ("Event", "OriginateResponse"),
                ("ActionID", action.action_id or ""),
                ("Response", "Success" if success else "Failure"),
                ("Channel", "PJSIP/201-00000002" if success else action["Channel"]),
                ("Context", action["Context"]),
                ("Exten", action["Exten"]),
                ("Reason", self.originate_reason),
                # Asterisk 22 writes "<unknown>" when no channel was created.
                ("Uniqueid", "1700000000.2" if success else "<unknown>"),
            )
        )

    async def _setvar(self, conn: FakeConnection, action: Message) -> None:
        self.variables[action["Variable"]] = action.get("Value", "")
        await conn.reply(action, ("Response", "Success"), ("Message", "Variable Set"))

    async def _getvar(self, conn: FakeConnection, action: Message) -> None:
        value = self.variables.get(action["Variable"], "")
        await conn.reply(
            action, ("Response", "Success"), ("Variable", action["Variable"]), ("Value", value)
        )

    async def _hangup(self, conn: FakeConnection, action: Message) -> None:
        if action["Channel"] in self.channels:
            await conn.reply(action, ("Response", "Success"), ("Message", "Channel Hungup"))
        else:
            await conn.reply(action, ("Response", "Error"), ("Message", "No such channel"))

    async def _logoff(self, conn: FakeConnection, action: Message) -> None:
        await conn.reply(action, ("Response", "Goodbye"), ("Message", "Thanks for all the fish."))
        conn.writer.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    server = FakeAmi()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def make_client(fake: FakeAmi, secret: str = SECRET, **options: Any) -> AmiClient:
    options.setdefault("reconnect_initial_delay", 0.01)
    options.setdefault("reconnect_max_delay", 0.05)
    options.setdefault("fully_booted_timeout", 2.0)
    return AmiClient("127.0.0.1", fake.port, USER, SecretStr(secret), **options)


@pytest.fixture
async def client(fake: FakeAmi) -> AsyncIterator[AmiClient]:
    async with make_client(fake) as ami:
        yield ami


# -- login --------------------------------------------------------------------------------


async def test_login_success(fake: FakeAmi) -> None:
    ami = make_client(fake)
    assert not ami.connected
    await ami.connect()
    try:
        assert ami.connected
        assert ami.asterisk_version == "9.0.0"
        [login] = fake.of("Login")
        assert login["Username"] == USER
        # Only the classes the server reads, whatever the user may read.
        assert login["Events"] == "system,call,user"
        assert login.action_id is not None
    finally:
        await ami.close()
    assert ami.state is ConnectionState.CLOSED
    assert len(fake.of("Logoff")) == 1


async def test_login_failure_raises_auth_error_without_the_secret(fake: FakeAmi) -> None:
    ami = make_client(fake, secret="wrong-" + SECRET)
    with pytest.raises(AmiAuthError) as info:
        await ami.connect()
    assert USER in str(info.value)
    assert "Authentication failed" in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)
    assert ami.state is ConnectionState.DISCONNECTED


async def test_connection_refused_is_connection_lost(fake: FakeAmi) -> None:
    port = fake.port
    await fake.stop()
    ami = AmiClient("127.0.0.1", port, USER, SecretStr(SECRET))
    with pytest.raises(AmiConnectionLost):
        await ami.connect()


async def test_no_fully_booted_still_connects(fake: FakeAmi) -> None:
    async def login_without_booted(conn: FakeConnection, action: Message) -> None:
        await conn.reply(action, ("Response", "Success"), ("Message", "Authentication accepted"))

    fake.handlers["login"] = login_without_booted
    async with make_client(fake, fully_booted_timeout=0.05) as ami:
        assert ami.connected


# -- framing over TCP -------------------------------------------------------------------


async def test_utf8_character_split_across_tcp_writes(fake: FakeAmi, client: AmiClient) -> None:
    encoded = "Event: UserEvent\r\nUserEvent: Panic\r\nDepartment: Caf\u00e9\r\n\r\n".encode()
    cut = encoded.index(b"\xc3") + 1
    [conn] = fake.connections

    async def ping_then_rest(conn: FakeConnection, action: Message) -> None:
        # The rest of the event goes out only after the client has sent its Ping, so
        # the two halves of "é" reach the client in separate reads.
        await conn.send(encoded[cut:])
        await conn.reply(action, ("Response", "Success"), ("Ping", "Pong"))

    fake.handlers["ping"] = ping_then_rest
    async with client.events("UserEvent") as stream:
        await conn.send(encoded[:cut])
        await client.ping(timeout=5)
        async with asyncio.timeout(5):
            event = await anext(stream)
    assert event["Department"] == "Caf\u00e9"


def test_protocol_decodes_utf8_split_across_data_received() -> None:
    events: list[Message] = []
    protocol = AmiProtocol(events.append, lambda _: None)
    encoded = "Event: UserEvent\r\nDepartment: Caf\u00e9\r\n\r\n".encode()
    cut = encoded.index(b"\xc3") + 1
    protocol.data_received(BANNER + encoded[:cut])
    protocol.data_received(encoded[cut:])
    assert [e["Department"] for e in events] == ["Caf\u00e9"]


# -- actions ------------------------------------------------------------------------------


async def test_originate_answered(fake: FakeAmi, client: AmiClient) -> None:
    result = await client.originate(
        "PJSIP/201",
        context="paging",
        exten="beep",
        variables={"ALARM_ID": "42", "DEPT": "Sales, ALARM_ID=7"},
        caller_id='"Panic" <999>',
        timeout_ms=5000,
        channel_id="alarm-42-201",
    )
    assert result.answered
    assert result.reason == OriginateReason.ANSWERED
    assert result.reason_name == "ANSWERED"
    assert result.uniqueid == "1700000000.2"
    assert result.channel == "PJSIP/201-00000002"
    [sent] = fake.of("Originate")
    assert sent["Async"] == "true"
    assert sent["Timeout"] == "5000"
    assert sent["ChannelId"] == "alarm-42-201"
    assert sent.get_all("Variable") == ["ALARM_ID=42", r"DEPT=Sales\, ALARM_ID=7"]
    assert result.action_id == sent.action_id


async def test_originate_failure_is_a_result(fake: FakeAmi, client: AmiClient) -> None:
    fake.originate_reason = "5"
    result = await client.originate("PJSIP/202", context="paging", exten="beep")
    assert not result.success
    assert not result.answered
    assert result.reason == OriginateReason.BUSY
    assert result.uniqueid is None


async def test_originate_refused_raises_action_error(client: AmiClient) -> None:
    with pytest.raises(AmiActionError, match="Extension does not exist"):
        await client.originate("PJSIP/201", context="paging", exten="nowhere")


async def test_device_state_round_trip(fake: FakeAmi, client: AmiClient) -> None:
    await client.set_device_state("Custom:PANIC", "BUSY")
    [setvar] = fake.of("SetVar")
    assert setvar["Variable"] == "DEVICE_STATE(Custom:PANIC)"
    assert setvar["Value"] == "BUSY"
    assert await client.get_device_state("Custom:PANIC") == "BUSY"
    assert await client.get_variable("UNSET_THING") is None
    with pytest.raises(AmiValueError):
        await client.set_device_state("PJSIP/201", "BUSY")
    with pytest.raises(AmiValueError):
        await client.set_device_state("Custom:PANIC", "ON_FIRE")


async def test_hangup(fake: FakeAmi, client: AmiClient) -> None:
    assert await client.hangup("PJSIP/201-00000001") is True
    assert await client.hangup("PJSIP/201-0000ffff") is False
    with pytest.raises(AmiValueError):
        await client.hangup("/.*/")  # would hang up every channel
    assert [a["Channel"] for a in fake.of("Hangup")] == ["PJSIP/201-00000001", "PJSIP/201-0000ffff"]


async def test_generic_action_and_error(client: AmiClient) -> None:
    response = await client.action("Ping")
    assert response["Ping"] == "Pong"
    with pytest.raises(AmiTimeout):
        await client.action("CoreStatus", reply_timeout=0.05)  # the fake does not answer
    with pytest.raises(AmiValueError, match="originate"):
        await client.action("Originate", Channel="PJSIP/201", Context="x", Exten="s")


async def test_cr_lf_refused_and_nothing_sent(fake: FakeAmi, client: AmiClient) -> None:
    before = list(fake.raw)
    with pytest.raises(AmiValueError) as info:
        await client.originate(
            "PJSIP/201",
            context="paging",
            exten="beep",
            variables={"DEPT": "Sales\r\nAction: Hangup\r\nChannel: /.*/"},
        )
    assert "Action: Hangup" not in str(info.value)
    with pytest.raises(AmiValueError):
        await client.action("Hangup", Channel="PJSIP/201\nAction: Hangup")
    with pytest.raises(AmiValueError):
        await client.set_device_state("Custom:PANIC\r\nX", "BUSY")
    with pytest.raises(AmiValueError):
        await client.originate("PJSIP/201", context="p\ra", exten="beep")
    await client.ping(timeout=5)  # anything sent before this Ping has arrived by now
    assert fake.of("Originate") == []
    assert fake.of("Hangup") == []
    assert b"Action: Hangup" not in b"".join(fake.raw[len(before) :])


# -- events -------------------------------------------------------------------------------


async def test_event_stream_and_callbacks(fake: FakeAmi, client: AmiClient) -> None:
    seen: list[str | None] = []
    remove = client.subscribe(lambda event: seen.append(event.event))
    [conn] = fake.connections
    async with client.events("Hangup", "userevent") as stream:
        await conn.send(
            wire(("Event", "DialEnd"), ("DialStatus", "ANSWER"))
            + wire(("Event", "Hangup"), ("Channel", "PJSIP/201-00000001"), ("Cause", "16"))
            + wire(("Event", "UserEvent"), ("UserEvent", "PanicAck"))
        )
        async with asyncio.timeout(5):
            first = await anext(stream)
            second = await anext(stream)
    assert (first.event, first["Cause"]) == ("Hangup", "16")
    assert (second.event, second["UserEvent"]) == ("UserEvent", "PanicAck")
    assert seen == ["DialEnd", "Hangup", "UserEvent"]
    remove()


async def test_an_event_nobody_listens_to_is_left_unparsed(
    fake: FakeAmi, client: AmiClient
) -> None:
    # Most of a PBX's AMI stream is the call events of every call; parsing each only to
    # drop it was the AMI connection's largest cost (docs/performance.md).
    [conn] = fake.connections
    seen: list[str | None] = []
    remove = client.subscribe(lambda event: seen.append(event.event), "UserEvent")
    assert client._conn is not None
    async with client.events("Hangup") as stream:
        skipped_before = client._conn.skipped_events
        await conn.send(
            wire(("Event", "Newexten"), ("Channel", "PJSIP/100-00000001"))
            + wire(("Event", "NewConnectedLine"), ("Channel", "PJSIP/100-00000001"))
            + wire(("Event", "Hangup"), ("Channel", "PJSIP/100-00000001"), ("Cause", "16"))
            + wire(("Event", "UserEvent"), ("UserEvent", "PanicAck"))
        )
        await client.ping(timeout=5)  # the Pong comes after every event sent before it
        skipped = client._conn.skipped_events - skipped_before
        async with asyncio.timeout(5):
            hangup = await anext(stream)
    assert hangup.event == "Hangup"
    assert seen == ["UserEvent"]
    assert skipped == 2
    remove()
    # A listener for every event: nothing is skipped.
    async with client.events() as everything:
        await conn.send(wire(("Event", "Newexten"), ("Channel", "PJSIP/100-00000001")))
        async with asyncio.timeout(5):
            assert (await anext(everything)).event == "Newexten"


async def test_originate_response_goes_to_the_caller_not_the_stream(client: AmiClient) -> None:
    async with client.events() as stream:
        await client.originate("PJSIP/201", context="paging", exten="beep")
        async with asyncio.timeout(5):
            event = await anext(stream)
    assert event.event == "Newchannel"  # not OriginateResponse


async def test_close_ends_streams(fake: FakeAmi) -> None:
    ami = make_client(fake)
    await ami.connect()
    stream = ami.events()
    await ami.close()
    async with asyncio.timeout(5):
        assert [event async for event in stream] == []


async def test_close_cancelled_while_logging_off_still_closes_the_socket(fake: FakeAmi) -> None:
    # A server stopping cancels its health run, which may be logging off its own client
    # at that moment: the socket must not outlive the cancellation (a leaked transport
    # is closed, with a ResourceWarning, only when its event loop is long gone).
    logoff_read = asyncio.Event()

    async def no_goodbye(conn: FakeConnection, action: Message) -> None:
        logoff_read.set()

    fake.handlers["logoff"] = no_goodbye
    ami = make_client(fake)
    await ami.connect()
    closing = asyncio.create_task(ami.close())
    async with asyncio.timeout(5):
        await logoff_read.wait()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    async with asyncio.timeout(5):
        await fake.ended_event.wait()
    assert fake.ended == 1
    assert ami.state is ConnectionState.CLOSED


# -- keepalive and reconnect ------------------------------------------------------------


async def test_ping_timeout_on_a_silent_server(fake: FakeAmi, client: AmiClient) -> None:
    assert await client.ping(timeout=5) >= 0
    fake.answer_pings = False
    with pytest.raises(AmiTimeout):
        await client.ping(timeout=0.1)


async def test_half_open_connection_is_detected_and_replaced(fake: FakeAmi) -> None:
    reconnected = asyncio.Event()

    async def hook() -> None:
        reconnected.set()

    async with make_client(fake, ping_interval=0.05, ping_timeout=0.1) as ami:
        ami.on_reconnect(hook)
        fake.answer_pings = False  # the server is still there, but says nothing
        fake.login_event.clear()
        async with asyncio.timeout(5):
            await fake.login_event.wait()
            fake.answer_pings = True
            await reconnected.wait()
        assert fake.logins == 2
        assert ami.connected
        assert await ami.ping(timeout=5) >= 0


async def test_reconnect_with_backoff_after_server_closes(fake: FakeAmi) -> None:
    reconnected = asyncio.Event()
    calls: list[ConnectionState] = []

    async def hook() -> None:
        calls.append(ami.state)
        reconnected.set()

    ami = make_client(fake)
    async with ami:
        ami.on_reconnect(hook)
        fake.refuse_connections = 3  # Asterisk still restarting: three attempts fail
        fake.drop_all()
        async with asyncio.timeout(5):
            await reconnected.wait()
        assert calls == [ConnectionState.CONNECTED]
        assert fake.logins == 2
        assert fake.refuse_connections == 0
        await ami.set_device_state("Custom:PANIC", "BUSY")


async def test_actions_fail_fast_while_reconnecting(fake: FakeAmi, client: AmiClient) -> None:
    fake.handlers["ping"] = lambda conn, action: asyncio.sleep(0)  # never answers
    fake.refuse_connections = 1000
    pending = asyncio.create_task(client.ping(timeout=5))
    await asyncio.sleep(0)  # let the Ping go out
    fake.drop_all()
    with pytest.raises(AmiConnectionLost):
        await pending
    with pytest.raises(AmiConnectionLost):
        await client.get_variable("X")
    assert client.state is ConnectionState.RECONNECTING


async def test_wait_connected_waits_out_a_reconnection(fake: FakeAmi) -> None:
    ami = make_client(fake)
    waiting = asyncio.create_task(ami.wait_connected())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # before the first connect
    async with ami:
        async with asyncio.timeout(5):
            await waiting
        await ami.wait_connected()  # connected: at once
        fake.refuse_connections = 2
        answer_ping = fake.handlers["ping"]
        fake.handlers["ping"] = lambda conn, action: asyncio.sleep(0)  # never answers
        pending = asyncio.create_task(ami.ping(timeout=5))
        await asyncio.sleep(0)  # the Ping goes out
        fake.drop_all()
        with pytest.raises(AmiConnectionLost):
            await pending  # failed by the loss, which the client has seen
        fake.handlers["ping"] = answer_ping
        waiting = asyncio.create_task(ami.wait_connected())
        await asyncio.sleep(0)
        assert not waiting.done()  # reconnecting
        async with asyncio.timeout(5):
            await waiting
        assert ami.state is ConnectionState.CONNECTED
        assert fake.logins == 2


async def test_shutdown_event_triggers_reconnect(fake: FakeAmi) -> None:
    reconnected = asyncio.Event()

    async def hook() -> None:
        reconnected.set()

    async with make_client(fake) as ami:
        ami.on_reconnect(hook)
        [conn] = fake.connections
        await conn.send(wire(("Event", "Shutdown"), ("Shutdown", "Cleanly"), ("Restart", "True")))
        async with asyncio.timeout(5):
            await reconnected.wait()
        assert fake.logins == 2


def test_backoff_grows_exponentially_with_jitter() -> None:
    ami = AmiClient(
        "127.0.0.1",
        5038,
        USER,
        SecretStr(SECRET),
        reconnect_initial_delay=0.5,
        reconnect_max_delay=30.0,
        rng=random.Random(7),
    )
    delays = [ami._backoff(attempt) for attempt in range(10)]
    for attempt, delay in enumerate(delays):
        ceiling = min(30.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert delays[-1] >= 15.0
    assert len(set(delays)) == len(delays)  # jittered, not a fixed ladder


# -- the secret never leaks -------------------------------------------------------------


async def test_secret_absent_from_logs_and_errors(
    fake: FakeAmi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    bad = make_client(fake, secret="wrong-" + SECRET)
    try:
        await bad.connect()
    except AmiAuthError as exc:
        errors.append(exc)
    broken = make_client(fake, secret=SECRET + "\r\nAction: Hangup")
    try:
        await broken.connect()
    except AmiAuthError as exc:
        errors.append(exc)
    ami = make_client(fake, ping_interval=0.05, ping_timeout=0.1)
    async with ami:
        reconnected = asyncio.Event()

        async def hook() -> None:
            reconnected.set()

        ami.on_reconnect(hook)
        fake.drop_all()
        async with asyncio.timeout(5):
            await reconnected.wait()
        with contextlib.suppress(AmiTimeout):
            await ami.action("CoreStatus", reply_timeout=0.05)
    assert len(errors) == 2
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [repr(ami)]
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(repr(record.args))
        texts.append(repr(record.__dict__))
    texts.append(caplog.text)
    assert caplog.records  # the test did log something
    for text in texts:
        assert SECRET not in text
