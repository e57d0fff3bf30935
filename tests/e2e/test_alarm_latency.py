"""Alarm latency through the sandbox (bench/latency.py). In the suite, a smoke run of 2
trials that checks what must hold at any size (no render between a cold activation and
its page, no INVITE after a deactivation); ``make bench-latency`` runs more trials and
prints the figures, with no timed assertion."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest

from bench import latency
from fastagi.store import Stores
from fastagi_dev.sandbox.instance import Sandbox
from tests.e2e.test_demo import settings_for

TRIALS = int(os.environ.get("BENCH_TRIALS", "2"))
# Probe calls per second through the sandbox while the trials run (0: idle).
BACKGROUND_RATE = float(os.environ.get("BENCH_BACKGROUND_RATE", "0"))

pytestmark = [pytest.mark.e2e, pytest.mark.exclusive, pytest.mark.timeout(60 + 20 * TRIALS)]


async def test_cold_alarms_page_as_fast_as_warm_ones_and_stop(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
) -> None:
    settings = settings_for(sandbox, agi_port, database_dsn)
    result = await latency.run(
        sandbox,
        settings,
        Stores.over(db_pool),
        tmp_path,
        trials=TRIALS,
        background_rate=BACKGROUND_RATE,
    )
    print("\n".join(["", *result.lines()]))

    assert len(result.warm) == len(result.cold) == TRIALS
    assert result.renders_on_activation == 0
    assert result.invites_after_deactivation == 0
