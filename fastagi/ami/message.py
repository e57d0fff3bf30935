"""The one message type the application sees: an AMI response or event.

Headers keep their wire order; lookups ignore case, as Asterisk does (main/manager.c
``astman_get_header`` compares with ``strncasecmp``). A header that repeats (``Variable``,
``Output``, ``ChanVariable``) keeps every value: ``message["Output"]`` is the first one,
``message.get_all("Output")`` all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping


class Message(Mapping[str, str]):
    __slots__ = ("_index", "_keys", "_pairs")

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._pairs: tuple[tuple[str, str], ...] = tuple(pairs)
        index: dict[str, str] = {}
        keys: list[str] = []
        for key, value in self._pairs:
            folded = key.lower()
            if folded not in index:
                index[folded] = value
                keys.append(key)
        self._index = index
        self._keys = tuple(keys)

    def __getitem__(self, key: str) -> str:
        return self._index[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Message):
            return self._pairs == other._pairs
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._pairs)

    def __repr__(self) -> str:
        return f"Message({list(self._pairs)!r})"

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """Every header, repeats included, in wire order."""
        return self._pairs

    def get_all(self, key: str) -> list[str]:
        folded = key.lower()
        return [value for name, value in self._pairs if name.lower() == folded]

    @property
    def event(self) -> str | None:
        """The event name (``Hangup``, ``UserEvent`` ...), or None for a response."""
        return self._index.get("event")

    @property
    def response(self) -> str | None:
        """``Success``, ``Error``, ``Goodbye`` ... for a response; None for most events."""
        return self._index.get("response")

    @property
    def action_id(self) -> str | None:
        return self._index.get("actionid")
