"""panoramisk's AMI protocol with the parts that break a life-safety client replaced.

Kept from panoramisk 1.4, because they are the part it gets right:

- ``AMIProtocol.handle_message``: a message whose ActionID belongs to a pending action
  goes to that action, anything else that is an event goes to ``dispatch``;
- ``Action``: ActionID bookkeeping and the rules that say when a reply is complete,
  including multi-message replies (``EventList: start`` ... ``...Complete``, and an
  ``Async`` Originate's ack followed by its ``OriginateResponse`` event);
- ``Message``: the case-insensitive carrier those two work on.

Replaced here:

- ``data_received``: panoramisk decodes each TCP read on its own with errors ignored,
  which corrupts a UTF-8 character split across reads. We frame on ``\\r\\n\\r\\n``
  first (:mod:`fastagi.ami.framing`) and decode whole messages.
- ``send``: panoramisk writes whatever it is given, so a CR/LF in a value injects
  fields, and it logs the whole action (the Login secret included) when a write fails.
  We encode with :func:`~fastagi.ami.framing.encode_action`, which refuses CR/LF, and
  never log field values.
- ``connection_lost`` / ``close``: panoramisk parks actions in flight and re-sends them
  after the next ``FullyBooted`` (a re-sent Originate pages twice), or leaves their
  futures pending forever; it also logs the parked action, secret included. We fail
  them at once with :class:`~fastagi.ami.errors.AmiConnectionLost`.
- An exception while routing one message no longer escapes ``data_received``, where
  asyncio would close the connection (the way an Originate without ``Async`` kills a
  panoramisk connection: ``Action.multi`` reads the missing ``Async`` key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message as _PanoramiskMessage

from fastagi.ami.errors import AmiConnectionLost, AmiProtocolError
from fastagi.ami.framing import FieldValue, FrameDecoder, encode_action, parse_message
from fastagi.ami.message import Message

logger = logging.getLogger(__name__)


class _Routed(_PanoramiskMessage):  # type: ignore[misc]
    """A panoramisk Message that also carries our parsed :class:`Message`."""

    def __init__(self, message: Message) -> None:
        headers: dict[str, Any] = {}
        for key, value in message.pairs:
            # panoramisk's own parser keeps repeated headers as a list; do the same, so
            # its Action rules see what they expect.
            if key in headers:
                previous = headers[key]
                headers[key] = (
                    [*previous, value]
                    if isinstance(previous, list)
                    else [
                        previous,
                        value,
                    ]
                )
            else:
                headers[key] = value
        super().__init__(headers)
        self.parsed = message


def _may_answer_an_action(message: Message) -> bool:
    """Whether panoramisk's routing could hand ``message`` to a pending action: only a
    message carrying an ActionID or a CommandID (panoramisk's ``Message.id``)."""
    return "ActionID" in message or "CommandID" in message


# Events this connection acts on itself, wanted or not.
_OWN_EVENTS = frozenset({"fullybooted", "shutdown"})


def _unwanted(text: str, wanted: frozenset[str]) -> bool:
    """Whether a framed message is an event nobody listens to and no action waits for.

    Most of the stream is the call events of every call on the PBX (a FreePBX site's,
    not only ours): each parsed into a Message and dropped was the largest cost of the
    AMI connection in a storm of calls (docs/performance.md). main/manager.c writes the
    ``Event:`` header first (manager_event's format starts with it), and ``ActionID`` with
    that exact spelling; a message we cannot judge this way is parsed as before.
    """
    if not text.startswith("Event: "):
        return False
    end = text.find("\r\n")
    name = (text[7:] if end < 0 else text[7:end]).lower()
    if name in wanted or name in _OWN_EVENTS:
        return False
    # May answer an action (panoramisk routes by ActionID or CommandID): keep it.
    return "ActionID:" not in text and "CommandID:" not in text


def unwrap(result: Any) -> list[Message]:
    """An action future's result (one panoramisk message or a list) as our messages."""
    items = result if isinstance(result, list) else [result]
    return [item.parsed for item in items]


class AmiProtocol(AMIProtocol):  # type: ignore[misc]
    """One TCP connection to the manager. Created by ``loop.create_connection``."""

    def __init__(
        self,
        on_event: Callable[[Message], None],
        on_lost: Callable[[AmiProtocol], None],
        wanted_events: Callable[[], frozenset[str] | None] = lambda: None,
    ) -> None:
        super().__init__()
        self._decoder = FrameDecoder()
        self._on_event = on_event
        self._on_lost = on_lost
        # The lower-cased names of the events someone listens to, None for all of them.
        # Asked per message: subscriptions come and go while the connection lives.
        self._wanted_events = wanted_events
        # Events left unparsed because nobody listens to them (read by tests).
        self.skipped_events = 0
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.responses: dict[str, Any] = {}
        # handle_message calls ``self.factory.dispatch`` for events: we are our own factory.
        self.factory = self
        self.log = logger
        self.version: str | None = None
        self.lost = asyncio.Event()
        # main/manager.c action_login sends FullyBooted right after a successful login
        # when Asterisk has finished loading (and the user may read ``system``), and
        # broadcasts it when loading finishes later.
        self.fully_booted = asyncio.Event()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's TCPTransport implements the
        # asyncio.Transport interface without inheriting from it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            texts = self._decoder.feed(data)
        except AmiProtocolError as exc:
            logger.error("AMI connection dropped: %s", exc)
            self.abort()
            return
        if self.version is None and self._decoder.banner is not None:
            self.version = self._decoder.banner.partition("/")[2].strip()
        wanted = self._wanted_events()
        for text in texts:
            if wanted is not None and _unwanted(text, wanted):
                self.skipped_events += 1
                continue
            message = Message(parse_message(text))
            if message.event is None and message.response is None:
                continue
            if message.event is not None and not _may_answer_an_action(message):
                # Most of the stream: the events of calls. Routed as panoramisk's
                # handle_message would route them (no pending action has their id),
                # without its copy of every header into a case-insensitive dict.
                if message.event.lower() == "shutdown":
                    self.connection_lost(None)
                self.dispatch_event(message)
                continue
            try:
                self.handle_message(_Routed(message))
            except Exception:
                logger.exception(
                    "AMI message could not be routed",
                    extra={"ami_event": message.event, "ami_response": message.response},
                )

    def connection_lost(self, exc: object) -> None:
        # Also called by handle_message with the ``Shutdown`` event as ``exc``: Asterisk
        # is stopping and will close the socket; treat the connection as gone now.
        if self.lost.is_set():
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._fail_pending("the AMI connection was lost")
        self.lost.set()
        self._on_lost(self)

    # -- panoramisk hooks -----------------------------------------------------------------

    def dispatch(self, message: _Routed) -> None:
        self.dispatch_event(message.parsed)

    def dispatch_event(self, message: Message) -> None:
        if message.event == "FullyBooted":
            self.fully_booted.set()
        self._on_event(message)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def send(self, data: Any, as_list: bool = False) -> Any:
        raise NotImplementedError("use AmiProtocol.request")

    # -- ours -----------------------------------------------------------------------------

    def request(self, action_id: str, fields: list[tuple[str, FieldValue]]) -> Any:
        """Send one action; returns the panoramisk Action whose ``future`` resolves.

        ``fields`` must start with ``("Action", name)``; ``action_id`` is added second.
        Raises AmiValueError before anything is written if a value is unsafe.
        """
        payload = encode_action([fields[0], ("ActionID", action_id), *fields[1:]])
        if self.closed or self.transport is None or self.transport.is_closing():
            raise AmiConnectionLost("no AMI connection")
        headers: dict[str, Any] = {"ActionID": action_id}
        for key, value in fields:
            headers[key] = (
                value
                if isinstance(value, str)
                else (str(value) if isinstance(value, int) else list(value))
            )
        action = Action(headers)
        self.responses[action.id] = action
        self.transport.write(payload)
        return action

    def forget(self, action: Any) -> None:
        """Stop routing replies to ``action`` (its caller gave up waiting)."""
        self.responses.pop(action.id, None)

    def abort(self) -> None:
        """Drop the connection now, without waiting for buffered writes."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail_pending(self, reason: str) -> None:
        pending = {id(action): action for action in self.responses.values()}
        self.responses.clear()
        for action in pending.values():
            if not action.future.done():
                action.future.set_exception(AmiConnectionLost(reason))
