"""``python -m fastagi_dev run`` (``make run``): the whole system on one machine, for a newcomer.

Starts an embedded PostgreSQL cluster kept in ``.cache/pg`` (so data survives restarts),
migrates it, boots the sandbox Asterisk instance ``dev`` and runs the FastAGI server in
the foreground. Ctrl-C (or SIGTERM) stops all three, newest first.

Starting again right away must just work, also after a crash (``DevOptions`` lets a
test run a second one beside ``make run``). What a previous run can leave behind:
- its TCP connections in TIME_WAIT on the AMI and AGI ports, for a minute: Asterisk, our
  server (asyncio's ``create_server``) and PostgreSQL all bind with SO_REUSEADDR, and so
  does the sandbox's free-port check;
- after a crash (no clean-up ran): its Asterisk, which the kernel sends SIGTERM but may
  still be shutting down, is stopped by the sandbox at launch (its state file names the
  owner that is gone); its PostgreSQL, which runs in a session of its own and outlives
  us, is adopted by the cluster as it runs (or, if it was killed too, its lock file is
  cleared); ``dev.json`` is rewritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from pydantic import SecretStr

from fastagi.app import Services, running_server, until_signalled
from fastagi.cli.common import CliError
from fastagi.config import DatabaseSettings, Settings
from fastagi.store import Stores
from fastagi.store.migrations import migrate
from fastagi.web.server import Console, running_console
from fastagi_dev.cluster import EmbeddedCluster
from fastagi_dev.demo import dev_cache_dir, dev_state_path
from fastagi_dev.sandbox.instance import Sandbox, SandboxPorts, running_sandbox
from fastagi_dev.sandbox.settings import ami_settings, tts_settings
from fastagi_dev.seed import DemoInfo, seed_demo

DEV_DATABASE = "fastagi"
DEMO_PAGING_PHONES = range(201, 205)
DEFAULT_DEV_PG_PORT = 5439
DEFAULT_DEV_INSTANCE = "dev"


@dataclass(frozen=True)
class DevOptions:
    """Where ``make run`` keeps its state and which ports it takes, from ``FASTAGI_DEV_*``
    environment variables (the FastAGI port is the server's own ``FASTAGI_AGI__PORT``):

    ``FASTAGI_DEV_DIR`` the state directory (``.cache``: ``pg/``, ``journal/``, ``dev.json``),
    ``FASTAGI_DEV_PG_PORT`` PostgreSQL (5439), ``FASTAGI_DEV_INSTANCE`` the sandbox instance
    (``dev``), ``FASTAGI_DEV_SIP_PORT`` (5060), ``FASTAGI_DEV_AMI_PORT`` (5038),
    ``FASTAGI_DEV_RTP_START``/``_END`` (10000-10999), ``FASTAGI_DEV_PHONE_BASE`` (5000).
    """

    cache: Path
    pg_port: int = DEFAULT_DEV_PG_PORT
    instance: str = DEFAULT_DEV_INSTANCE
    ports: SandboxPorts = field(default_factory=SandboxPorts)

    @classmethod
    def from_env(cls) -> DevOptions:
        def number(name: str, default: int) -> int:
            value = os.environ.get(f"FASTAGI_DEV_{name}")
            try:
                return default if value is None else int(value)
            except ValueError:
                raise CliError(f"FASTAGI_DEV_{name}={value!r} is not a port number") from None

        defaults = SandboxPorts()
        return cls(
            cache=dev_cache_dir(),
            pg_port=number("PG_PORT", DEFAULT_DEV_PG_PORT),
            instance=os.environ.get("FASTAGI_DEV_INSTANCE", DEFAULT_DEV_INSTANCE),
            ports=SandboxPorts(
                sip=number("SIP_PORT", defaults.sip),
                ami=number("AMI_PORT", defaults.ami),
                rtp_start=number("RTP_START", defaults.rtp_start),
                rtp_end=number("RTP_END", defaults.rtp_end),
                phone_base=number("PHONE_BASE", defaults.phone_base),
            ),
        )


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


# The drill PIN of `make run` when [drill] pin is not set.
DEV_DRILL_PIN = "4321"


def banner(sandbox: Sandbox, settings: Settings, dsn: str, demo: DemoInfo, console_url: str) -> str:
    # ruff takes "select" in this banner for SQL (S608).
    return f"""
fastagi-panic is running (Ctrl-C stops everything).
  Asterisk   SIP 127.0.0.1:{sandbox.sip_port}  AMI 127.0.0.1:{sandbox.ami_port}
             console log {sandbox.log_path}
  FastAGI    agi://{settings.agi.host}:{settings.agi.port}
  Console    {console_url}  (log in as {demo.web_user} / {demo.web_password})
  PostgreSQL {dsn}

Place a test call: desk phone 101 dials the connectivity probe *599 and types 4 2
when the prompt plays (a SIPp phone, told by the sandbox's AMI):
  .venv/bin/python -m fastagi_dev sandbox call --name {sandbox.name} '*599' 42
Then: psql '{dsn}' -c 'select * from probe_calls'
Asterisk console: .venv/bin/python -m fastagi_dev sandbox cli 'core show channels'

The demo: departments {", ".join(demo.departments)}; phones 101-119 belong to the
Emergency Room, paged on phones 201-204. Panic key *555, deactivation *556 by
extension {demo.deactivator} with PIN {demo.pin}.
  make demo    plays the whole story with SIPp phones (in another terminal)
  .venv/bin/fastagi alarm list --dsn '{dsn}'
A drill (a test of the whole chain, announced as one): *558 then the drill PIN
{settings.drill.pin.get_secret_value() if settings.drill.pin else "(none set)"} and #, or
  .venv/bin/fastagi drill 'Emergency Room' --dsn '{dsn}'
"""  # noqa: S608


async def run_dev(settings: Settings, options: DevOptions | None = None) -> None:
    options = options or DevOptions.from_env()
    cache = options.cache
    print("starting PostgreSQL ...", flush=True)
    async with running_cluster(cache / "pg" / "data", options.pg_port) as cluster:
        dsn = await prepare_database(cluster)
        demo = await seed(dsn)
        print("starting the sandbox Asterisk ...", flush=True)
        agi_url = f"agi://127.0.0.1:{settings.agi.port}"
        async with running_sandbox(
            name=options.instance, ports=options.ports, agi_url=agi_url
        ) as sandbox:
            settings = settings.model_copy(
                update={
                    "database": DatabaseSettings(dsn=SecretStr(dsn)),
                    # The sandbox's Asterisk runs in a chroot: the same directory has
                    # one name for the server and another for Asterisk.
                    "journal": settings.journal.model_copy(update={"directory": cache / "journal"}),
                    # The console, on its port (FASTAGI_WEB__PORT, default 8080).
                    "web": settings.web.model_copy(update={"enabled": True}),
                    # Unknown extensions page the demo's Emergency Room phones.
                    "alarm": settings.alarm.model_copy(
                        update={
                            "unknown_department_devices": [f"PJSIP/{n}" for n in DEMO_PAGING_PHONES]
                        }
                    ),
                    "tts": settings.tts.model_copy(
                        update=tts_settings(sandbox).model_dump(
                            include={"directory", "asterisk_directory"}
                        )
                    ),
                    # *558 works out of the box in the dev environment.
                    "drill": settings.drill.model_copy(
                        update={"pin": settings.drill.pin or SecretStr(DEV_DRILL_PIN)}
                    ),
                    "ami": ami_settings(sandbox),
                }
            )
            consoles: list[Console] = []

            def console(
                services: Services, settings: Settings
            ) -> AbstractAsyncContextManager[Console]:
                return _remembered(running_console(services, settings), consoles)

            async with running_server(settings, [console]):
                state_file = dev_state_path()
                state_file.write_text(json.dumps({"dsn": dsn, "instance": sandbox.name}))
                try:
                    print(banner(sandbox, settings, dsn, demo, consoles[0].url), flush=True)
                    await until_signalled()
                    print("stopping ...", flush=True)
                finally:
                    state_file.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def _remembered(
    running: AbstractAsyncContextManager[Console], consoles: list[Console]
) -> AsyncIterator[Console]:
    """The console, noted in ``consoles`` so the banner can print its address."""
    async with running as console:
        consoles.append(console)
        yield console
