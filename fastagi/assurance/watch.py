"""The checks of ``fastagi check``, run by the server on a schedule, and what a run that
keeps failing sets off: the health lamp, an e-mail to the administrators, a history event.

Theory of operation. Every ``[health] interval`` seconds a run of the cheap checks
(``[health] checks``), and every ``slow_interval`` seconds the others as well
(``slow_checks``: the probe call, a prompt played, the mail server's login...), with the
server's pool. The ``ami`` line logs in afresh each run, as the server would after a
reconnection (a removed AMI user or a changed secret leaves the server's own session
up until then); ``ami-session`` is the server's own connection. Each check's last result
is kept (``/healthz``, ``/metrics``), and after each run the site is failing when any
last result is a FAIL: a slow check's FAIL counts until its next run passes.

The failing/passing observations go through a hysteresis (fastagi/domain/health.py).
Once it has settled, each run reports this server's view to PostgreSQL
(fastagi/store/site_health.py), which says whether the site is degraded (any server's
fresh report says so) and whether this report changed it: the server whose report
changes the site's state records ``health_degraded``/``health_recovered`` in that same
transaction and e-mails ``[notify] admin_emails``; the others only follow. Every server
sets the lamp (``[health] lamp_device``) to the site's state: the same value from each,
so setting it twice changes nothing.

When PostgreSQL cannot be asked, the server goes by its own view: it sets the lamp, and
tells a change itself (e-mail, and the event through the journal). Two servers then both
tell it: said twice rather than not at all. Once PostgreSQL answers again, a server that
told something the site's state now contradicts tells the correction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from fastagi.ami import AmiClient, AmiError
from fastagi.assurance.result import CheckResult, Finding, Status
from fastagi.assurance.runner import Check, Context, run_checks, selected
from fastagi.assurance.suite import CHECKS
from fastagi.config import Settings
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.health import Health, Hysteresis
from fastagi.notify.message import Notice
from fastagi.store.site_health import Failing, SiteHealthStore

logger = logging.getLogger(__name__)

Record = Callable[[HistoryEvent], Awaitable[None]]
# How long a report to PostgreSQL may take before the server goes by its own view.
REPORT_TIMEOUT = 5.0
HEALTHY_LAMP = "NOT_INUSE"


class NoticeSender(Protocol):
    def submit_notice(self, notice: Notice) -> int: ...


async def _ami_session(ami: AmiClient) -> Finding:
    if ami.connected:
        return Finding.ok(f"connected ({ami.asterisk_version or '?'})")
    return Finding.fail(
        f"the server's AMI connection is {ami.state.value}",
        "the server reconnects by itself; its log says why it cannot (is Asterisk"
        " running? a refused login: [ami] username and secret)",
    )


def server_checks(ami: AmiClient) -> tuple[Check, ...]:
    """Checks only a running server has: its own connections."""

    async def ami_session(_context: Context) -> Finding:
        return await _ami_session(ami)

    return (Check("ami-session", "the server's own AMI connection is up", ami_session),)


@dataclass(frozen=True)
class Observed:
    """A check's last result and when it came (wall clock, and monotonic for its age)."""

    result: CheckResult
    at: datetime
    monotonic: float

    def age(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.monotonic

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        return {
            **self.result.to_dict(),
            "at": self.at.isoformat(),
            "age": round(self.age(now), 3),
        }


class HealthMonitor:
    def __init__(
        self,
        settings: Settings,
        *,
        pool: asyncpg.Pool[asyncpg.Record],
        ami: AmiClient,
        notifier: NoticeSender,
        record: Record,
        instance_id: str,
        extra_checks: Sequence[Check] = (),
    ) -> None:
        """``extra_checks``: more checks that ``[health]`` may name, beside those of
        ``fastagi check`` and the server's own."""
        self._settings = settings
        self._health = settings.health
        self._pool = pool
        self._ami = ami
        self._notifier = notifier
        self._record = record
        self._site = SiteHealthStore(pool)
        self.instance_id = instance_id
        self._checks = (*CHECKS, *server_checks(ami), *extra_checks)
        # Unknown names stop the server at start-up, not at the first run.
        selected(self._checks, [*self._health.checks, *self._health.slow_checks])
        # A run of cheap checks bounds each by [health] timeout, one with slow checks by
        # [check] timeout (the probe call alone takes 7 s).
        self._quick_settings = settings.model_copy(
            update={"check": settings.check.model_copy(update={"timeout": self._health.timeout})}
        )
        self._hysteresis = Hysteresis(self._health.raise_after, self._health.clear_after)
        self.results: dict[str, Observed] = {}
        self.runs = 0
        self.last_run_seconds = 0.0
        # The site's state as PostgreSQL said it last (None: not yet asked, or not settled).
        self.site_degraded: bool | None = None
        self._lamp_shown: str | None = None
        # The state people were last told of, as far as this server knows (by whichever
        # server, through PostgreSQL), and whether this server told it itself because
        # PostgreSQL could not be asked.
        self._told: bool | None = None
        self._told_locally = False
        self._ran = asyncio.Event()
        self._unhook = ami.on_reconnect(self._forget_lamp)

    # -- what others read ----------------------------------------------------------------

    @property
    def state(self) -> Health:
        """This server's view, after the hysteresis."""
        return self._hysteresis.state

    @property
    def failing(self) -> list[CheckResult]:
        return [o.result for o in self.results.values() if o.result.status is Status.FAIL]

    async def next_run(self) -> None:
        """Return once the run after this moment has ended."""
        await self._ran.wait()

    # -- the schedule ----------------------------------------------------------------------

    async def run(self) -> None:
        """Run checks until cancelled: the cheap ones each interval, all of them each slow
        interval (the first time after one interval: the server has just started)."""
        loop = asyncio.get_running_loop()
        next_slow = loop.time() + self._health.interval
        try:
            while True:
                started = loop.time()
                names = list(self._health.checks)
                if started >= next_slow:
                    names += self._health.slow_checks
                    next_slow = started + self._health.slow_interval
                try:
                    await self.run_once(names)
                except Exception:
                    logger.exception("scheduled checks: a run failed")
                await asyncio.sleep(max(0.0, started + self._health.interval - loop.time()))
        finally:
            self._unhook()

    async def run_once(self, names: Sequence[str]) -> Health | None:
        """One run of the named checks and what follows from it; the new state of this
        server's view when it changed."""
        try:
            return await self._run_once(names)
        finally:
            ran, self._ran = self._ran, asyncio.Event()
            ran.set()

    async def _run_once(self, names: Sequence[str]) -> Health | None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        slow = any(name in self._health.slow_checks for name in names)
        settings = self._settings if slow else self._quick_settings
        # No AMI client lent: the "ami" line logs in afresh (see the module's docstring).
        report = await run_checks(settings, self._checks, pool=self._pool, only=names)
        now, wall = time.monotonic(), datetime.now(UTC)
        for result in report.results:
            self.results[result.name] = Observed(result, wall, now)
        self.runs += 1
        self.last_run_seconds = loop.time() - started
        change = self._hysteresis.observe(bool(self.failing))
        if change is not None:
            logger.warning(
                "scheduled checks: this server sees the site %s (%s)",
                change.value,
                ", ".join(r.name for r in self.failing) or "every check passes",
            )
        if self.state is not Health.UNKNOWN:
            await self._settle(self.state is Health.DEGRADED)
        return change

    async def withdraw(self) -> None:
        """The server stops: its report no longer counts towards the site's state."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(REPORT_TIMEOUT):
                await self._site.withdraw(self.instance_id)

    # -- after a run -------------------------------------------------------------------------

    async def _settle(self, degraded: bool) -> None:
        failing = [(r.name, r.message) for r in self.failing]
        try:
            async with asyncio.timeout(REPORT_TIMEOUT):
                site = await self._site.report(
                    self.instance_id,
                    degraded=degraded,
                    failing=failing,
                    stale_after=self._health.stale_after,
                    event_for=self._event,
                )
        except Exception as exc:
            logger.warning("scheduled checks: cannot report to PostgreSQL (%r)", exc)
            self.site_degraded = None
            # People were told the site's state last (or nothing: a healthy start).
            if degraded != bool(self._told):
                await self._tell_locally(degraded)
            await self._show(degraded)
            return
        self.site_degraded = site.degraded
        if site.changed:
            logger.warning("the site is %s", "DEGRADED" if site.degraded else "healthy again")
            if self._told != site.degraded:  # not already told while PostgreSQL was away
                self._mail(site.degraded, site.failing)
        elif self._told_locally and self._told != site.degraded:
            await self._tell_locally(site.degraded, site.failing)
        self._told, self._told_locally = site.degraded, False
        await self._show(site.degraded)

    async def _tell_locally(self, degraded: bool, failing: Sequence[Failing] = ()) -> None:
        found = failing or [Failing(self.instance_id, r.name, r.message) for r in self.failing]
        self._told, self._told_locally = degraded, True
        self._mail(degraded, found if degraded else ())
        try:
            await self._record(self._event(degraded, found if degraded else ()))
        except Exception:
            logger.exception("scheduled checks: cannot record the health event")

    def _event(self, degraded: bool, failing: Sequence[Failing]) -> HistoryEvent:
        return HistoryEvent(
            EventKind.HEALTH_DEGRADED if degraded else EventKind.HEALTH_RECOVERED,
            None,
            None,
            None,
            {
                "instance": self.instance_id,
                "lamp": self._health.lamp_device,
                "failing": [
                    {"check": f.name, "message": f.message, "instance": f.instance_id}
                    for f in failing
                ],
            },
        )

    def _mail(self, degraded: bool, failing: Sequence[Failing]) -> None:
        lamp = self._health.lamp_device
        if degraded:
            names = sorted({f.name for f in failing})
            subject = f"fastagi-panic DEGRADED: {', '.join(names)}"
            lines = [
                "A scheduled check keeps failing: an alarm may not get through in full.",
                f"The health lamp {lamp} is lit.",
                "",
                *(f"FAIL {f.name} ({f.instance_id}): {f.message}" for f in failing),
                "",
                "`fastagi check` on the server says what to do for each line.",
            ]
        else:
            subject = "fastagi-panic recovered: every scheduled check passes"
            lines = [
                "Every scheduled check passes again.",
                f"The health lamp {lamp} is off.",
            ]
        queued = self._notifier.submit_notice(
            Notice(
                "health_degraded" if degraded else "health_recovered",
                subject,
                "\n".join(lines),
                datetime.now(UTC),
            )
        )
        if not queued:
            logger.warning("scheduled checks: no administrator e-mailed ([notify] admin_emails)")

    async def _show(self, degraded: bool) -> None:
        wanted = self._health.lamp_state if degraded else HEALTHY_LAMP
        if wanted == self._lamp_shown or not self._ami.connected:
            return
        try:
            await self._ami.set_device_state(self._health.lamp_device, wanted)
        except AmiError as exc:
            logger.warning("cannot set the health lamp %s: %s", self._health.lamp_device, exc)
            return
        self._lamp_shown = wanted
        logger.info("health lamp %s set to %s", self._health.lamp_device, wanted)

    async def _forget_lamp(self) -> None:
        # Asterisk may have restarted (or someone set the lamp): set it again next run.
        self._lamp_shown = None
