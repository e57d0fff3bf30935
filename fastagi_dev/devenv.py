"""``python -m fastagi_dev run`` (``make run``): the whole system on one machine, for a newcomer.

Starts an embedded PostgreSQL cluster kept in ``.cache/pg`` (so data survives restarts),
migrates it, boots the sandbox Asterisk instance ``dev`` and runs the FastAGI server in
the foreground. Ctrl-C (or SIGTERM) stops all three, newest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from pydantic import SecretStr

from fastagi.app import running_server, until_signalled
from fastagi.config import AmiSettings, DatabaseSettings, Settings
from fastagi.store import Stores
from fastagi.store.migrations import migrate
from fastagi_dev.cluster import EmbeddedCluster
from fastagi_dev.demo import dev_state_path
from fastagi_dev.sandbox.image import repo_root
from fastagi_dev.sandbox.instance import Sandbox, running_sandbox
from fastagi_dev.seed import DemoInfo, seed_demo

DEV_DATABASE = "fastagi"
DEMO_PAGING_PHONES = range(201, 205)
DEFAULT_DEV_PG_PORT = 5439


@contextlib.asynccontextmanager
async def running_cluster(data_dir: Path, port: int) -> AsyncIterator[EmbeddedCluster]:
    cluster = EmbeddedCluster(data_dir, port=port)
    # initdb and pg_ctl block for a second or two: keep them off the event loop.
    await asyncio.to_thread(cluster.init)
    await asyncio.to_thread(cluster.start)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)


async def prepare_database(cluster: EmbeddedCluster) -> str:
    await asyncio.to_thread(cluster.ensure_database, DEV_DATABASE)
    dsn = cluster.dsn(DEV_DATABASE)
    connection = await asyncpg.connect(dsn)
    try:
        applied = await migrate(connection)
    finally:
        await connection.close()
    for name in applied:
        print(f"  applied migration {name}")
    return dsn


async def seed(dsn: str) -> DemoInfo:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        return await seed_demo(Stores.over(pool))
    finally:
        await pool.close()


def banner(sandbox: Sandbox, settings: Settings, dsn: str, demo: DemoInfo) -> str:
    repo = repo_root()
    scenario = repo / "tests" / "sipp_scenarios" / "uac_call_dtmf.xml"
    empty_digits = " ".join(f"-key d{n} ''" for n in range(3, 9))
    # ruff takes "select" in this banner for SQL (S608).
    return f"""
fastagi-panic is running (Ctrl-C stops everything).
  Asterisk   SIP 127.0.0.1:{sandbox.sip_port}  AMI 127.0.0.1:{sandbox.ami_port}
             console log {sandbox.log_path}
  FastAGI    agi://{settings.agi.host}:{settings.agi.port}
  PostgreSQL {dsn}

Place a test call: desk phone 101 dials the connectivity probe *599 and types 4 2:
  sipp 127.0.0.1:{sandbox.sip_port} -sf {scenario} -s '*599' -i 127.0.0.1 -p 6101 -m 1 \\
       -d 2000 -key ext 101 -key gap_ms 250 -key hangup server -key linger_ms 1000 \\
       -key d1 4 -key d2 2 {empty_digits}
Then: psql '{dsn}' -c 'select * from probe_calls'
Asterisk console: .venv/bin/python -m fastagi_dev sandbox cli 'core show channels'

The demo: departments {", ".join(demo.departments)}; phones 101-119 belong to the
Emergency Room, paged on phones 201-204. Panic key *555, deactivation *556 by
extension {demo.deactivator} with PIN {demo.pin}.
  make demo    plays the whole story with SIPp phones (in another terminal)
  .venv/bin/fastagi alarm list --dsn '{dsn}'
"""  # noqa: S608


async def run_dev(settings: Settings) -> None:
    cache = Path(os.environ.get("FASTAGI_DEV_DIR", repo_root() / ".cache"))
    pg_port = int(os.environ.get("FASTAGI_DEV_PG_PORT", DEFAULT_DEV_PG_PORT))
    print("starting PostgreSQL ...", flush=True)
    async with running_cluster(cache / "pg" / "data", pg_port) as cluster:
        dsn = await prepare_database(cluster)
        demo = await seed(dsn)
        print("starting the sandbox Asterisk ...", flush=True)
        agi_url = f"agi://127.0.0.1:{settings.agi.port}"
        async with running_sandbox(name="dev", agi_url=agi_url) as sandbox:
            settings = settings.model_copy(
                update={
                    "database": DatabaseSettings(dsn=SecretStr(dsn)),
                    # The sandbox's Asterisk runs in a chroot: the same directory has
                    # one name for the server and another for Asterisk.
                    "journal": settings.journal.model_copy(update={"directory": cache / "journal"}),
                    # Unknown extensions page the demo's Emergency Room phones.
                    "alarm": settings.alarm.model_copy(
                        update={
                            "unknown_department_devices": [f"PJSIP/{n}" for n in DEMO_PAGING_PHONES]
                        }
                    ),
                    "tts": settings.tts.model_copy(
                        update={
                            "directory": sandbox.tts_dir,
                            "asterisk_directory": sandbox.tts_dir_in_asterisk,
                        }
                    ),
                    "ami": AmiSettings(
                        host=sandbox.ami_host,
                        port=sandbox.ami_port,
                        username=sandbox.ami_username,
                        secret=SecretStr(sandbox.ami_secret),
                    ),
                }
            )
            async with running_server(settings):
                state_file = dev_state_path()
                state_file.write_text(json.dumps({"dsn": dsn}))
                try:
                    print(banner(sandbox, settings, dsn, demo), flush=True)
                    await until_signalled()
                    print("stopping ...", flush=True)
                finally:
                    state_file.unlink(missing_ok=True)
