"""The alarm service as app.py wires it (recorder, lamps, pager, service), for tests that
run one against the sandbox: started, and closed by ``stack`` in the right order; and the
parts it is given (a pool, the production AMI client, the text-to-speech) over the
sandbox, each closed by ``stack``."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import AsyncExitStack

import asyncpg
from pydantic import SecretStr

from fastagi.alarms.lamps import Lamps
from fastagi.alarms.listeners import AlarmListener
from fastagi.alarms.outage import Outage
from fastagi.alarms.paging import Pager
from fastagi.alarms.recorder import HistoryRecorder
from fastagi.alarms.service import AlarmService
from fastagi.ami import AmiClient
from fastagi.config import AlarmSettings, DatabaseSettings, JournalSettings
from fastagi.flows import prompts
from fastagi.store import Stores
from fastagi.store.journal import Journal
from fastagi.store.pool import answers
from fastagi.tts import TextToSpeech
from fastagi.tts.announcement import page_clips
from fastagi_dev.sandbox.instance import Sandbox
from fastagi_dev.sandbox.settings import tts_settings


async def start_alarm_service(
    stack: AsyncExitStack,
    *,
    store: Stores,
    pool: asyncpg.Pool[asyncpg.Record],
    ami: AmiClient,
    tts: TextToSpeech,
    settings: AlarmSettings,
    name: str,
    journal_settings: JournalSettings | None = None,
    listeners: Sequence[AlarmListener] = (),
    dsn: str | None = None,
) -> tuple[AlarmService, HistoryRecorder]:
    """``journal_settings``: where history waits while PostgreSQL is down (default: in
    memory, the write timeout's default). ``dsn``: PostgreSQL's, for the probe that tells
    an outage from a busy pool, as app.py wires it (default: no probe, the first failed
    call is the outage)."""
    journal_settings = journal_settings or JournalSettings(directory=None)
    probe = None
    if dsn is not None:
        probe = functools.partial(answers, DatabaseSettings(dsn=SecretStr(dsn)))
    recorder = HistoryRecorder(
        store.history,
        Journal(journal_settings),
        timeout=journal_settings.write_timeout,
        outage=Outage(probe=probe),
    )
    stack.push_async_callback(recorder.close)
    lamps = Lamps(ami, settings, record=recorder.record, instance_id=name)
    stack.callback(lamps.close)
    service = AlarmService(
        store,
        Pager(ami, settings),
        lamps,
        tts,
        settings,
        recorder=recorder,
        instance_id=name,
        pool=pool,
        listeners=listeners,
    )
    await service.start()
    stack.push_async_callback(service.close)
    return service, recorder


async def open_pool(
    stack: AsyncExitStack, dsn: str, max_size: int = 10
) -> asyncpg.Pool[asyncpg.Record]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size)
    stack.push_async_callback(pool.close)
    return pool


async def sandbox_ami(stack: AsyncExitStack, sandbox: Sandbox) -> AmiClient:
    """The production AMI client, logged in as the sandbox's all-rights user."""
    ami = AmiClient(
        sandbox.ami_host, sandbox.ami_port, sandbox.ami_username, SecretStr(sandbox.ami_secret)
    )
    await ami.connect()
    stack.push_async_callback(ami.close)
    return ami


def sandbox_tts(stack: AsyncExitStack, sandbox: Sandbox) -> TextToSpeech:
    """Prompts rendered where the sandbox Asterisk reads them."""
    tts = TextToSpeech(tts_settings(sandbox))
    stack.push_async_callback(tts.aclose)
    return tts


async def prerender(
    sandbox: Sandbox, *texts: str, announcements: Sequence[tuple[str, str]] = ()
) -> None:
    """Render the flows' fixed prompts and ``texts`` where the sandbox reads them, before a
    server starts: a first render (0.1-1 s on a loaded machine) would be measured as a
    page's delay, and the prompts' timing would depend on it.

    ``announcements``: (template, department) pairs whose pages are to be timed. A page
    plays pieces (the department's clips, the extension from the digit clips:
    fastagi/tts/announcement.py), not the whole text, and a server renders them at
    start-up in the background (``PromptKeeper``): a page right after start-up waited for
    that batch (0.25 s on an idle machine, more under load), which moved an original's
    pages but not its replay's (test_replay)."""
    clips = {clip for template, name in announcements for clip in page_clips(template, name)}
    tts = TextToSpeech(tts_settings(sandbox))
    try:
        results = await tts.prerender([*prompts.fixed_texts(), *texts], clips=sorted(clips))
    finally:
        await tts.aclose()
    failed = {text: r for text, r in results.items() if isinstance(r, Exception)}
    assert not failed, failed
