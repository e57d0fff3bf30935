"""The one way history is written: :class:`HistoryRecorder`.

Whoever acts records its own events here (the alarm service, a paging loop, the lamps,
the notifier, the emergency caller, the call flows): nobody relays another's history.
An event goes to PostgreSQL with a deadline; when PostgreSQL does not take it (or is
known to be down) it goes to the local journal (fastagi/store/journal.py, fsync'd),
which the alarm service replays when PostgreSQL is back, each event once (its
``event_id``). Events of provisional alarms (negative ids) have no row to refer to yet
and always wait in the journal.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from fastagi.alarms.outage import Outage
from fastagi.domain.events import HistoryEvent
from fastagi.store.history import HistoryStore
from fastagi.store.journal import Journal

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayFigures:
    replayed: int
    written: int
    seconds: float


class HistoryRecorder:
    def __init__(
        self,
        history: HistoryStore,
        journal: Journal,
        *,
        timeout: float,
        outage: Outage | None = None,
    ) -> None:
        """``timeout``: how long a write may take before the event is journalled instead
        (``[journal] write_timeout``). ``outage``: PostgreSQL's availability as seen by
        this server, shared with the alarm service."""
        self._history = history
        self.journal = journal
        self.outage = outage or Outage()
        self.timeout = timeout

    async def record(self, event: HistoryEvent) -> None:
        """Append a history event; journalled when PostgreSQL does not take it. Never
        raises: a flow or a loop goes on whatever happens to the history."""
        if event.alarm_id is None or event.alarm_id > 0:
            try:
                await self.outage.call(
                    f"record {event.kind}", lambda: self._history.append_event(event), self.timeout
                )
            except Exception as exc:
                logger.debug("%s event journalled: %r", event.kind, exc)
            else:
                return
        await self.journal.append(event)

    async def replay(self, *, live: frozenset[int] = frozenset()) -> ReplayFigures:
        """Write what waits in the journal; ``live``: provisional alarms still without a
        row, whose events stay. Raises what the store raises."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await self.journal.replay(self._history, live=live)
        figures = ReplayFigures(result.replayed, result.written, loop.time() - started)
        if figures.replayed:
            logger.warning(
                "replayed %s journalled events (%s new) in %.2f s",
                figures.replayed,
                figures.written,
                figures.seconds,
            )
        return figures

    async def close(self) -> None:
        """Write what waits if PostgreSQL answers, then close the journal."""
        if not self.outage.down and self.journal.pending:
            try:
                await asyncio.wait_for(self.journal.replay(self._history), self.timeout)
            except Exception as exc:
                logger.warning("journal left for the next start: %r", exc)
        await self.outage.close()
        await self.journal.close()
