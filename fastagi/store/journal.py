"""The local event journal: history events that PostgreSQL could not take, kept on disk.

Theory of operation. While PostgreSQL is down the alarm service appends each history
event here, one JSON line per event, with one ``os.write`` and one ``os.fsync`` (in an
executor thread: the event loop never waits on the disk). When PostgreSQL answers
again, :meth:`Journal.replay` writes the journalled events to it in order, in batches,
each event with ``INSERT ... ON CONFLICT (event_id) DO NOTHING``: a replay that is
interrupted (the database goes away again, the server dies) and repeated writes each
event once. After the replay, or its failure, the lines written are cut from the journal
(what remains is written to a temporary file, fsync'd and renamed over it), so the
journal holds only what is still to be written, plus what was appended meanwhile.

Two other kinds of line:

- ``{"rekey": {"from": -123, "to": 42, "merged": false}}``: an alarm raised while
  PostgreSQL was down had the provisional id -123; its row is 42 now. Events of -123 are
  written as 42's (``merged``: 42 existed already, created by another server, so our
  ``activated`` becomes a ``retriggered``). A rekey line is written (and fsync'd) before
  the events it maps, so a crash in between loses no mapping.
- a torn last line (a crash in the middle of a write): skipped with a warning; the next
  append starts on a new line.

If the journal itself cannot be written (disk full, directory unwritable), the event is
kept in memory, up to ``memory_limit`` events, and an error is logged once per outage:
the event reaches PostgreSQL only if this process lives until it returns.

A torn or unreadable line is dropped by the compaction after the next replay; the
events around it are not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from fastagi.config import JournalSettings
from fastagi.domain.events import EventKind, HistoryEvent

logger = logging.getLogger(__name__)

JOURNAL_FILE = "events.jsonl"
# A provisional alarm's events carry this detail once written under a real alarm id.
PROVISIONAL_DETAIL = "provisional_alarm_id"


class ReplayStore(Protocol):
    async def replay_events(self, events: Sequence[HistoryEvent]) -> int: ...


@dataclass(frozen=True)
class Rekey:
    """A provisional alarm id and the alarm row it became."""

    provisional: int
    alarm_id: int
    merged: bool  # the row existed already (another server raised the key's alarm)


@dataclass
class _Entry:
    event: HistoryEvent | None  # None: a rekey line
    rekey: Rekey | None
    end: int  # byte offset just after the line


@dataclass(frozen=True)
class ReplayResult:
    written: int  # new rows in PostgreSQL
    replayed: int  # events sent (written or already there)
    held: int  # events of provisional alarms without a row yet, left in the journal


class Journal:
    """Append-only, fsync'd JSON lines in ``settings.directory``. One per server."""

    def __init__(self, settings: JournalSettings) -> None:
        self._settings = settings
        self._disk = settings.directory is not None
        self.path = (settings.directory or Path()) / JOURNAL_FILE
        self._fd: int | None = None
        self._lock = asyncio.Lock()  # one file operation at a time, appends in order
        self._replaying = asyncio.Lock()  # one replay at a time: it rewrites the file
        self._memory: deque[HistoryEvent] = deque()
        self._rekeys: dict[int, Rekey] = {}
        self._failing = False
        self._dropped = 0
        self._pending: bool | None = None  # unknown until the file is looked at

    # -- appending -------------------------------------------------------------------------

    async def append(self, event: HistoryEvent) -> bool:
        """Journal one event, durably; False when only memory holds it (or it was lost).

        Never raises: an event that cannot be journalled is logged, not fatal.
        """
        line = _line({"event": event.to_dict()})
        async with self._lock:
            self._pending = True
            if not self._disk:
                self._keep_in_memory(event, None)
                return False
            try:
                await asyncio.to_thread(self._write, line)
            except OSError as exc:
                self._keep_in_memory(event, exc)
                return False
            if self._failing:
                self._failing = False
                logger.warning("event journal %s writable again", self.path)
            return True

    async def append_rekey(self, rekey: Rekey) -> None:
        """Note that a provisional alarm id became a row (before its events are written)."""
        self._rekeys[rekey.provisional] = rekey
        line = _line(
            {"rekey": {"from": rekey.provisional, "to": rekey.alarm_id, "merged": rekey.merged}}
        )
        async with self._lock:
            if not self._disk:
                return
            try:
                await asyncio.to_thread(self._write, line)
            except OSError as exc:
                # Kept in memory (self._rekeys): enough while this process lives.
                logger.error("cannot journal the row of provisional alarm: %s", exc)

    def _keep_in_memory(self, event: HistoryEvent, exc: OSError | None) -> None:
        if exc is not None and not self._failing:
            self._failing = True
            logger.error(
                "cannot write the event journal %s (%s); keeping events in memory", self.path, exc
            )
        if len(self._memory) < self._settings.memory_limit:
            self._memory.append(event)
        else:
            self._dropped += 1
            logger.error("event journal and memory full; lost: %s", event.to_dict())

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and _last_byte(self.path, size) != b"\n":
                    # A torn last line: end it, so the next event starts on a line of its own.
                    _write_all(fd, b"\n")
                    os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def _write(self, data: bytes) -> None:
        fd = self._open()
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            # A partial line (disk full in the middle) would glue onto the next one.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            self._close_fd()
            raise

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # -- reading ---------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Whether events may be waiting (True until a replay has found none)."""
        return self._pending is not False or bool(self._memory)

    def mapped(self, provisional: int) -> bool:
        """Whether the provisional alarm id is known to have become a row."""
        return provisional in self._rekeys

    @property
    def on_disk(self) -> bool:
        """Whether events go to a file ([journal] directory set)."""
        return self._disk

    @property
    def in_memory(self) -> int:
        """Events held in memory only (the journal could not be written)."""
        return len(self._memory)

    @property
    def dropped(self) -> int:
        """Events lost because neither the journal nor memory could hold them."""
        return self._dropped

    async def events(self) -> list[HistoryEvent]:
        """What waits to be written, journal then memory, as written (not rekeyed)."""
        async with self._lock:
            entries = await asyncio.to_thread(self._read)
        return [e.event for e in entries if e.event is not None] + list(self._memory)

    def _read(self) -> list[_Entry]:
        if not self._disk:
            return []
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            logger.error("cannot read the event journal %s: %s", self.path, exc)
            return []
        entries: list[_Entry] = []
        offset = 0
        for number, raw in enumerate(data.splitlines(keepends=True), 1):
            offset += len(raw)
            if not raw.strip():
                continue
            entry = _parse(raw, offset)
            if entry is None:
                torn = not raw.endswith(b"\n")
                logger.warning(
                    "event journal %s: skipped %s line %s",
                    self.path,
                    "a torn last" if torn else "an unreadable",
                    number,
                )
                entries.append(_Entry(None, None, offset))  # dropped by the next compaction
                continue
            if entry.rekey is not None:
                self._rekeys.setdefault(entry.rekey.provisional, entry.rekey)
            entries.append(entry)
        return entries

    # -- replaying -------------------------------------------------------------------------

    async def replay(
        self, store: ReplayStore, *, live: frozenset[int] = frozenset()
    ) -> ReplayResult:
        """Write what waits to PostgreSQL, once each; cut it from the journal.

        ``live``: provisional ids of alarms still without a row (raised while the
        database was down, not yet promoted): their events stay in the journal. Events of
        a provisional id that is neither mapped nor live (a previous run died before its
        alarm got a row) are written without an alarm id. Raises what the store raises;
        whatever was written before stays written and is cut from the journal.
        """
        async with self._replaying:
            return await self._replay(store, live)

    async def _replay(self, store: ReplayStore, live: frozenset[int]) -> ReplayResult:
        async with self._lock:
            entries = await asyncio.to_thread(self._read)
        written = replayed = 0
        held: list[_Entry] = []
        rekeys: list[_Entry] = []
        cut = 0  # the journal's bytes before this are written, skipped, or in held/rekeys
        batch: list[tuple[_Entry, HistoryEvent]] = []
        try:
            for entry in entries:
                event = None if entry.event is None else self._resolve(entry.event, live)
                if event is None:
                    if entry.rekey is not None:
                        rekeys.append(entry)
                    elif entry.event is not None:
                        held.append(entry)
                    if not batch:
                        cut = entry.end
                    continue
                batch.append((entry, event))
                if len(batch) >= self._settings.replay_batch:
                    written += await store.replay_events([e for _, e in batch])
                    replayed += len(batch)
                    cut = batch[-1][0].end
                    batch.clear()
            if batch:
                written += await store.replay_events([e for _, e in batch])
                replayed += len(batch)
                batch.clear()
            if entries:
                cut = entries[-1].end  # all written, or in held / rekeys
            memory_written, memory_replayed = await self._replay_memory(store, live)
            written += memory_written
            replayed += memory_replayed
        finally:
            if cut:
                await self._compact(
                    cut,
                    [e for e in held if e.end <= cut],
                    [e for e in rekeys if e.end <= cut],
                )
        async with self._lock:
            if not held and not self._memory and self._file_empty():
                self._pending = False
        return ReplayResult(written, replayed, len(held))

    async def _replay_memory(self, store: ReplayStore, live: frozenset[int]) -> tuple[int, int]:
        """The events that only memory holds (the journal could not be written)."""
        written = replayed = 0
        while self._memory:
            event = self._resolve(self._memory[0], live)
            if event is None:
                break
            written += await store.replay_events([event])
            replayed += 1
            self._memory.popleft()
        return written, replayed

    def _resolve(self, event: HistoryEvent, live: frozenset[int]) -> HistoryEvent | None:
        alarm_id = event.alarm_id
        if alarm_id is None or alarm_id > 0:
            return event
        rekey = self._rekeys.get(alarm_id)
        if rekey is None:
            if alarm_id in live:
                return None
            details = {**event.details, PROVISIONAL_DETAIL: alarm_id}
            return replace(event, alarm_id=None, details=details)
        kind = event.kind
        if rekey.merged and kind is EventKind.ACTIVATED:
            kind = EventKind.RETRIGGERED
        return replace(
            event,
            alarm_id=rekey.alarm_id,
            kind=kind,
            details={**event.details, PROVISIONAL_DETAIL: alarm_id, "merged": rekey.merged},
        )

    async def _compact(self, cut: int, keep: Sequence[_Entry], rekeys: Sequence[_Entry]) -> None:
        """Drop the first ``cut`` bytes of the journal but the ``keep`` lines in them; the
        ``rekeys`` lines too, unless events remain that they may map."""
        async with self._lock:
            await asyncio.to_thread(
                self._rewrite, cut, [_entry_line(e) for e in keep], [_entry_line(e) for e in rekeys]
            )

    def _rewrite(self, cut: int, keep: list[bytes], rekeys: list[bytes]) -> None:
        if not self._disk:
            return
        try:
            data = self.path.read_bytes()
        except OSError:
            return  # nothing was read from it either
        tail = data[cut:]
        if keep or tail.strip():
            keep = rekeys + keep
        rest = b"".join(keep) + tail
        temporary = self.path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, rest)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._close_fd()  # appends go to the new file from now on
        os.replace(temporary, self.path)
        _fsync_dir(self.path.parent)

    def _file_empty(self) -> bool:
        if not self._disk:
            return True
        try:
            return self.path.stat().st_size == 0
        except OSError:
            return True

    async def close(self) -> None:
        async with self._lock:
            self._close_fd()


# -- lines ---------------------------------------------------------------------------------


def _line(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def _parse(raw: bytes, end: int) -> _Entry | None:
    if not raw.endswith(b"\n"):
        return None  # torn: the write of this line never finished
    try:
        payload = json.loads(raw)
        if "rekey" in payload:
            r = payload["rekey"]
            return _Entry(None, Rekey(int(r["from"]), int(r["to"]), bool(r["merged"])), end)
        return _Entry(HistoryEvent.from_dict(payload["event"]), None, end)
    except (ValueError, KeyError, TypeError):
        return None


def _entry_line(entry: _Entry) -> bytes:
    if entry.rekey is not None:
        r = entry.rekey
        return _line({"rekey": {"from": r.provisional, "to": r.alarm_id, "merged": r.merged}})
    assert entry.event is not None
    return _line({"event": entry.event.to_dict()})


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _last_byte(path: Path, size: int) -> bytes:
    with path.open("rb") as file:
        file.seek(size - 1)
        return file.read(1)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
