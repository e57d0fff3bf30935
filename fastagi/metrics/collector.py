"""The server's metrics, read from the counters the services already keep, at scrape
time: nothing is counted twice, and the hot path (a call) pays nothing for them.

One :class:`ServerCollector` per server, in a :class:`~prometheus_client.CollectorRegistry`
of its own (no module-level registry: two servers in one process, as the tests run them,
keep their numbers apart). What only an await can read (the active alarms, from
PostgreSQL) is read by :meth:`ServerCollector.refresh` just before each scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from fastagi.app import Services
from fastagi.assurance.result import Status
from fastagi.domain.drill import DrillReport
from fastagi.domain.health import Health
from fastagi.notify.dispatcher import Channel
from fastagi.store.history import StoredEvent

# How long a scrape waits for PostgreSQL's count of active alarms.
REFRESH_TIMEOUT = 2.0
CHANNELS: tuple[Channel, ...] = ("email", "webhook", "email-sms")


class ServerCollector(Collector):
    def __init__(self, services: Services) -> None:
        self._services = services
        self._active_alarms: int | None = None
        self._drills: list[StoredEvent] = []

    async def refresh(self) -> None:
        """Read what needs an await; a PostgreSQL that does not answer in time leaves the
        active alarms out of this scrape (``fastagi_database_down`` says why)."""
        self._active_alarms = None
        self._drills = []
        with contextlib.suppress(Exception):
            async with asyncio.timeout(REFRESH_TIMEOUT):
                self._active_alarms = len(await self._services.alarms.active_alarms())
                self._drills = await self._services.store.history.latest_drill_reports()

    def collect(self) -> Iterator[Metric]:
        yield from self._alarms()
        yield from self._agi()
        yield from self._connections()
        yield from self._notifications()
        yield from self._checks()
        yield from self._drill_results()

    def _alarms(self) -> Iterator[Metric]:
        if self._active_alarms is not None:
            yield GaugeMetricFamily(
                "fastagi_alarms_active",
                "Alarms active now (every server's, as PostgreSQL has them).",
                value=self._active_alarms,
            )
        counts = self._services.pager.counts
        yield CounterMetricFamily(
            "fastagi_page_cycles",
            "Pages this server placed: one per cycle of each alarm it led.",
            value=counts.pages,
        )
        yield CounterMetricFamily(
            "fastagi_page_cycles_failed",
            "Pages that could not be placed or that no device answered.",
            value=counts.failed,
        )
        yield CounterMetricFamily(
            "fastagi_page_legs_dialled",
            "Paging devices dialled, over every page.",
            value=counts.legs_dialled,
        )
        yield CounterMetricFamily(
            "fastagi_page_legs_answered",
            "Paging devices that answered (heard the announcement), over every page.",
            value=counts.legs_answered,
        )

    def _agi(self) -> Iterator[Metric]:
        stats = self._services.agi_stats
        sessions = CounterMetricFamily(
            "fastagi_agi_sessions",
            "FastAGI calls served (their environment arrived), per route.",
            labels=["route"],
        )
        for route, count in sorted(stats.sessions.items()):
            sessions.add_metric([route], count)
        yield sessions
        connections = CounterMetricFamily(
            "fastagi_agi_connections_dropped",
            "FastAGI connections not served: refused (network, cap, shutdown), evicted at"
            " the cap, or without a valid environment in time.",
            labels=["reason"],
        )
        connections.add_metric(["refused"], stats.refused)
        connections.add_metric(["evicted"], stats.evicted)
        connections.add_metric(["no_environment"], stats.failed)
        yield connections
        latency = stats.latency
        yield HistogramMetricFamily(
            "fastagi_agi_command_latency_seconds",
            "From Asterisk's last message (environment or reply) to the server's next AGI"
            " command: how long the call waited on the server.",
            buckets=[(_bound(bound), count) for bound, count in latency.cumulative()],
            sum_value=latency.total,
        )

    def _connections(self) -> Iterator[Metric]:
        services = self._services
        yield GaugeMetricFamily(
            "fastagi_ami_connected",
            "1 while the server's AMI connection is up.",
            value=1 if services.ami.connected else 0,
        )
        yield CounterMetricFamily(
            "fastagi_ami_reconnects",
            "AMI connections reopened after a loss.",
            value=services.ami.reconnects,
        )
        outage = services.recorder.outage
        yield GaugeMetricFamily(
            "fastagi_database_down",
            "1 while the server knows PostgreSQL to be unreachable.",
            value=1 if outage.down else 0,
        )
        yield CounterMetricFamily(
            "fastagi_database_outage_seconds",
            "Seconds PostgreSQL was unreachable, since the server started.",
            value=outage.down_seconds(),
        )
        journal = services.recorder.journal
        size = 0
        with contextlib.suppress(OSError):  # a stat: microseconds, fine in the loop
            size = os.stat(journal.path).st_size if journal.on_disk else 0
        yield GaugeMetricFamily(
            "fastagi_journal_backlog_bytes",
            "History waiting in the journal file for PostgreSQL.",
            value=size,
        )
        yield GaugeMetricFamily(
            "fastagi_journal_backlog_memory_events",
            "History events waiting in memory only (the journal could not be written).",
            value=journal.in_memory,
        )
        yield CounterMetricFamily(
            "fastagi_journal_dropped_events",
            "History events lost: neither the journal nor memory could hold them.",
            value=journal.dropped,
        )

    def _notifications(self) -> Iterator[Metric]:
        notifier = self._services.notifier
        failed = CounterMetricFamily(
            "fastagi_notifications_failed",
            "Deliveries given up (failed after retries, dropped, abandoned), per channel.",
            labels=["channel"],
        )
        sent = CounterMetricFamily(
            "fastagi_notifications_sent",
            "Deliveries the remote accepted, per channel.",
            labels=["channel"],
        )
        for channel in CHANNELS:
            failed.add_metric([channel], notifier.failures[channel])
            sent.add_metric([channel], notifier.sent[channel])
        yield failed
        yield sent
        yield GaugeMetricFamily(
            "fastagi_notifications_pending",
            "Deliveries queued, in progress or waiting to retry.",
            value=notifier.pending,
        )

    def _checks(self) -> Iterator[Metric]:
        health = self._services.health
        if health is None:
            return
        status = GaugeMetricFamily(
            "fastagi_check_status",
            "Each scheduled check's last result: 1 for its status, 0 for the others.",
            labels=["check", "status"],
        )
        age = GaugeMetricFamily(
            "fastagi_check_age_seconds",
            "Seconds since each scheduled check's last result.",
            labels=["check"],
        )
        duration = GaugeMetricFamily(
            "fastagi_check_duration_seconds",
            "How long each scheduled check's last run took.",
            labels=["check"],
        )
        for name, observed in sorted(health.results.items()):
            for each in Status:
                status.add_metric([name, each.value], 1 if observed.result.status is each else 0)
            age.add_metric([name], observed.age())
            duration.add_metric([name], observed.result.duration)
        yield status
        yield age
        yield duration
        yield GaugeMetricFamily(
            "fastagi_health_degraded",
            "This server's view after the hysteresis: 1 degraded, 0 healthy, -1 not settled.",
            value={Health.DEGRADED: 1, Health.HEALTHY: 0, Health.UNKNOWN: -1}[health.state],
        )
        if health.site_degraded is not None:
            yield GaugeMetricFamily(
                "fastagi_site_degraded",
                "1 while the site is degraded (any server's fresh report), as PostgreSQL says.",
                value=1 if health.site_degraded else 0,
            )
        yield CounterMetricFamily(
            "fastagi_check_runs", "Runs of the scheduled checks.", value=health.runs
        )
        yield GaugeMetricFamily(
            "fastagi_check_run_seconds",
            "How long the last run of scheduled checks took.",
            value=health.last_run_seconds,
        )

    def _drill_results(self) -> Iterator[Metric]:
        """Each department's last drill (fastagi/domain/drill.py): an alert on ``ok == 0``
        or on an old timestamp catches a paging group nobody hears, or drills not run."""
        ok = GaugeMetricFamily(
            "fastagi_drill_last_ok",
            "1 when the department's last drill reached every device (and its emergency"
            " call was acknowledged), else 0.",
            labels=["department"],
        )
        missed = GaugeMetricFamily(
            "fastagi_drill_last_devices_not_answered",
            "Devices that missed at least one page of the department's last drill.",
            labels=["department"],
        )
        when = GaugeMetricFamily(
            "fastagi_drill_last_timestamp_seconds",
            "When the department's last drill report was written (Unix time).",
            labels=["department"],
        )
        for event in self._drills:
            department = event.department or ""
            try:
                report = DrillReport.from_details(event.alarm_id or 0, department, event.details)
            except (KeyError, TypeError, ValueError):
                continue  # a report of another version: left out, never a failed scrape
            ok.add_metric([department], 1 if report.ok else 0)
            missed.add_metric([department], len(report.not_answered))
            when.add_metric([department], event.occurred_at.timestamp())
        yield ok
        yield missed
        yield when


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def server_registry(services: Services) -> tuple[CollectorRegistry, ServerCollector]:
    """A registry of this server's own: its collector, and the process's CPU, memory and
    open files."""
    registry = CollectorRegistry(auto_describe=False)
    collector = ServerCollector(services)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry, collector
