"""Events handed to whoever registered their key, with one subscription for all of them.

A stream per consumer (:meth:`AmiClient.events`) makes every consumer take every event:
with N pages or calls in flight each event goes N times through a queue and a task, and
200 alarms paging together cost 200 x 200 deliveries per burst (docs/performance.md). An
:class:`EventRouter` subscribes once, reads each event's key (the Linkedid of a page, the
Uniqueid of a call) and calls only the handler registered for it: one dictionary lookup
per event. It subscribes while any key is registered and not otherwise, so with nothing in
flight the client does not even parse those events (:meth:`AmiClient.subscribe`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from fastagi.ami.client import EventCallback
from fastagi.ami.message import Message

__all__ = ["EventRouter", "EventSource"]


class EventSource(Protocol):
    """What the router needs of :class:`AmiClient`."""

    def subscribe(self, callback: EventCallback, *names: str) -> Callable[[], None]: ...


class EventRouter:
    """``EventRouter(source, key_of, *names)``: events ``names`` to the handler of
    ``key_of(event)``; ``add`` a handler before the action whose events it wants (an
    Originate), ``discard`` it once done."""

    def __init__(
        self, source: EventSource, key_of: Callable[[Message], str | None], *names: str
    ) -> None:
        self._source = source
        self._key_of = key_of
        self._names = names
        self._handlers: dict[str, EventCallback] = {}
        self._unsubscribe: Callable[[], None] | None = None

    def add(self, key: str, handler: EventCallback) -> None:
        self._handlers[key] = handler
        if self._unsubscribe is None:
            self._unsubscribe = self._source.subscribe(self._route, *self._names)

    def discard(self, key: str) -> None:
        self._handlers.pop(key, None)
        if not self._handlers and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _route(self, event: Message) -> None:
        handler = self._handlers.get(self._key_of(event) or "")
        if handler is not None:
            handler(event)
