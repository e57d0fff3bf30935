"""BLF lamps: custom device states that phones watch through dialplan hints.

``Custom:PANIC`` is lit while any alarm is active and ``Custom:PANIC_<department id>``
while that department's is (the hints are in extensions_custom.conf,
``[fastagi-panic-hints]``). func_devstate.c keeps custom states in astdb, so they survive an
Asterisk restart, and a lamp left lit by a server that died stays lit: the first
``apply`` of a server therefore sets every lamp it knows, on or off. After an AMI
reconnection (Asterisk restarted, or the network dropped while an alarm started or ended)
every lamp is set again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from fastagi.ami import AmiClient, AmiError
from fastagi.config import AlarmSettings
from fastagi.domain.rules import lamp_states

logger = logging.getLogger(__name__)


class HasDepartment(Protocol):
    """What lamps need of an alarm (``fastagi.store.alarms.Alarm`` has it)."""

    @property
    def department_id(self) -> int | None: ...


@dataclass(frozen=True)
class LampChange:
    device: str
    state: str
    previous: str | None  # None: not set by this server before


ChangeListener = Callable[[list[LampChange]], Awaitable[None]]


class Lamps:
    """Sets lamps over AMI, sending only what changed since the last apply."""

    def __init__(
        self,
        ami: AmiClient,
        settings: AlarmSettings,
        *,
        on_reapplied: ChangeListener | None = None,
    ) -> None:
        self._ami = ami
        self._settings = settings
        self._on_reapplied = on_reapplied
        self._applied: dict[str, str] = {}  # what Asterisk has, as far as we know
        self._active: tuple[int | None, ...] | None = None  # None: never applied
        self._known: frozenset[int] = frozenset()
        self._lock = asyncio.Lock()  # applies never interleave
        self._remove_hook = ami.on_reconnect(self._reapply_hook)

    def set_listener(self, listener: ChangeListener | None) -> None:
        """Who hears of the changes made by :meth:`reapply` (the service records them)."""
        self._on_reapplied = listener

    async def apply(
        self, active: Collection[HasDepartment], known_departments: Iterable[int] = ()
    ) -> list[LampChange]:
        """Light the lamps of ``active`` alarms and put out the others; return what was set.

        ``known_departments`` are department ids whose lamps are put out when no alarm of
        theirs is active (once known, a department stays known). A lamp that AMI failed to
        set is left out of the result and tried again at the next apply.
        """
        async with self._lock:
            self._active = tuple(alarm.department_id for alarm in active)
            self._known |= frozenset(known_departments)
            return await self._apply_locked()

    async def reapply(self) -> list[LampChange]:
        """Set every lamp again, whatever we think Asterisk has (after a reconnection)."""
        async with self._lock:
            if self._active is None:
                return []
            self._applied.clear()
            changes = await self._apply_locked()
        if changes and self._on_reapplied is not None:
            await self._on_reapplied(changes)
        return changes

    async def _reapply_hook(self) -> None:
        await self.reapply()

    def close(self) -> None:
        self._remove_hook()

    @property
    def applied(self) -> dict[str, str]:
        return dict(self._applied)

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
        changes: list[LampChange] = []
        for device, state in wanted.items():
            previous = self._applied.get(device)
            if previous == state:
                continue
            try:
                await self._ami.set_device_state(device, state)
            except AmiError as exc:
                # Not fatal: the next apply, or reapply after the reconnection, retries.
                self._applied.pop(device, None)
                logger.warning("cannot set lamp %s to %s: %s", device, state, exc)
                continue
            self._applied[device] = state
            changes.append(LampChange(device, state, previous))
        return changes
