"""pytest plugin: a PostgreSQL server per session, a fresh database per test.

``FASTAGI_TEST_DSN`` (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``) points the
tests at an existing server, whose user must be allowed to create databases. Otherwise
the session starts a throwaway :class:`EmbeddedCluster` tuned for speed. Either way a
template database is created and migrated once; each test that asks for
``database_dsn`` or ``db_pool`` gets a copy of it (``CREATE DATABASE ... TEMPLATE``),
dropped afterwards.

The fixtures are synchronous: administrative statements run on a private event loop in
a thread of their own, so they work whatever event loop a test runs in.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pwd
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import asyncpg
import pytest
from pydantic import SecretStr

from fastagi.config import DatabaseSettings
from fastagi.store.migrations import migrate
from fastagi.store.pool import create_pool
from fastagi_dev.cluster import OS_USER, ClusterError, EmbeddedCluster, find_bin_dir

TEST_DSN_ENV = "FASTAGI_TEST_DSN"
PG_FIXTURES = frozenset(
    {"pg_cluster", "pg_template", "database_dsn", "empty_database_dsn", "db_pool"}
)

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread; ``run`` blocks on a coroutine there."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-admin", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class PgServer:
    """The session's server: DSNs for its databases and an admin connection to it."""

    def __init__(self, admin_dsn: str, cluster: EmbeddedCluster | None) -> None:
        self.admin_dsn = admin_dsn
        self.cluster = cluster  # None for a server given by FASTAGI_TEST_DSN
        self._loop = _LoopThread()
        try:
            self._admin: asyncpg.Connection[asyncpg.Record] = self._loop.run(
                asyncpg.connect(admin_dsn)
            )
        except BaseException:
            self._loop.close()
            raise

    def dsn(self, database: str) -> str:
        return urlsplit(self.admin_dsn)._replace(path="/" + quote(database, safe="")).geturl()

    def execute(self, sql: str) -> None:
        """Run an administrative statement (CREATE/DROP DATABASE) outside a transaction."""
        self._loop.run(self._admin.execute(sql))

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the private loop, e.g. a migration of a fresh database."""
        return self._loop.run(coroutine, timeout)

    def create_database(self, name: str, template: str | None = None) -> str:
        clause = f" TEMPLATE {_ident(template)}" if template else ""
        self.execute(f"CREATE DATABASE {_ident(name)}{clause}")
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")

    def close(self) -> None:
        self._loop.run(self._admin.close())
        self._loop.close()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextlib.contextmanager
def postgres_tmpdir(prefix: str = "fastagi-pg-") -> Iterator[Path]:
    """A temporary directory the server's OS user owns, removed afterwards.

    As root the server runs as ``postgres``, which cannot enter pytest's 0700
    ``/tmp/pytest-of-root``; so the directory is made directly in /tmp and given away.
    """
    as_root = os.geteuid() == 0
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if as_root else None))
    try:
        if as_root:
            user = pwd.getpwnam(OS_USER)
            os.chown(path, user.pw_uid, user.pw_gid)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the database fixtures are ``db`` tests, marked or not."""
    for item in items:
        if PG_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgServer]:
    """The session's PostgreSQL server."""
    external = os.environ.get(TEST_DSN_ENV)
    if external:
        server = PgServer(external, cluster=None)
        try:
            yield server
        finally:
            server.close()
        return
    try:
        find_bin_dir()
    except ClusterError as exc:
        pytest.skip(f"no PostgreSQL: {exc}; or set {TEST_DSN_ENV}")
    with postgres_tmpdir() as base:
        cluster = EmbeddedCluster(base / "data", tuned_for_tests=True)
        try:
            cluster.init()
            cluster.start()
            server = PgServer(cluster.dsn("postgres"), cluster)
            try:
                yield server
            finally:
                server.close()
        finally:
            cluster.stop()


@pytest.fixture(scope="session")
def pg_template(pg_cluster: PgServer) -> Iterator[str]:
    """The name of a database with every migration applied, to copy from."""
    # Its own per session: xdist workers (and other sessions) sharing a FASTAGI_TEST_DSN
    # server would otherwise drop and migrate one another's template.
    template = f"fastagi_template_{os.getpid()}"

    async def migrate_template() -> None:
        connection = await asyncpg.connect(pg_cluster.dsn(template))
        try:
            await migrate(connection)
        finally:
            await connection.close()

    # A template left by an earlier session may predate the migrations: start over.
    pg_cluster.drop_database(template)
    pg_cluster.create_database(template)
    pg_cluster.run(migrate_template())
    yield template
    pg_cluster.drop_database(template)


_database_numbers = itertools.count(1)


def _database_name(prefix: str) -> str:
    # The PID keeps concurrent sessions on one FASTAGI_TEST_DSN server apart.
    return f"{prefix}_{os.getpid()}_{next(_database_numbers)}"


@pytest.fixture
def database_dsn(pg_cluster: PgServer, pg_template: str) -> Iterator[str]:
    """A DSN for a fresh, migrated database of this test alone."""
    name = _database_name("t")
    dsn = pg_cluster.create_database(name, template=pg_template)
    try:
        yield dsn
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
def empty_database_dsn(pg_cluster: PgServer) -> Iterator[str]:
    """A DSN for a fresh database without any migration applied."""
    name = _database_name("e")
    dsn = pg_cluster.create_database(name)
    try:
        yield dsn
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
async def db_pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    """An asyncpg pool on this test's fresh, migrated database."""
    pool = await asyncpg.create_pool(database_dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def one_connection_pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    """The production pool (fastagi/store/pool.py) with one connection: the connection a
    test takes again is the one it gave back (or its replacement), and a test can take
    the only one."""
    settings = DatabaseSettings(dsn=SecretStr(database_dsn), pool_min_size=1, pool_max_size=1)
    pool = await create_pool(settings)
    yield pool
    pool.terminate()  # at once, even when a broken release kept the connection


@pytest.fixture
def pg_tmp_dir() -> Iterator[Path]:
    """An empty directory the PostgreSQL OS user can use, for a cluster of a test's own."""
    with postgres_tmpdir() as path:
        yield path
