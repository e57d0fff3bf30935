"""The pool's reset (fastagi/store/pool.py): what asyncpg's default reset query costs each
pooled statement, against our pool, which skips it.

A throwaway PostgreSQL cluster; each pool runs the same one-row INSERT (the shape of a
history write) through ``pool.execute``, from ``--concurrency`` tasks at once, on uvloop.
The baseline, measured in the same run and alternated with ours repetition by
repetition, is ``asyncpg.create_pool`` with its defaults, whose reset runs ``SELECT
pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;`` after every statement.
Per pool: the client's CPU per statement (this process's user + system time), the
PostgreSQL backends' CPU per statement (from /proc), and the time a statement holds its
connection (acquire to release; what other tasks queue behind when the pool is busy).

    python -m bench.pool_reset [--statements 20000] [--concurrency 1,10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from pydantic import SecretStr

from bench.calls import cpu_seconds, throwaway_cluster
from bench.stats import Spread, paired_ratios
from fastagi.config import DatabaseSettings
from fastagi.store.pool import create_pool

INSERT = "INSERT INTO bench_events (kind, details) VALUES ($1, $2::jsonb)"


@dataclass(frozen=True)
class Step:
    pool: str
    concurrency: int
    client_us: float  # client CPU per statement
    backend_us: float  # PostgreSQL's CPU per statement
    held_us: float  # connection held per statement, mean


def _postgres_cpu_seconds(user: str) -> float:
    """User + system time of every live process of ``user`` (the cluster's backends)."""
    import pwd

    uid = pwd.getpwnam(user).pw_uid
    total = 0.0
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and os.stat(entry.path).st_uid == uid:
                total += cpu_seconds(int(entry.name))
        except OSError:
            continue  # gone meanwhile
    return total


async def _step(dsn: str, pool_name: str, statements: int, concurrency: int, user: str) -> Step:
    if pool_name == "ours":
        settings = DatabaseSettings(
            dsn=SecretStr(dsn), pool_min_size=concurrency, pool_max_size=concurrency
        )
        pool = await create_pool(settings)
    else:
        pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    held = 0.0
    try:
        await pool.execute("TRUNCATE bench_events")

        async def worker(count: int) -> None:
            nonlocal held
            for _ in range(count):
                started = time.perf_counter()
                await pool.execute(INSERT, "triggered", '{"prompts": 1}')
                held += time.perf_counter() - started

        before = cpu_seconds(os.getpid())
        backend_before = _postgres_cpu_seconds(user)
        await asyncio.gather(*(worker(statements // concurrency) for _ in range(concurrency)))
        backend_after = _postgres_cpu_seconds(user)
        after = cpu_seconds(os.getpid())
    finally:
        await pool.close()
    done = statements // concurrency * concurrency
    client = after - before
    return Step(
        pool_name,
        concurrency,
        client_us=client / done * 1e6,
        backend_us=(backend_after - backend_before) / done * 1e6,
        held_us=held / done * 1e6,
    )


def _spread(values: Sequence[float]) -> str:
    spread = Spread.of(values)
    return "-" if spread is None else spread.format(".2f")


def main(argv: Sequence[str] | None = None) -> int:
    import uvloop

    from fastagi_dev.cluster import OS_USER

    parser = argparse.ArgumentParser(
        prog="python -m bench.pool_reset", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--statements", type=int, default=20000)
    parser.add_argument("--concurrency", default="1,10")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.concurrency.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    steps: list[Step] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-pool-") as work,
        throwaway_cluster(Path(work)) as dsn,
    ):

        async def create_table() -> None:
            connection = await asyncpg.connect(dsn)
            try:
                await connection.execute(
                    "CREATE TABLE bench_events (id bigserial PRIMARY KEY, kind text,"
                    " details jsonb, at timestamptz DEFAULT clock_timestamp())"
                )
            finally:
                await connection.close()

        uvloop.run(create_table())
        for repeat in range(args.repeats):
            for concurrency in levels:
                for pool_name in ("asyncpg", "ours") if repeat % 2 == 0 else ("ours", "asyncpg"):
                    step = uvloop.run(_step(dsn, pool_name, args.statements, concurrency, OS_USER))
                    steps.append(step)
                    print(
                        f"  rep {repeat + 1} c={concurrency} {pool_name}: client"
                        f" {step.client_us:.1f} us, PostgreSQL {step.backend_us:.1f} us,"
                        f" held {step.held_us:.1f} us a statement",
                        flush=True,
                    )
    print()
    header = "conc  pool     client CPU us/stmt  PostgreSQL CPU us/stmt  held us/stmt"
    print(header)
    print("-" * len(header))
    for concurrency in levels:
        for pool_name in ("asyncpg", "ours"):
            mine = [s for s in steps if s.pool == pool_name and s.concurrency == concurrency]
            print(
                f"{concurrency:4d}  {pool_name:7s}  {_spread([s.client_us for s in mine]):>18s}"
                f"  {_spread([s.backend_us for s in mine]):>22s}"
                f"  {_spread([s.held_us for s in mine]):>12s}"
            )
    print()
    print("ours / asyncpg's default pool, repetition by repetition:")
    print(header.replace("pool     ", ""))
    for concurrency in levels:
        ours = [s for s in steps if s.pool == "ours" and s.concurrency == concurrency]
        base = [s for s in steps if s.pool == "asyncpg" and s.concurrency == concurrency]
        ratios = [
            paired_ratios([getattr(o, field) for o in ours], [getattr(b, field) for b in base])
            for field in ("client_us", "backend_us", "held_us")
        ]
        print(
            f"{concurrency:4d}  {_spread(ratios[0]):>18s}  {_spread(ratios[1]):>22s}"
            f"  {_spread(ratios[2]):>12s}"
        )
    print(
        f"\nmedian (min-max) of {args.repeats} repetitions, {args.statements} statements"
        f" each; load average after: {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
