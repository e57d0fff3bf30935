"""``AmiClient``: the application's only way to talk to the Asterisk Manager Interface.

The rest of the application imports this package, never panoramisk. What we use of
panoramisk 1.4, and why, is in :mod:`fastagi.ami.protocol`; in short we keep its
ActionID routing and its rules for when a (multi-message) reply is complete, and we
replace its ``Manager`` with the small supervisor below, because every requirement about
the connection's life conflicts with what ``Manager`` does on its own:

- ``Manager`` reconnects every ``reconnect_timeout`` seconds, forever, with no backoff
  or jitter, and also after a refused Login (the failure is only a ``False`` in a
  callback). We raise :class:`AmiAuthError` from :meth:`AmiClient.connect`, and back off
  exponentially with jitter so that many servers do not hammer a restarting Asterisk in
  step.
- ``Manager`` sends ``Ping`` every 10 s and never looks at the answer, so a half-open
  TCP connection (Asterisk host gone, no RST) looks healthy until the kernel gives up,
  which takes many minutes. We time each Ping and reconnect when no Pong comes.
- ``Manager`` parks actions in flight when the connection drops and re-sends them after
  the next ``FullyBooted``: an Originate could page twice, long after the caller stopped
  waiting. Our actions fail with :class:`AmiConnectionLost` and the caller decides.
- ``Manager`` calls ``on_login`` for the first login and every later one alike; we call
  the ``on_reconnect`` hooks after a *re*-connection only (once Asterisk says
  ``FullyBooted``), which is when BLF lamp states must be applied again.

Two panoramisk behaviours we keep on purpose: the events that answer an action (list
events, an Originate's ``OriginateResponse``) go to that action's caller and not to
:meth:`AmiClient.events`; and every action carries an ActionID that we choose.

The actions the application sends, and the AMI write class each needs (main/manager.c
``ast_manager_register_xml_core``, main/db.c; "a or b" means either will do): Login,
Logoff, Ping (none); Originate of a context/exten (``originate``; an application such as
System would need ``system``); Hangup (``system`` or ``call``); SetVar (``call``); Getvar
(``call`` or ``reporting``); DBGet, DBGetTree (``system`` or ``reporting``). So the AMI
user needs write ``call,originate,reporting`` and no ``system`` or ``command``; read
``call`` (the calls' events, OriginateResponse included), ``user`` (UserEvent) and
``system`` (only for FullyBooted, see ``_wait_fully_booted``). The full table, with the
source of each: fastagi/freepbx/ami_user.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from pydantic import SecretStr

from fastagi.ami.errors import (
    AmiActionError,
    AmiAuthError,
    AmiConnectionLost,
    AmiError,
    AmiProtocolError,
    AmiTimeout,
    AmiValueError,
)
from fastagi.ami.framing import FieldValue, check_value, encode_variable
from fastagi.ami.message import Message
from fastagi.ami.protocol import AmiProtocol, unwrap
from fastagi.config import AmiSettings

logger = logging.getLogger(__name__)

# The event classes the server reads (see above): asked for at Login, so that an AMI user
# allowed to read more (a FreePBX admin user, the sandbox's) does not flood the server
# with the dialplan, AGI, DTMF and CDR events of every call, each parsed and dropped
# (measured: a third of the server's CPU in a storm of probe calls, docs/performance.md).
EVENT_CLASSES = "system,call,user"

ReconnectHook = Callable[[], Awaitable[None]]
EventCallback = Callable[[Message], None]

# func_devstate.c: the states DEVICE_STATE(Custom:...) accepts (ast_devstate_val).
DEVICE_STATES = frozenset(
    {
        "UNKNOWN",
        "NOT_INUSE",
        "INUSE",
        "BUSY",
        "INVALID",
        "UNAVAILABLE",
        "RINGING",
        "RINGINUSE",
        "ONHOLD",
    }
)
# OriginateResponse's Uniqueid when no channel was created: "<null>" in older
# main/manager.c fast_originate, "<unknown>" as seen from Asterisk 22.
_NO_UNIQUEID = frozenset({None, "", "<null>", "<unknown>"})
# main/manager.c action_originate copies Channel into ``char tmp[256]`` with
# ast_copy_string: anything longer is cut without a word.
_MAX_CHANNEL_BYTES = 255


class ConnectionState(enum.Enum):
    DISCONNECTED = "disconnected"  # before connect()
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"  # lost; the supervisor is retrying with backoff
    CLOSED = "closed"


class OriginateReason(enum.IntEnum):
    """``Reason`` of ``OriginateResponse``: the last control frame the dial saw.

    main/manager.c fast_originate passes ``reason`` from ast_pbx_outgoing_exten; the
    numbers are ``enum ast_control_frame_type`` (include/asterisk/frame.h).
    """

    FAILED = 0  # no channel could be created, or it failed before any signalling
    HANGUP = 1  # AST_CONTROL_HANGUP: the far end hung up or rejected
    RING = 2  # AST_CONTROL_RING
    NO_ANSWER = 3  # AST_CONTROL_RINGING: it rang until Timeout ran out
    ANSWERED = 4  # AST_CONTROL_ANSWER
    BUSY = 5  # AST_CONTROL_BUSY
    CONGESTION = 8  # AST_CONTROL_CONGESTION


@dataclass(frozen=True)
class OriginateResult:
    """The outcome of one Originate, from its ``OriginateResponse`` event."""

    action_id: str
    success: bool  # Response: Success
    reason: int  # compare with OriginateReason; Asterisk may add codes
    channel: str
    uniqueid: str | None  # None when no channel was created
    event: Message

    @property
    def answered(self) -> bool:
        return self.success and self.reason == OriginateReason.ANSWERED

    @property
    def reason_name(self) -> str:
        try:
            return OriginateReason(self.reason).name
        except ValueError:
            return f"UNKNOWN_{self.reason}"


def _wants(names: frozenset[str], message: Message) -> bool:
    """Whether a listener of ``names`` (lower case; empty: every event) takes ``message``."""
    return not names or (message.event or "").lower() in names


class EventStream:
    """Events as an async iterator; ``async with client.events() as stream:``.

    Each stream has its own bounded queue. A consumer that falls behind by more than
    ``maxsize`` events loses the newest ones (counted in :attr:`dropped`, logged) rather
    than let memory grow; the iteration ends when the stream or the client is closed.
    """

    def __init__(
        self,
        names: frozenset[str],
        maxsize: int,
        on_close: Callable[[EventStream], None],
    ) -> None:
        self.names = names  # lower case; empty: every event
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize)
        self._on_close = on_close
        self._ended = False
        self.dropped = 0

    def _offer(self, message: Message) -> None:
        if self._ended:
            return
        if not _wants(self.names, message):
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            # Powers of two: enough to see it happening without a line per event.
            if self.dropped & (self.dropped - 1) == 0:
                logger.warning("AMI event stream full; %d events dropped", self.dropped)

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def close(self) -> None:
        self._on_close(self)
        self._end()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # every later __anext__ ends too
            raise StopAsyncIteration
        return item

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class AmiClient:
    """One logical AMI session that survives Asterisk restarts.

    ``connect()`` opens and logs in once (raising on failure); from then on a supervisor
    task pings every ``ping_interval`` seconds and reconnects after a loss, with
    exponential backoff and jitter, until ``close()``. Actions sent while reconnecting
    fail at once with :class:`AmiConnectionLost`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: SecretStr,
        *,
        connect_timeout: float = 5.0,
        # main/manager.c action_login sleeps 1 s before answering a refused Login.
        login_timeout: float = 5.0,
        action_timeout: float = 10.0,
        ping_interval: float = 10.0,
        ping_timeout: float = 5.0,
        fully_booted_timeout: float = 10.0,
        # Time allowed for OriginateResponse beyond the Originate's own Timeout.
        originate_margin: float = 15.0,
        reconnect_initial_delay: float = 0.5,
        reconnect_max_delay: float = 30.0,
        event_queue_size: int = 10_000,
        rng: random.Random | None = None,
        # The scheduled checks log in afresh every 10 s: their logins are not news.
        login_log_level: int = logging.INFO,
    ) -> None:
        self._login_log_level = login_log_level
        self._host = host
        self._port = port
        self._username = username
        self._secret = secret
        self._connect_timeout = connect_timeout
        self._login_timeout = login_timeout
        self._action_timeout = action_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._fully_booted_timeout = fully_booted_timeout
        self._originate_margin = originate_margin
        self._reconnect_initial_delay = reconnect_initial_delay
        self._reconnect_max_delay = reconnect_max_delay
        self._event_queue_size = event_queue_size
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (jitter only)
        # Set while CONNECTED (the ``_state`` setter keeps it so): wait_connected().
        self._up = asyncio.Event()
        self._current_state = ConnectionState.DISCONNECTED
        self.reconnects = 0  # connections reopened after a loss (read by the metrics)
        self._conn: AmiProtocol | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._reconnect_hooks: list[ReconnectHook] = []
        self._callbacks: list[tuple[EventCallback, frozenset[str]]] = []
        self._streams: set[EventStream] = set()
        # The union of what the listeners want (lower case), None when one wants every
        # event; the connection leaves the others unparsed. Recomputed on every change.
        self._wanted: frozenset[str] | None = frozenset()
        # ActionIDs unique across clients and restarts of this process, so a late reply
        # to an earlier session can never be mistaken for one of ours.
        self._id_prefix = f"fastagi-{uuid.uuid4().hex[:12]}"
        self._ids = itertools.count(1)

    @classmethod
    def from_settings(cls, settings: AmiSettings, **options: Any) -> Self:
        options = {
            "ping_interval": settings.ping_interval,
            "ping_timeout": settings.ping_timeout,
            **options,
        }
        return cls(settings.host, settings.port, settings.username, settings.secret, **options)

    def __repr__(self) -> str:
        return f"<AmiClient {self._username}@{self._where} {self._state.value}>"

    @property
    def _where(self) -> str:
        return f"{self._host}:{self._port}"

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state is ConnectionState.CONNECTED

    async def wait_connected(self) -> None:
        """Return once the client is connected (at once if it is): after the first
        connect, or the next reconnection."""
        await self._up.wait()

    @property
    def _state(self) -> ConnectionState:
        return self._current_state

    @_state.setter
    def _state(self, state: ConnectionState) -> None:
        self._current_state = state
        if state is ConnectionState.CONNECTED:
            self._up.set()
        else:
            self._up.clear()

    @property
    def fully_booted(self) -> bool:
        """Whether Asterisk said ``FullyBooted`` on this connection: it does so at login
        only to a user that reads ``system`` events (main/manager.c)."""
        return self._conn is not None and self._conn.fully_booted.is_set()

    @property
    def asterisk_version(self) -> str | None:
        """The AMI protocol version from the banner (``Asterisk Call Manager/<it>``)."""
        return self._conn.version if self._conn is not None else None

    # -- life cycle ---------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and log in; raises AmiAuthError, AmiTimeout or AmiConnectionLost."""
        if self._state is not ConnectionState.DISCONNECTED:
            raise AmiError(f"connect() on a client that is {self._state.value}")
        self._state = ConnectionState.CONNECTING
        try:
            self._conn = await self._open()
        except BaseException:
            self._state = ConnectionState.DISCONNECTED
            raise
        self._state = ConnectionState.CONNECTED
        self._supervisor = asyncio.create_task(self._supervise(), name="ami-supervisor")

    async def close(self) -> None:
        """Log off and close; ends every event stream. Safe to call more than once.

        Cancelled midway (a server stopping while a health run logs off), it still lets
        go of the socket: the state is CLOSED from the first line, so no later call
        would, and an open transport outlives its event loop as a leaked socket.
        """
        if self._state is ConnectionState.CLOSED:
            return
        self._state = ConnectionState.CLOSED
        try:
            tasks = [t for t in (self._supervisor, *self._background) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Read after the supervisor stopped: it may have replaced the connection.
            conn = self._conn
            if conn is not None and not conn.closed:
                # Best effort, briefly: Logoff lets Asterisk end the session cleanly (it
                # answers "Goodbye" and closes, main/manager.c action_logoff).
                with contextlib.suppress(AmiError):
                    await self._send_on(conn, [("Action", "Logoff")], 1.0)
                conn.close()
            if conn is not None:
                # Wait for the transport to be closed for real, so nothing leaks past us.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await conn.lost.wait()
        finally:
            conn = self._conn
            if conn is not None and not conn.lost.is_set():
                conn.abort()  # never waits: the socket is closed at the loop's next turn
            for stream in list(self._streams):
                stream.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def on_reconnect(self, hook: ReconnectHook) -> Callable[[], None]:
        """Run ``await hook()`` after every *re*-connection (not the first connect).

        Called once the new session is logged in and Asterisk reported ``FullyBooted``
        (or ``fully_booted_timeout`` passed): the place to apply BLF lamp states again.
        Hooks run in a task of their own; an exception is logged. Returns a remover.
        """
        self._reconnect_hooks.append(hook)
        return lambda: self._reconnect_hooks.remove(hook)

    # -- events -------------------------------------------------------------------------

    def subscribe(self, callback: EventCallback, *names: str) -> Callable[[], None]:
        """Call ``callback(event)`` for every event, or only those named
        (case-insensitive); it must not block. Returns a remover.

        Name the events wherever you can: events nobody listens to are not even parsed.
        An exception from the callback is logged and does not reach the connection.
        """
        entry = (callback, frozenset(name.lower() for name in names))
        self._callbacks.append(entry)
        self._listeners_changed()

        def remove() -> None:
            self._callbacks.remove(entry)
            self._listeners_changed()

        return remove

    def events(self, *names: str) -> EventStream:
        """A stream of events, all of them or only those named (case-insensitive)."""
        stream = EventStream(
            frozenset(name.lower() for name in names),
            self._event_queue_size,
            self._stream_closed,
        )
        if self._state is ConnectionState.CLOSED:
            stream._end()
        else:
            self._streams.add(stream)
            self._listeners_changed()
        return stream

    def _stream_closed(self, stream: EventStream) -> None:
        self._streams.discard(stream)
        self._listeners_changed()

    def _listeners_changed(self) -> None:
        wanted: set[str] = set()
        for names in [names for _, names in self._callbacks] + [
            stream.names for stream in self._streams
        ]:
            if not names:
                self._wanted = None
                return
            wanted |= names
        self._wanted = frozenset(wanted)

    def _wanted_events(self) -> frozenset[str] | None:
        return self._wanted

    def _dispatch(self, message: Message) -> None:
        for callback, names in list(self._callbacks):
            if not _wants(names, message):
                continue
            try:
                callback(message)
            except Exception:
                logger.exception("AMI event callback failed", extra={"ami_event": message.event})
        for stream in list(self._streams):
            stream._offer(message)

    # -- actions ------------------------------------------------------------------------

    async def action(
        self, name: str, /, *, reply_timeout: float | None = None, **fields: FieldValue
    ) -> Message:
        """Send any action and return its response (the first message of its reply).

        ``Response: Error`` raises AmiActionError. Field values are checked: CR, LF or
        NUL raises AmiValueError and nothing is sent. Originate goes through
        :meth:`originate`, which always makes it ``Async``.
        """
        _refuse_raw_originate(name)
        messages = await self._send([("Action", name), *fields.items()], reply_timeout)
        return messages[0]

    async def action_list(
        self, name: str, /, *, reply_timeout: float | None = None, **fields: FieldValue
    ) -> list[Message]:
        """Like :meth:`action`, for actions that answer with a list of events
        (``CoreShowChannels``, ``DeviceStateList`` ...): the response, the events, and the
        closing ``...Complete`` event."""
        _refuse_raw_originate(name)
        return await self._send([("Action", name), *fields.items()], reply_timeout)

    # The deadline is part of what a ping measures (no Pong within it means the
    # connection is half-open), so it is a parameter rather than the caller's scope.
    async def ping(self, timeout: float | None = None) -> float:  # noqa: ASYNC109
        """Round-trip time of one ``Ping`` in seconds; AmiTimeout when no Pong comes."""
        return await self._ping(self._require_connection(), timeout or self._ping_timeout)

    async def originate(
        self,
        channel: str,
        *,
        context: str,
        exten: str,
        priority: int = 1,
        variables: Mapping[str, str] | None = None,
        caller_id: str | None = None,
        timeout_ms: int = 30000,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
    ) -> OriginateResult:
        """Call ``channel`` and, once it answers, run ``context,exten,priority`` on it.

        Always ``Async: true``: without it main/manager.c runs the call inside the
        manager session, which then answers nothing else until the call is answered or
        fails. Returns when ``OriginateResponse`` arrives: answered, or failed with a
        reason (a failure is a result, not an exception). Raises AmiActionError when
        Asterisk refuses the action itself ("Extension does not exist.").

        ``channel_id`` and ``other_channel_id`` fix the uniqueids of the new channel and,
        for a ``Local/`` channel, of its ;2 half (main/manager.c ``OtherChannelId``).

        ``variables`` are set on the new channel; their values may contain anything but
        CR, LF and NUL (commas, quotes and brackets are escaped, see
        :func:`~fastagi.ami.framing.encode_variable`).
        """
        if "/" not in channel or len(channel.encode()) > _MAX_CHANNEL_BYTES:
            raise AmiValueError("Originate needs a channel like 'PJSIP/201' (under 256 bytes)")
        if priority < 1 or timeout_ms < 1:
            raise AmiValueError("Originate needs priority >= 1 and timeout_ms >= 1")
        fields: list[tuple[str, FieldValue]] = [
            ("Action", "Originate"),
            ("Channel", channel),
            ("Context", context),
            ("Exten", exten),
            ("Priority", priority),
            ("Timeout", timeout_ms),
            ("Async", "true"),
        ]
        if caller_id is not None:
            fields.append(("CallerID", caller_id))
        if channel_id is not None:
            fields.append(("ChannelId", channel_id))
        if other_channel_id is not None:
            fields.append(("OtherChannelId", other_channel_id))
        if variables:
            fields.append(
                ("Variable", [encode_variable(key, value) for key, value in variables.items()])
            )
        messages = await self._send(fields, timeout_ms / 1000 + self._originate_margin)
        ack, event = messages[0], messages[-1]
        if event.event != "OriginateResponse":
            raise AmiProtocolError("Originate completed without an OriginateResponse event")
        try:
            reason = int(event.get("Reason", "0"))
        except ValueError:
            reason = OriginateReason.FAILED
        uniqueid = event.get("Uniqueid")
        return OriginateResult(
            action_id=ack.action_id or "",
            success=event.response == "Success",
            reason=reason,
            channel=event.get("Channel", channel),
            uniqueid=None if uniqueid in _NO_UNIQUEID else uniqueid,
            event=event,
        )

    async def hangup(self, channel: str, *, cause: int | None = None) -> bool:
        """Hang up one channel by its exact name; False when it no longer exists.

        A name starting with ``/`` is refused: main/manager.c treats ``/regex/`` as a
        pattern and hangs up every channel that matches.
        """
        if not channel or channel.startswith("/"):
            raise AmiValueError("hangup() takes one exact channel name, never a /regex/")
        fields: list[tuple[str, FieldValue]] = [("Action", "Hangup"), ("Channel", channel)]
        if cause is not None:
            fields.append(("Cause", cause))
        try:
            await self._send(fields, None)
        except AmiActionError as exc:
            if exc.message == "No such channel":
                return False
            raise
        return True

    async def set_device_state(self, device: str, state: str) -> None:
        """Set a custom device state (a BLF lamp): ``("Custom:PANIC", "BUSY")``.

        func_devstate only writes ``Custom:`` devices; states are :data:`DEVICE_STATES`.
        """
        _check_custom_device(device)
        if state not in DEVICE_STATES:
            raise AmiValueError(f"not a device state: {state!r}")
        await self._send(
            [
                ("Action", "SetVar"),
                ("Variable", f"DEVICE_STATE({device})"),
                ("Value", state),
            ],
            None,
        )

    async def get_variable(self, name: str, *, channel: str | None = None) -> str | None:
        """A global variable, a channel's variable, or a function (``DEVICE_STATE(...)``).

        None when empty: Getvar answers an unset variable and an empty one alike
        (main/manager.c action_getvar writes ``Value: `` for both).
        """
        fields: list[tuple[str, FieldValue]] = [("Action", "Getvar"), ("Variable", name)]
        if channel is not None:
            fields.append(("Channel", channel))
        response = (await self._send(fields, None))[0]
        return response.get("Value") or None

    async def get_device_state(self, device: str) -> str:
        """The state of ``device`` as DEVICE_STATE() reads it (``UNKNOWN`` if unset)."""
        check_value("device", device)
        return await self.get_variable(f"DEVICE_STATE({device})") or "UNKNOWN"

    # -- astdb, with the least privilege ----------------------------------------------------
    # Checked against Asterisk 22 (main/db.c, main/manager.c, funcs/func_db.c) and the
    # sandbox. DBGet/DBGetTree need `system` OR `reporting`; DBPut, DBDel, DBDelTree need
    # `system`. Getvar (`call` or `reporting`) reads DB_KEYS() and DB_EXISTS(), but DB()
    # and DB_DELETE() are dangerous functions (ast_custom_function_register_escalating):
    # over AMI, with live_dangerously = no (the default), a read of either answers an
    # empty Value ("Dangerous function DB read blocked" in the log) and SetVar on DB() is
    # refused. A *write* to DB_DELETE() is allowed (function_db_delete_write, "allows
    # execution even if live_dangerously is disabled"), through SetVar (`call`).

    async def db_tree(self, family: str) -> dict[str, str]:
        """Every astdb entry under ``family``, keys relative to it (``"k"``, ``"k/sub"``).

        ``DBGetTree`` (class `reporting`; Asterisk 16.28, 18.14, 19.6, 20 and later): one
        ``DBGetTreeResponse`` event per entry, with the full key (``/family/k``).
        """
        _check_db_path("family", family)
        messages = await self._send([("Action", "DBGetTree"), ("Family", family)], None)
        prefix = f"/{family}/"
        tree: dict[str, str] = {}
        for message in messages:
            key = message.get("Key")
            if message.event == "DBGetTreeResponse" and key and key.startswith(prefix):
                tree[key.removeprefix(prefix)] = message.get("Val", "")
        return tree

    async def db_delete(self, family: str, key: str) -> None:
        """Delete one astdb entry (nothing happens when it is absent) with ``SetVar`` on
        ``DB_DELETE(family/key)`` (class `call`), not ``DBDel`` (class `system`).

        func_db.c then sets the global variable ``DB_RESULT`` to the deleted value (the
        read it wraps stores it on the channel, and a SetVar without Channel has none).
        """
        _check_db_path("family", family)
        _check_db_path("key", key)
        await self._send(
            [("Action", "SetVar"), ("Variable", f"DB_DELETE({family}/{key})"), ("Value", "")],
            None,
        )

    # -- internals ----------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    def _require_connection(self) -> AmiProtocol:
        conn = self._conn
        if self._state is not ConnectionState.CONNECTED or conn is None or conn.closed:
            raise AmiConnectionLost(f"no AMI connection to {self._where} ({self._state.value})")
        return conn

    async def _send(
        self, fields: list[tuple[str, FieldValue]], limit: float | None
    ) -> list[Message]:
        return await self._send_on(self._require_connection(), fields, limit)

    async def _send_on(
        self,
        conn: AmiProtocol,
        fields: list[tuple[str, FieldValue]],
        limit: float | None,
    ) -> list[Message]:
        name = str(fields[0][1])
        limit = self._action_timeout if limit is None else limit
        action_id = self._next_id()
        action = conn.request(action_id, fields)
        logger.debug("AMI action sent", extra={"ami_action": name, "action_id": action_id})
        try:
            async with asyncio.timeout(limit):
                result = await action.future
        except TimeoutError:
            raise AmiTimeout(f"AMI {name} got no answer within {limit:g} s") from None
        finally:
            conn.forget(action)
        messages = unwrap(result)
        if messages[0].response == "Error":
            raise AmiActionError(name, messages[0].get("Message", ""))
        return messages

    async def _ping(self, conn: AmiProtocol, limit: float) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        # main/manager.c action_ping answers "Response: Success" and "Ping: Pong".
        response = (await self._send_on(conn, [("Action", "Ping")], limit))[0]
        if response.response != "Success":
            raise AmiProtocolError(f"unexpected answer to Ping: {response.response}")
        return loop.time() - started

    async def _open(self) -> AmiProtocol:
        """One connection, logged in, after FullyBooted (or its timeout)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: AmiProtocol(self._dispatch, self._connection_lost, self._wanted_events),
                    self._host,
                    self._port,
                )
        except TimeoutError:
            raise AmiTimeout(
                f"no AMI connection to {self._where} within {self._connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise AmiConnectionLost(
                f"cannot connect to AMI at {self._where}: {exc.strerror or exc}"
            ) from None
        try:
            await self._login(conn)
            await self._wait_fully_booted(conn)
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _login(self, conn: AmiProtocol) -> None:
        fields: list[tuple[str, FieldValue]] = [
            ("Action", "Login"),
            ("Username", self._username),
            ("Secret", self._secret.get_secret_value()),
            ("Events", EVENT_CLASSES),
        ]
        try:
            await self._send_on(conn, fields, self._login_timeout)
        except AmiActionError as exc:
            # The message names the user and where, never the secret.
            raise AmiAuthError(
                f"AMI login refused for user {self._username!r} at {self._where}: "
                f"{exc.message} (check ami.username and ami.secret against manager.conf)"
            ) from None
        except AmiValueError:
            raise AmiAuthError(
                "the AMI user name or secret contains CR, LF or NUL; nothing was sent"
            ) from None
        logger.log(
            self._login_log_level,
            "AMI logged in",
            extra={"ami_user": self._username, "ami_server": self._where},
        )

    async def _wait_fully_booted(self, conn: AmiProtocol) -> None:
        if conn.fully_booted.is_set():
            return
        booted = asyncio.ensure_future(conn.fully_booted.wait())
        lost = asyncio.ensure_future(conn.lost.wait())
        try:
            await asyncio.wait(
                {booted, lost},
                timeout=self._fully_booted_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            booted.cancel()
            lost.cancel()
        if conn.lost.is_set():
            raise AmiConnectionLost(f"AMI at {self._where} closed the connection after login")
        if not conn.fully_booted.is_set():
            # Asterisk sends it only to users that may read "system" events.
            logger.warning(
                "no FullyBooted from AMI within %g s; going on (does the AMI user have "
                "read=system?)",
                self._fully_booted_timeout,
            )

    def _connection_lost(self, conn: AmiProtocol) -> None:
        if conn is self._conn and self._state is ConnectionState.CONNECTED:
            self._state = ConnectionState.RECONNECTING

    async def _supervise(self) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            conn = self._conn
            assert conn is not None
            up_since = loop.time()
            why = await self._watch(conn)
            conn.abort()
            self._state = ConnectionState.RECONNECTING
            logger.warning("AMI connection to %s lost (%s); reconnecting", self._where, why)
            # A connection that stayed up a while resets the backoff; one that drops at
            # once (Asterisk still starting, or refusing us) keeps backing off.
            if loop.time() - up_since >= self._reconnect_max_delay:
                attempt = 0
            while True:
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                try:
                    self._conn = await self._open()
                except AmiAuthError as exc:
                    logger.error("%s", exc)
                except AmiError as exc:
                    logger.info("AMI reconnect attempt %d failed: %s", attempt, exc)
                else:
                    break
            self._state = ConnectionState.CONNECTED
            self.reconnects += 1
            logger.info("AMI reconnected to %s", self._where)
            self._spawn(self._run_reconnect_hooks())

    async def _watch(self, conn: AmiProtocol) -> str:
        """Return, with the reason, once ``conn`` is lost or stops answering Pings."""
        while True:
            try:
                async with asyncio.timeout(self._ping_interval):
                    await conn.lost.wait()
                return "closed by Asterisk"
            except TimeoutError:
                pass
            try:
                await self._ping(conn, self._ping_timeout)
            except AmiTimeout:
                return f"no answer to Ping within {self._ping_timeout:g} s, half-open"
            except AmiError as exc:
                return str(exc)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": a delay in [d/2, d]."""
        delay = min(self._reconnect_max_delay, self._reconnect_initial_delay * 2**attempt)
        return self._rng.uniform(delay / 2, delay)

    async def _run_reconnect_hooks(self) -> None:
        for hook in list(self._reconnect_hooks):
            try:
                await hook()
            except Exception:
                logger.exception("AMI on_reconnect hook failed")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _check_custom_device(device: str) -> None:
    check_value("device", device)
    if not device.startswith("Custom:") or any(c in device for c in "()"):
        raise AmiValueError(f"only Custom: devices can be set (func_devstate), not {device!r}")


def _check_db_path(field: str, value: str) -> None:
    # Inside DB_DELETE(...) a parenthesis would end the argument early (pbx_functions.c
    # func_args), and an empty part or "//" addresses another key (func_db.c warns).
    check_value(field, value)
    if not value or any(c in value for c in "()") or value.startswith("/") or "//" in value:
        raise AmiValueError(f"not an astdb {field}: {value!r}")


def _refuse_raw_originate(name: str) -> None:
    # A synchronous Originate blocks the manager session until the call is answered
    # (main/manager.c action_originate), and panoramisk's Action.multi fails on a reply
    # to an Originate without an Async field; originate() always sends Async: true.
    if name.lower() == "originate":
        raise AmiValueError("send Originate with AmiClient.originate(), which makes it Async")
