"""Adopting the alarms the dialplan raised while no server took panic calls.

Theory of operation. When every FastAGI URL fails, the dialplan asks the caller, pages
``FASTAGI_PANIC_FALLBACK_DEVICES`` on its own for a bounded number of times, and leaves
an astdb entry per alarm (fastagi/domain/fallback.py; extensions_custom.conf,
``[fastagi-panic-fallback]``). The entry is the alarm until a server holds it: this
module makes a server that can reach AMI take each entry over, once.

When: at start-up (as soon as AMI is connected), after every AMI reconnection, at once
on the dialplan's ``UserEvent: FastAGIPanicFallback`` (a server that is connected to AMI
but that Asterisk could not reach over AGI), and every ``[alarm] fallback_scan_interval``
seconds as a safety net. Scans of one server never overlap.

Adopting one entry, each step safe to repeat (another server, or this one again after a
crash, may do it too):

1. Already adopted? The entry's activation event id is derived from its id
   (:meth:`FallbackEntry.event_id`); found in the history, the alarm exists (or existed:
   it may have been deactivated since, and must then not be raised again): go to 3.
2. Raise it as the panic route would: ``AlarmService.activate`` for the extension's
   department (or unknown), under the derived event id. A new alarm pages at once and
   its paging loop goes on at its interval; an active alarm of the same key (a second
   server that adopts the same entry, or another trigger) is joined, and the derived id
   keeps the history from saying it twice.
3. Record ``triggered_fallback`` through the HistoryRecorder (derived id; occurred_at is
   when the dialplan raised it; details: its value, the pages it began, how and by whom
   it was adopted).
4. Delete the entry and its page count with ``SetVar DB_DELETE(...)`` (AMI class `call`):
   the dialplan's loop checks the entry before each page, so it stops now. That deletion
   is the handover; nothing else tells the dialplan (see ``[fastagi-panic-fallback-loop]``
   for why).

An entry is deleted only after 2 and 3, so an alarm is never lost between the dialplan
and a server: a server that dies in between leaves the entry for the next scan of any
server. While PostgreSQL is down, step 1 cannot tell and step 2 raises a provisional
alarm (fastagi/alarms/provisional.py) whose events wait in the journal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID

from fastagi.alarms.recorder import HistoryRecorder
from fastagi.ami import AmiActionError, AmiClient, AmiError, Message
from fastagi.domain.directory import Department
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.fallback import FAMILY, USER_EVENT, FallbackEntry, parse_tree
from fastagi.store.history import StoredEvent

logger = logging.getLogger(__name__)

#: The dialplan's global that lists the devices it pages by itself.
DEVICES_VARIABLE = "FASTAGI_PANIC_FALLBACK_DEVICES"


class _Alarm(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def department_name(self) -> str: ...


class _Activation(Protocol):
    @property
    def alarm(self) -> _Alarm: ...

    @property
    def created(self) -> bool: ...


class FallbackAlarms(Protocol):
    """The part of :class:`fastagi.alarms.service.AlarmService` adoption uses."""

    async def lookup(self, extension: str) -> Department | None: ...

    async def activate(
        self,
        extension: str,
        department: Department | None,
        *,
        uniqueid: str,
        event_id: UUID | None = None,
    ) -> _Activation: ...


class EventFinder(Protocol):
    """The part of :class:`fastagi.store.history.HistoryStore` adoption uses."""

    async def find_event(self, event_id: UUID) -> StoredEvent | None: ...


@dataclass(frozen=True)
class Adoption:
    entry: FallbackEntry
    alarm_id: int
    outcome: str  # "created", "joined" (an active alarm of its key), "already adopted"


class FallbackAdopter:
    def __init__(
        self,
        ami: AmiClient,
        alarms: FallbackAlarms,
        history: EventFinder,
        recorder: HistoryRecorder,
        *,
        instance_id: str,
        scan_interval: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._ami = ami
        self._alarms = alarms
        self._history = history
        self._recorder = recorder
        self._instance_id = instance_id
        self._scan_interval = scan_interval
        self._clock = clock
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._reason = "periodic"
        self._reported: set[str] = set()  # problems logged once, not once per scan

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Scan now (AMI must be connected), then at each wake-up and every interval,
        until cancelled. Never raises otherwise."""
        unsubscribe = self._ami.subscribe(self._on_event, "UserEvent")
        remove_hook = self._ami.on_reconnect(self._on_reconnect)
        try:
            await self._check_devices()
            reason = "start-up"
            while True:
                await self.scan(reason)
                reason = await self._next_reason()
        finally:
            unsubscribe()
            remove_hook()

    def _on_event(self, message: Message) -> None:
        if message.event == "UserEvent" and message.get("UserEvent") == USER_EVENT:
            self.wake("user event")

    async def _on_reconnect(self) -> None:
        self.wake("AMI reconnection")

    def wake(self, reason: str) -> None:
        """Scan as soon as the scan in progress (if any) is done."""
        self._reason = reason
        self._wake.set()

    async def _next_reason(self) -> str:
        try:
            async with asyncio.timeout(self._scan_interval):
                await self._wake.wait()
        except TimeoutError:
            return "periodic"
        self._wake.clear()
        reason, self._reason = self._reason, "periodic"
        return reason

    async def _check_devices(self) -> None:
        try:
            devices = await self._ami.get_variable(DEVICES_VARIABLE)
        except AmiError as exc:
            logger.warning("cannot read the dialplan's %s: %s", DEVICES_VARIABLE, exc)
            return
        if not devices:
            logger.warning(
                "the global %s is not set in the dialplan: when no server answers a panic"
                " call, the dialplan raises the alarm but pages nobody until a server is"
                " back (README: FreePBX install)",
                DEVICES_VARIABLE,
            )

    # -- scanning --------------------------------------------------------------------------

    async def scan(self, reason: str) -> list[Adoption]:
        """Adopt every entry of the family; what was adopted. An entry that cannot be
        adopted now (AMI or PostgreSQL failing midway) stays for the next scan."""
        async with self._lock:
            try:
                tree = await self._ami.db_tree(FAMILY)
            except AmiActionError as exc:
                self._report_once(
                    "dbgettree",
                    "cannot list astdb family %s: %s (Asterisk 16.28, 18.14, 19.6, 20 or later"
                    " has DBGetTree; the AMI user needs the `reporting` class)",
                    FAMILY,
                    exc,
                )
                return []
            except AmiError as exc:
                logger.info("fallback scan (%s) skipped: %s", reason, exc)
                return []
            found = parse_tree(tree)
            for key in found.foreign:
                self._report_once(
                    f"foreign {key}", "astdb %s/%s is not a fallback alarm; left alone", FAMILY, key
                )
            adoptions = []
            for entry in found.entries:
                try:
                    adoptions.append(await self._adopt(entry, reason))
                except Exception:
                    logger.exception(
                        "cannot adopt the dialplan's alarm %s now; it stays in astdb (and the"
                        " dialplan keeps paging) until the next scan",
                        entry.id,
                    )
            for key in found.orphans:
                try:
                    await self._ami.db_delete(FAMILY, key)
                except AmiError as exc:
                    logger.info("cannot delete astdb %s/%s yet: %s", FAMILY, key, exc)
            return adoptions

    async def _adopt(self, entry: FallbackEntry, reason: str) -> Adoption:
        activation_id = entry.event_id("activation")
        prior = await self._find(activation_id)
        if prior is not None and prior.alarm_id is not None:
            adoption = Adoption(entry, prior.alarm_id, "already adopted")
            department = prior.department
        else:
            activation = await self._alarms.activate(
                entry.extension,
                await self._lookup(entry),
                uniqueid=entry.id,
                event_id=activation_id,
            )
            outcome = "created" if activation.created else "joined"
            adoption = Adoption(entry, activation.alarm.id, outcome)
            department = activation.alarm.department_name
        now = self._clock()
        await self._recorder.record(
            HistoryEvent(
                EventKind.TRIGGERED_FALLBACK,
                adoption.alarm_id,
                entry.extension,
                department,
                {
                    "uniqueid": entry.id,
                    "raised_at": entry.raised_at.isoformat() if entry.raised_at else None,
                    "dialplan_pages": entry.pages,
                    "astdb_value": entry.value,
                    "adopted_via": reason,
                    "adopted_after": (
                        round((now - entry.raised_at).total_seconds(), 3)
                        if entry.raised_at
                        else None
                    ),
                    "outcome": adoption.outcome,
                    "instance": self._instance_id,
                },
                event_id=entry.event_id(str(EventKind.TRIGGERED_FALLBACK)),
                occurred_at=entry.raised_at or now,
            )
        )
        # The handover: the dialplan's loop pages no more once the entry is gone.
        await self._ami.db_delete(FAMILY, entry.id)
        await self._ami.db_delete(FAMILY, entry.pages_key)
        logger.warning(
            "adopted the alarm the dialplan raised for extension %s (%s, %s pages by the"
            " dialplan, found by %s): alarm %s, %s",
            entry.extension,
            entry.raised_at.isoformat() if entry.raised_at else "raised at an unknown time",
            "?" if entry.pages is None else entry.pages,
            reason,
            adoption.alarm_id,
            adoption.outcome,
        )
        return adoption

    async def _find(self, event_id: UUID) -> StoredEvent | None:
        """The event if written; None also when PostgreSQL cannot say (then the entry is
        activated: a second alarm beats none)."""
        try:
            return await self._recorder.outage.call(
                "find fallback adoption",
                lambda: self._history.find_event(event_id),
                self._recorder.timeout,
            )
        except Exception as exc:
            logger.warning("cannot tell whether %s was adopted already: %r", event_id, exc)
            return None

    async def _lookup(self, entry: FallbackEntry) -> Department | None:
        if not entry.known_extension:
            return None
        try:
            return await self._alarms.lookup(entry.extension)
        except Exception as exc:
            # As the panic route does: an alarm of unknown department beats none.
            logger.error("cannot look up the department of %s: %r", entry.extension, exc)
            return None

    def _report_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._reported:
            self._reported.add(key)
            logger.error(message, *args)
