"""Many alarms at once through the sandbox (bench/alarms.py). In the suite, a smoke run of
4 alarms for a few cycles that checks what must hold at any size (every alarm paged, no
INVITE after a deactivation, the counts agree); ``make bench-alarms`` runs it big
(BENCH_ALARMS, BENCH_SECONDS) and prints the figures, with no timed assertion. Then the
same pages without the server around them (``alarms.run_floor``), to the same sandbox, so
that the gap error at the phones has a baseline measured in the same run."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest

from bench import alarms
from fastagi.store import Stores
from fastagi_dev.sandbox.instance import Sandbox
from tests.e2e.test_demo import settings_for

ALARMS = int(os.environ.get("BENCH_ALARMS", "4"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "12"))
PHONES = int(os.environ.get("BENCH_PHONES", "20"))
PLOT = os.environ.get("BENCH_PLOT")
# The server's pool_max_size (default: the setting's): how the first pages of a burst wait
# for connections.
POOL_MAX_SIZE = os.environ.get("BENCH_POOL_MAX_SIZE")
# BENCH_FLOOR_FIRST=1: the floor runs before ours (alternate the order between runs, so
# that neither side always gets the machine as the other left it).
FLOOR_FIRST = bool(os.environ.get("BENCH_FLOOR_FIRST"))

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.exclusive,
    pytest.mark.timeout(180 + 5 * SECONDS + 2 * ALARMS),
]


async def test_many_alarms_keep_their_schedule_and_stop(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
) -> None:
    settings = settings_for(sandbox, agi_port, database_dsn)
    if POOL_MAX_SIZE:
        database = settings.database.model_copy(update={"pool_max_size": int(POOL_MAX_SIZE)})
        settings = settings.model_copy(update={"database": database})

    async def ours() -> alarms.AlarmScaleResult:
        return await alarms.run(
            sandbox,
            settings,
            Stores.over(db_pool),
            tmp_path,
            alarms=ALARMS,
            seconds=SECONDS,
            phones=PHONES,
        )

    async def the_floor() -> alarms.AlarmScaleResult:
        return await alarms.run_floor(
            sandbox, settings, tmp_path / "floor", alarms=ALARMS, seconds=SECONDS, phones=PHONES
        )

    if FLOOR_FIRST:
        floor = await the_floor()
        result = await ours()
    else:
        result = await ours()
        floor = await the_floor()
    print("\n".join(["", *result.lines(), *alarms.floor_lines(floor, result)]))
    if PLOT:
        alarms.plot(result, Path(PLOT), floor)

    assert result.invites_after_deactivation == 0
    # Every alarm paged at once and then every interval: at least one page each.
    assert result.pages >= ALARMS
    # The phones heard every page the server counted, and no page it did not count.
    assert result.pages == result.cycles_counted
    # The floor's harness is sound too: every page it sent was heard, none after a stop.
    assert floor.invites_after_deactivation == 0
    assert floor.pages >= ALARMS
    assert floor.pages == floor.cycles_counted
