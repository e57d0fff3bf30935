"""What the panic and deactivation e2e tests share: the real AlarmService on the sandbox's
AMI and the test's database, the flows on a real AgiServer, and the history to assert on.

The service is wrapped (:class:`TimedService`) only to note when ``activate()`` and
``deactivate()`` return: the flows see it through their Protocols, as in production.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from fastagi.agi.server import AgiServer
from fastagi.agi.session import AgiSession
from fastagi.alarms.recorder import HistoryRecorder
from fastagi.alarms.service import Activation, AlarmService
from fastagi.config import AgiSettings, AlarmSettings, FlowSettings
from fastagi.domain.alarm import Alarm
from fastagi.domain.directory import Department
from fastagi.flows import prompts
from fastagi.flows.deactivate import DeactivateFlow
from fastagi.flows.panic import PanicFlow
from fastagi.store import Stores
from fastagi.tts import TextToSpeech
from fastagi_dev.sandbox.instance import Sandbox
from tests import sipp
from tests.alarm_stack import open_pool, sandbox_ami, sandbox_tts, start_alarm_service

ALARM_SETTINGS = AlarmSettings(lead_in=0.2, page_timeout=5, max_page_seconds=20)
#: The kinds a call's own steps record (the service adds lamp and page events around).
CALL_KINDS = frozenset(
    {
        "triggered",
        "prompt_played",
        "confirmed",
        "cancelled",
        "no_answer",
        "caller_hung_up",
        "activated",
        "retriggered",
        "deactivation_refused",
        "deactivation_failed",
        "deactivation_locked_out",
        "deactivated",
        "error",
    }
)


class TimedService:
    """The real AlarmService, noting when activate() and deactivate() return."""

    def __init__(self, service: AlarmService) -> None:
        self.service = service
        self.activated_at: list[float] = []
        self.deactivated_at: list[float] = []

    async def lookup(self, extension: str) -> Department | None:
        return await self.service.lookup(extension)

    async def activate(
        self, extension: str, department: Department | None, *, uniqueid: str
    ) -> Activation:
        activation = await self.service.activate(extension, department, uniqueid=uniqueid)
        self.activated_at.append(time.time())
        return activation

    async def active_alarms(self) -> Sequence[Alarm]:
        return await self.service.active_alarms()

    async def deactivate(
        self, alarm_id: int, *, by: str, reason: str, uniqueid: str | None = None
    ) -> bool:
        done = await self.service.deactivate(alarm_id, by=by, reason=reason, uniqueid=uniqueid)
        self.deactivated_at.append(time.time())
        return done


@dataclass
class Observed:
    """A flow, with what happened to each session kept for the test body."""

    flow: Any
    errors: list[BaseException] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0

    async def __call__(self, session: AgiSession) -> None:
        try:
            await self.flow(session)
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            self.calls += 1
            self.finished.set()


@dataclass
class FlowHarness:
    sandbox: Sandbox
    agi_port: int
    store: Stores
    pool: asyncpg.Pool[asyncpg.Record]
    service: TimedService
    recorder: HistoryRecorder
    tts: TextToSpeech
    workdir: Path
    stack: AsyncExitStack

    async def department(
        self, name: str, extensions: str, phones: Sequence[int] = (), interval: int = 60
    ) -> None:
        group = f"group {name}"
        await self.store.directory.add_paging_group(group)
        for ext in phones:
            await self.store.directory.add_paging_device(group, f"PJSIP/{ext}")
        await self.store.directory.add_department(
            name, interval_seconds=interval, paging_group=group
        )
        await self.store.directory.map_extensions(name, extensions)
        await self.service.service.refresh_directory()

    async def prerender(self, *labels: str) -> None:
        """Render the prompts a test's calls play, so DTMF timing does not depend on a
        first render (~0.1-0.3 s) happening during the call."""
        texts = [*prompts.fixed_texts(), *(prompts.panic_question(label) for label in labels)]
        results = await self.tts.prerender(texts)
        failed = {text: r for text, r in results.items() if isinstance(r, Exception)}
        assert not failed, failed

    @asynccontextmanager
    async def serving(
        self, settings: FlowSettings | None = None, tts: prompts.Speaker | None = None
    ) -> AsyncIterator[tuple[Observed, Observed]]:
        """The AGI server with ``panic`` and ``deactivate`` routes (``tts``: another
        text-to-speech service for the flows than the alarm service's)."""
        settings = settings or FlowSettings()
        tts = tts or self.tts
        record = self.recorder.record
        panic = Observed(
            PanicFlow(self.service, self.store.policy, record=record, tts=tts, settings=settings)
        )
        deactivate = Observed(
            DeactivateFlow(
                self.service,
                self.store.policy,
                self.store.deactivators,
                record=record,
                tts=tts,
                settings=settings,
            )
        )
        routes = {"panic": panic, "deactivate": deactivate}
        async with AgiServer(AgiSettings(port=self.agi_port), routes) as server:
            yield panic, deactivate
            await asyncio.wait_for(server.wait_idle(), 10)

    async def phone(self, ext: int) -> sipp.PagingPhone:
        return await self.stack.enter_async_context(
            sipp.PagingPhone(self.sandbox, ext, self.workdir)
        )

    async def kinds(self) -> list[str]:
        """The call-level history, in order."""
        rows = await self.pool.fetch("SELECT kind FROM alarm_events ORDER BY occurred_at, id")
        return [row["kind"] for row in rows if row["kind"] in CALL_KINDS]

    async def events(self, kind: str) -> list[asyncpg.Record]:
        return await self.pool.fetch("SELECT * FROM alarm_events WHERE kind = $1 ORDER BY id", kind)


@asynccontextmanager
async def flow_harness(
    sandbox: Sandbox, agi_port: int, dsn: str, workdir: Path
) -> AsyncIterator[FlowHarness]:
    async with AsyncExitStack() as stack:
        pool = await open_pool(stack, dsn)
        store = Stores.over(pool)
        ami = await sandbox_ami(stack, sandbox)
        tts = sandbox_tts(stack, sandbox)
        service, recorder = await start_alarm_service(
            stack,
            store=store,
            pool=pool,
            ami=ami,
            tts=tts,
            settings=ALARM_SETTINGS,
            name="flow-tests",
        )
        yield FlowHarness(
            sandbox, agi_port, store, pool, TimedService(service), recorder, tts, workdir, stack
        )
