"""EventRouter: each event to the handler of its key, one subscription while any is
registered."""

from __future__ import annotations

from collections.abc import Callable

from fastagi.ami import EventCallback, Message
from fastagi.ami.routing import EventRouter


class Source:
    """Records subscriptions as AmiClient keeps them, and delivers events to them."""

    def __init__(self) -> None:
        self.subscriptions: list[tuple[EventCallback, tuple[str, ...]]] = []

    def subscribe(self, callback: EventCallback, *names: str) -> Callable[[], None]:
        entry = (callback, names)
        self.subscriptions.append(entry)
        return lambda: self.subscriptions.remove(entry)

    def emit(self, event: Message) -> None:
        for callback, _ in list(self.subscriptions):
            callback(event)


def hangup(uniqueid: str) -> Message:
    return Message([("Event", "Hangup"), ("Uniqueid", uniqueid)])


def test_each_event_reaches_only_the_handler_of_its_key() -> None:
    source = Source()
    router = EventRouter(source, lambda event: event.get("Uniqueid"), "Hangup")
    heard: dict[str, list[str | None]] = {"a": [], "b": []}
    router.add("a", lambda event: heard["a"].append(event.get("Uniqueid")))
    router.add("b", lambda event: heard["b"].append(event.get("Uniqueid")))
    for uniqueid in ("a", "b", "c", "a"):
        source.emit(hangup(uniqueid))
    source.emit(Message([("Event", "Hangup")]))  # no key at all
    assert heard == {"a": ["a", "a"], "b": ["b"]}
    # One subscription for both, of the names asked for.
    assert [names for _, names in source.subscriptions] == [("Hangup",)]


def test_subscribed_only_while_a_key_is_registered() -> None:
    source = Source()
    router = EventRouter(source, lambda event: event.get("Uniqueid"), "Hangup")
    assert source.subscriptions == []
    router.add("a", lambda event: None)
    router.add("b", lambda event: None)
    router.discard("a")
    assert len(source.subscriptions) == 1
    router.discard("b")
    router.discard("b")  # twice is harmless
    assert source.subscriptions == []
    router.add("c", lambda event: None)
    assert len(source.subscriptions) == 1
