"""Alarms the dialplan raised by itself: what a server reads of them in Asterisk's astdb.

Theory of operation (extensions_custom.conf, ``[fastagi-panic-fallback]``). When no
FastAGI server takes a panic call, the dialplan asks the caller with built-in sounds,
pages ``FASTAGI_PANIC_FALLBACK_DEVICES`` on its own, and leaves one astdb entry per alarm:

    /fastagi-panic-fallback/<id>          <extension>|<epoch>   written once, at the raise
    /fastagi-panic-fallback/<id>/pages    <n>                   pages the dialplan began

``<id>`` is the panic call's UNIQUEID. A server that comes back *adopts* each entry
(fastagi/alarms/fallback.py): it raises the alarm as a panic call would, records a
``triggered_fallback`` event, and only then deletes the entry, which is also what stops
the dialplan's paging loop (it checks the entry before every page).

Everything a server writes for one fallback alarm has an event id derived from ``<id>``
(:meth:`FallbackEntry.event_id`): two servers adopting the same entry, or one adopting it
twice (a crash before the delete), write each event once, since the history insert
ignores an ``event_id`` it has already (fastagi/store/history.py).

Pure: parsing and ids only; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid5

from fastagi.domain.directory import is_extension

#: The astdb family of the entries (``DB(fastagi-panic-fallback/<id>)`` in the dialplan).
FAMILY = "fastagi-panic-fallback"
#: The key, under an entry, of the count of pages the dialplan began.
PAGES_KEY = "pages"
#: The UserEvent the dialplan sends after writing an entry (fields Id, Extension, Epoch).
USER_EVENT = "FastAGIPanicFallback"
#: What an alarm whose caller gave no usable extension is raised for (the panic route's
#: name for a caller without a caller id, fastagi/flows/common.py UNKNOWN_CALLER).
UNKNOWN_EXTENSION = "unknown"
#: What the dialplan writes as ids: a UNIQUEID (``[systemname-]<epoch>.<sequence>``).
#: Anything else in the family is not ours to adopt or delete: it is left, and logged.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,149}$")
# Fixed for good: the ids of events already written depend on it.
_NAMESPACE = UUID("3f0c6a52-5d8e-4c1e-9a49-0d2b6f1e7c11")


@dataclass(frozen=True)
class FallbackEntry:
    """One alarm the dialplan raised, as found in astdb."""

    id: str  # the panic call's UNIQUEID
    extension: str  # digits, or UNKNOWN_EXTENSION
    raised_at: datetime | None  # when the dialplan raised it; None if the value was garbled
    pages: int | None  # pages the dialplan began; None when it did not say (yet)
    value: str  # the entry's value as written, for the history

    @property
    def known_extension(self) -> bool:
        return self.extension != UNKNOWN_EXTENSION

    @property
    def pages_key(self) -> str:
        return f"{self.id}/{PAGES_KEY}"

    def event_id(self, what: str) -> UUID:
        """The id of this fallback alarm's event ``what`` (``"activation"``,
        ``"triggered_fallback"``): the same on every server and every attempt."""
        return uuid5(_NAMESPACE, f"{FAMILY}/{self.id}/{what}")


@dataclass(frozen=True)
class FallbackScan:
    """What one read of the family found."""

    entries: tuple[FallbackEntry, ...]
    # Page counts whose entry is gone: written by the dialplan in the instant after a
    # server deleted the entry (the key to delete, relative to the family).
    orphans: tuple[str, ...]
    # Keys that are not what the dialplan writes; left alone.
    foreign: tuple[str, ...]


def parse_entry(entry_id: str, value: str, pages: str | None) -> FallbackEntry:
    """An entry from its value (``<extension>|<epoch>``) and its page count, as tolerant as
    can be: a garbled value still makes an entry (an unknown extension, no time), since an
    alarm somebody raised must not be dropped for a typo."""
    extension_text, _, epoch_text = value.partition("|")
    extension = extension_text if is_extension(extension_text) else UNKNOWN_EXTENSION
    raised_at = None
    if epoch_text.isascii() and epoch_text.isdigit():
        try:
            raised_at = datetime.fromtimestamp(int(epoch_text), UTC)
        except (OverflowError, OSError, ValueError):
            raised_at = None
    count = int(pages) if pages is not None and pages.isascii() and pages.isdigit() else None
    return FallbackEntry(entry_id, extension, raised_at, count, value)


def parse_tree(tree: Mapping[str, str]) -> FallbackScan:
    """Entries from the family's keys (relative to it: ``<id>``, ``<id>/pages``) and
    values, as AMI's DBGetTree lists them. Oldest raise first."""
    values: dict[str, str] = {}
    pages: dict[str, str] = {}
    foreign: list[str] = []
    for key, value in tree.items():
        entry_id, _, sub = key.partition("/")
        if not _ID.match(entry_id) or sub not in ("", PAGES_KEY):
            foreign.append(key)
        elif sub:
            pages[entry_id] = value
        else:
            values[entry_id] = value
    entries = [parse_entry(i, v, pages.get(i)) for i, v in values.items()]
    entries.sort(key=lambda e: (e.raised_at or datetime.max.replace(tzinfo=UTC), e.id))
    orphans = sorted(f"{i}/{PAGES_KEY}" for i in pages if i not in values)
    return FallbackScan(tuple(entries), tuple(orphans), tuple(sorted(foreign)))
