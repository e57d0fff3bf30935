"""BLF lamps: custom device states that phones watch through dialplan hints.

``Custom:PANIC`` is lit while any alarm is active and ``Custom:PANIC_<department id>``
while that department's is (the hints are in extensions_custom.conf,
``[fastagi-panic-hints]``). func_devstate.c keeps custom states in astdb, so they survive an
Asterisk restart, and a lamp left lit by a server that died stays lit: the first
``update`` of a server therefore sets every lamp it knows, on or off. After an AMI
reconnection (Asterisk restarted, or the network dropped while an alarm started or ended)
every lamp is set again.

Each change is recorded in the history (``lamp_changed``) by the lamps themselves, with the
id of the alarm whose activation or deactivation caused it when there is one.

Lamps are set by :meth:`Lamps.update` (and :meth:`Lamps.reapply`), and updates coalesce:
the alarms are read under the lamps' lock, so a snapshot is never applied after a newer
one, and one read and one apply serve every update asked for before the read began. 200
alarms activated at once set their lamps in a few applies instead of 200 in a row, each
waiting for its AMI replies; the changes of one apply are sent together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from fastagi.ami import AmiClient, AmiError
from fastagi.config import AlarmSettings
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.rules import lamp_states

logger = logging.getLogger(__name__)


class HasDepartment(Protocol):
    """What lamps need of an alarm (``fastagi.domain.alarm.Alarm`` has it)."""

    @property
    def department_id(self) -> int | None: ...


class Cause(HasDepartment, Protocol):
    """An alarm whose activation or deactivation a lamp change follows."""

    @property
    def id(self) -> int: ...

    @property
    def extension(self) -> str: ...

    @property
    def department_name(self) -> str: ...


@dataclass(frozen=True)
class LampChange:
    device: str
    state: str
    previous: str | None  # None: not set by this server before


Recorder = Callable[[HistoryEvent], Awaitable[None]]


class Lamps:
    """Sets lamps over AMI, sending only what changed since the last apply."""

    def __init__(
        self,
        ami: AmiClient,
        settings: AlarmSettings,
        *,
        record: Recorder,
        instance_id: str,
    ) -> None:
        self._ami = ami
        self._settings = settings
        self._record = record
        self._instance_id = instance_id
        self._applied: dict[str, str] = {}  # what Asterisk has, as far as we know
        self._active: tuple[int | None, ...] | None = None  # None: never applied
        self._known: frozenset[int] = frozenset()
        # Updates asked for, and the last of them an apply has served (see update()).
        self._asked = 0
        self._served = 0
        self._waiting_causes: list[Cause] = []
        self._lock = asyncio.Lock()  # applies never interleave
        self._remove_hook = ami.on_reconnect(self._reapply_hook)

    async def update(
        self,
        read_active: Callable[[], Awaitable[Collection[HasDepartment]]],
        known_departments: Iterable[int] = (),
        *,
        causes: Collection[Cause] = (),
    ) -> list[LampChange]:
        """Light the lamps of the alarms ``read_active()`` returns, read after this call
        began, and put out the others; record and return what was set.

        ``known_departments`` are department ids whose lamps are put out when no alarm of
        theirs is active (once known, a department stays known). A lamp that AMI failed to
        set is left out of the result and tried again at the next apply. ``causes``: the
        alarms whose activation or deactivation this follows; a change of one of their
        lamps is recorded with that alarm's id (without a cause, with none).

        Calls made meanwhile share one read and one apply: the changes are returned (and
        recorded, with every sharer's ``causes``) by the call that made them, the others
        return []. Raises what ``read_active`` raises.
        """
        self._asked += 1
        ticket = self._asked
        self._known |= frozenset(known_departments)
        self._waiting_causes.extend(causes)
        async with self._lock:
            if self._served >= ticket:
                return []  # an apply that read after this call began has run
            serves = self._asked
            shared, self._waiting_causes = self._waiting_causes, []
            try:
                active = await read_active()
            except BaseException:
                self._waiting_causes[:0] = shared
                raise
            self._active = tuple(alarm.department_id for alarm in active)
            changes = await self._apply_locked()
            self._served = serves
        await self._record_changes(changes, shared)
        return changes

    async def reapply(self) -> list[LampChange]:
        """Set every lamp again, whatever we think Asterisk has (after a reconnection)."""
        async with self._lock:
            if self._active is None:
                return []
            self._applied.clear()
            changes = await self._apply_locked()
        await self._record_changes(changes, ())
        return changes

    async def _reapply_hook(self) -> None:
        await self.reapply()

    def close(self) -> None:
        self._remove_hook()

    @property
    def applied(self) -> dict[str, str]:
        return dict(self._applied)

    def lit_for(self, alarm: HasDepartment) -> bool:
        """Whether every lamp ``alarm`` lights is on as far as this server knows: it set
        them on and has not put them out since (a set that failed is forgotten)."""
        on = self._settings.lamp_state
        return all(self._applied.get(lamp) == on for lamp in self._lamps_of(alarm))

    async def _apply_locked(self) -> list[LampChange]:
        settings = self._settings
        # Departments that had a lamp lit stay in the set, so their lamp is put out later.
        self._known |= frozenset(d for d in self._active or () if d is not None)
        wanted = lamp_states(
            self._active or (),
            sorted(self._known),
            lamp_device=settings.lamp_device,
            department_prefix=settings.department_lamp_prefix,
            on_state=settings.lamp_state,
        )
        due = [
            (device, state)
            for device, state in wanted.items()
            if self._applied.get(device) != state
        ]
        # Sent together: AMI answers each by its ActionID (manager.c), and the lamps of one
        # apply are distinct devices, so their order does not matter.
        outcomes = await asyncio.gather(
            *(self._ami.set_device_state(device, state) for device, state in due),
            return_exceptions=True,
        )
        changes: list[LampChange] = []
        for (device, state), outcome in zip(due, outcomes, strict=True):
            if isinstance(outcome, AmiError):
                # Not fatal: the next apply, or reapply after the reconnection, retries.
                self._applied.pop(device, None)
                logger.warning("cannot set lamp %s to %s: %s", device, state, outcome)
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            changes.append(LampChange(device, state, self._applied.get(device)))
            self._applied[device] = state
        return changes

    async def _record_changes(self, changes: list[LampChange], causes: Collection[Cause]) -> None:
        for change in changes:
            owner = next((a for a in causes if change.device in self._lamps_of(a)), None)
            await self._record(
                HistoryEvent(
                    EventKind.LAMP_CHANGED,
                    owner.id if owner else None,
                    owner.extension if owner else None,
                    owner.department_name if owner else None,
                    {
                        "device": change.device,
                        "state": change.state,
                        "previous": change.previous,
                        "instance": self._instance_id,
                    },
                )
            )

    def _lamps_of(self, alarm: HasDepartment) -> set[str]:
        """The lamps an alarm lights. Only their changes belong to its history: the same
        apply may also put out another department's lamp, or light one of an alarm that
        started meanwhile."""
        lamps = {self._settings.lamp_device}
        if alarm.department_id is not None:
            lamps.add(f"{self._settings.department_lamp_prefix}{alarm.department_id}")
        return lamps
