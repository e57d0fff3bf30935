"""The event journal on a real file system, replayed into a store that remembers by
event_id as PostgreSQL's ON CONFLICT (event_id) DO NOTHING does (tests/db has the real
one)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from uuid import UUID

import pytest

from fastagi.config import JournalSettings
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store.journal import JOURNAL_FILE, Journal, Rekey


class FakeStore:
    """Rows by event_id; fails on the ``fail_at``-th call (1-based) when set."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.rows: dict[UUID, HistoryEvent] = {}
        self.calls = 0
        self.fail_at = fail_at

    async def replay_events(self, events: Sequence[HistoryEvent]) -> int:
        self.calls += 1
        if self.calls == self.fail_at:
            raise ConnectionResetError("the database went away mid-replay")
        new = [e for e in events if e.event_id not in self.rows]
        for event in new:
            self.rows[event.event_id] = event
        return len(new)


def cycle(n: int, alarm_id: int | None = 7) -> HistoryEvent:
    return HistoryEvent(EventKind.PAGE_CYCLE, alarm_id, "101", "Ward", {"cycle": n})


def journal(directory: Path, **kwargs: int) -> Journal:
    return Journal(JournalSettings(directory=directory, **kwargs))


async def test_append_is_one_json_line_each_and_replay_writes_each_once(tmp_path: Path) -> None:
    j = journal(tmp_path, replay_batch=3)
    events = [cycle(n) for n in range(1, 11)]
    for event in events:
        assert await j.append(event)
    lines = (tmp_path / JOURNAL_FILE).read_bytes().splitlines()
    assert [json.loads(line)["event"]["event_id"] for line in lines] == [
        str(e.event_id) for e in events
    ]
    store = FakeStore()
    result = await j.replay(store)
    assert (result.written, result.replayed, result.held) == (10, 10, 0)
    assert list(store.rows) == [e.event_id for e in events]  # in order
    assert (tmp_path / JOURNAL_FILE).read_bytes() == b""
    assert not j.pending
    assert (await j.replay(store)).replayed == 0


async def test_interrupted_replay_then_again_writes_each_once(tmp_path: Path) -> None:
    j = journal(tmp_path, replay_batch=4)
    events = [cycle(n) for n in range(1, 11)]
    for event in events:
        await j.append(event)
    store = FakeStore(fail_at=2)  # the first batch of 4 is written, then the store fails
    with pytest.raises(ConnectionResetError):
        await j.replay(store)
    assert len(store.rows) == 4
    assert await j.events() == events[4:]  # what was written is cut from the journal
    result = await j.replay(store)
    assert (result.written, result.replayed) == (6, 6)
    assert sorted(store.rows) == sorted(e.event_id for e in events)


async def test_replay_repeated_from_a_copy_of_the_journal_doubles_nothing(tmp_path: Path) -> None:
    # A crash after the rows were committed but before the journal was cut.
    j = journal(tmp_path)
    events = [cycle(n) for n in range(1, 6)]
    for event in events:
        await j.append(event)
    saved = (tmp_path / JOURNAL_FILE).read_bytes()
    store = FakeStore()
    await j.replay(store)
    (tmp_path / JOURNAL_FILE).write_bytes(saved)
    result = await journal(tmp_path).replay(store)
    assert (result.written, result.replayed) == (0, 5)
    assert len(store.rows) == 5


async def test_torn_last_line_is_skipped_and_the_next_append_starts_a_new_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    j = journal(tmp_path)
    first = cycle(1)
    await j.append(first)
    await j.close()
    torn = json.dumps({"event": cycle(2).to_dict()}).encode()[:40]
    with (tmp_path / JOURNAL_FILE).open("ab") as file:
        file.write(torn)  # the crash: half a line, no newline
    again = journal(tmp_path)  # the next run
    assert await again.events() == [first]
    assert "torn last line 2" in caplog.text
    after = cycle(3)
    await again.append(after)
    assert await again.events() == [first, after]
    store = FakeStore()
    await again.replay(store)
    assert list(store.rows) == [first.event_id, after.event_id]
    assert (tmp_path / JOURNAL_FILE).read_bytes() == b""


async def test_disk_full_keeps_events_in_memory_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.symlink("/dev/full", tmp_path / JOURNAL_FILE)  # every write: ENOSPC
    j = journal(tmp_path, memory_limit=3)
    events = [cycle(n) for n in range(1, 6)]
    for event in events:
        assert not await j.append(event)
    assert caplog.text.count("cannot write the event journal") == 1  # once per outage
    assert j.dropped == 2
    (tmp_path / JOURNAL_FILE).unlink()  # reading /dev/full never ends: the disk has room again
    store = FakeStore()
    await j.replay(store)
    assert list(store.rows) == [e.event_id for e in events[:3]]


async def test_unwritable_directory_keeps_events_in_memory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    j = journal(tmp_path / "file" / "journal")
    event = cycle(1)
    assert not await j.append(event)
    store = FakeStore()
    await j.replay(store)
    assert list(store.rows) == [event.event_id]


async def test_provisional_events_wait_for_their_row_then_are_rekeyed(tmp_path: Path) -> None:
    j = journal(tmp_path)
    activated = HistoryEvent(EventKind.ACTIVATED, -5, "101", "Ward", {"offline": True})
    other = cycle(1, alarm_id=3)
    page = cycle(1, alarm_id=-5)
    for event in (activated, other, page):
        await j.append(event)
    store = FakeStore()
    result = await j.replay(store, live=frozenset({-5}))
    assert (result.replayed, result.held) == (1, 2)
    assert list(store.rows) == [other.event_id]
    assert await j.events() == [activated, page]

    await j.append_rekey(Rekey(-5, 42, merged=True))
    fresh = journal(tmp_path)  # the mapping is on disk too
    result = await fresh.replay(store)
    assert (result.replayed, result.held) == (2, 0)
    rekeyed = store.rows[activated.event_id]
    # Merged into the alarm another server raised: our activation is a re-trigger of it.
    assert (rekeyed.alarm_id, rekeyed.kind) == (42, EventKind.RETRIGGERED)
    assert rekeyed.details["provisional_alarm_id"] == -5
    assert store.rows[page.event_id].alarm_id == 42
    assert (tmp_path / JOURNAL_FILE).read_bytes() == b""


async def test_events_of_a_provisional_alarm_nobody_promoted_lose_only_their_alarm_id(
    tmp_path: Path,
) -> None:
    j = journal(tmp_path)
    page = cycle(1, alarm_id=-9)
    await j.append(page)
    store = FakeStore()
    await j.replay(store)
    written = store.rows[page.event_id]
    assert written.alarm_id is None
    assert written.details["provisional_alarm_id"] == -9


async def test_appends_during_a_replay_stay_in_the_journal(tmp_path: Path) -> None:
    j = journal(tmp_path, replay_batch=1)
    first, late = cycle(1), cycle(2)
    await j.append(first)

    class AppendingStore(FakeStore):
        async def replay_events(self, events: Sequence[HistoryEvent]) -> int:
            await j.append(late)  # a loop journals while the replay runs
            return await super().replay_events(events)

    store = AppendingStore()
    await j.replay(store)
    assert list(store.rows) == [first.event_id]
    assert await j.events() == [late]
    assert j.pending
    await j.replay(FakeStore())
    assert await j.events() == []


async def test_memory_only_journal(tmp_path: Path) -> None:
    j = Journal(JournalSettings(directory=None))
    event = cycle(1)
    assert not await j.append(event)
    assert await j.events() == [event]
    store = FakeStore()
    await j.replay(store)
    assert list(store.rows) == [event.event_id]
    assert not j.pending
