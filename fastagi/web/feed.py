"""The live board's feed: one LISTEN connection per server, however many browsers watch.

Theory of operation. Every statement that changes what the board shows sends ``NOTIFY
fastagi_board`` (triggers of sql/005_web.sql). The listener only marks the board dirty;
one task recomputes it from PostgreSQL and publishes the new snapshot to every open
stream. A burst of notifications arriving while a snapshot is being read makes one more
read, not one each. A read every ``REFRESH_SECONDS`` regardless is the safety net for a
notification lost with the listening connection; while that connection is lost the
snapshot says ``live = False`` and the browsers say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg

from fastagi.config import AlarmSettings
from fastagi.store.board import BOARD_CHANNEL, Board, BoardStore
from fastagi.store.changes import ChannelListener

logger = logging.getLogger(__name__)

# A fresh read at least this often, notification or not.
REFRESH_SECONDS = 15.0
# After a failed read, wait this long before the next attempt.
RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class Snapshot:
    version: int
    board: Board | None  # None: not read yet, or PostgreSQL does not answer
    live: bool  # the feed hears every change (its LISTEN connection is up)


class BoardFeed:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], settings: AlarmSettings) -> None:
        self._store = BoardStore(pool)
        self._settings = settings
        self._dirty = asyncio.Event()
        self._published = asyncio.Condition()
        self._listener = ChannelListener(
            pool,
            {BOARD_CHANNEL: lambda _payload: self._dirty.set()},
            on_rearmed=self._dirty.set,
            on_lost=self._dirty.set,
        )
        self._task: asyncio.Task[None] | None = None
        self.snapshot = Snapshot(0, None, live=False)
        self.reads = 0

    async def start(self) -> None:
        try:
            await self._listener.start()
        except Exception as exc:
            # The console still starts; the listener is retried by the refresh loop.
            logger.warning("the board cannot listen for changes yet: %r", exc)
        self._dirty.set()
        self._task = asyncio.create_task(self._run(), name="board-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._listener.close()
        # Wake every stream so it sees the feed is closed.
        async with self._published:
            self._published.notify_all()

    @property
    def closed(self) -> bool:
        return self._task is not None and self._task.done()

    async def board(self) -> Board:
        """The board as of now (a page render reads it fresh)."""
        return await self._store.board(
            lamp_device=self._settings.lamp_device,
            department_lamp_prefix=self._settings.department_lamp_prefix,
        )

    async def next_snapshot(self, after: int, timeout: float) -> Snapshot:  # noqa: ASYNC109
        """The first snapshot newer than version ``after``, or the current one after
        ``timeout`` seconds (the stream then sends a keep-alive)."""
        async with self._published:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._published.wait_for(
                        lambda: self.snapshot.version > after or self.closed
                    )
            return self.snapshot

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_SECONDS):
                    await self._dirty.wait()
            self._dirty.clear()
            if not self._listener.armed.is_set() and self._listener.lost_at is None:
                # Never armed (PostgreSQL was down at start-up): try again now.
                with contextlib.suppress(Exception):
                    await self._listener.start()
            try:
                board = await self.board()
            except Exception as exc:
                logger.warning("cannot read the board: %r", exc)
                board = None
                self._dirty.set()
                await self._publish(board)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self.reads += 1
            await self._publish(board)

    async def _publish(self, board: Board | None) -> None:
        async with self._published:
            self.snapshot = Snapshot(
                self.snapshot.version + 1, board, live=self._listener.armed.is_set()
            )
            self._published.notify_all()
