"""The embedded cluster's life cycle, on a cluster of the test's own."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import asyncpg
import pytest

from fastagi_dev.cluster import ClusterError, EmbeddedCluster, find_bin_dir, free_port

pytestmark = [pytest.mark.db, pytest.mark.timeout(120)]


def query(dsn: str, sql: str) -> object:
    async def run() -> object:
        connection = await asyncpg.connect(dsn)
        try:
            return await connection.fetchval(sql)
        finally:
            await connection.close()

    return asyncio.run(run())


def execute(dsn: str, sql: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


def wait_dead(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    proc_stat = Path(f"/proc/{pid}/stat")
    while True:
        try:
            os.kill(pid, 0)
            state = proc_stat.read_text().rpartition(")")[2].split()[0]
        except (ProcessLookupError, FileNotFoundError):
            return
        if state == "Z":
            return
        assert time.monotonic() < deadline, f"PID {pid} still alive"
        time.sleep(0.01)


@pytest.fixture
def cluster(pg_tmp_dir: Path) -> EmbeddedCluster:
    try:
        find_bin_dir()
    except ClusterError as exc:
        pytest.skip(str(exc))
    return EmbeddedCluster(pg_tmp_dir / "data")


def test_find_bin_dir_has_the_server_binaries() -> None:
    try:
        bin_dir = find_bin_dir()
    except ClusterError as exc:
        pytest.skip(str(exc))

    assert (bin_dir / "initdb").is_file()
    assert (bin_dir / "pg_ctl").is_file()
    assert (bin_dir / "postgres").is_file()


def test_start_before_init_is_a_clear_error(cluster: EmbeddedCluster) -> None:
    with pytest.raises(ClusterError, match="holds no cluster: init"):
        cluster.start()


def test_life_cycle_with_reuse_of_the_data_dir(cluster: EmbeddedCluster) -> None:
    created = cluster.init()
    created_again = cluster.init()
    cluster.start()
    try:
        dsn = cluster.dsn("postgres")
        execute(dsn, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before')")
        fsync = query(dsn, "SHOW fsync")
        listen = query(dsn, "SHOW listen_addresses")
        socket_dir = query(dsn, "SHOW unix_socket_directories")
        running = cluster.is_running()
        created_database = cluster.ensure_database("app")
        created_database_again = cluster.ensure_database("app")
    finally:
        cluster.stop()

    assert (created, created_again) == (True, False)
    assert running
    assert (created_database, created_database_again) == (True, False)
    assert fsync == "on"  # not a test-tuned cluster
    assert listen == "127.0.0.1"
    assert socket_dir == str(cluster.socket_dir)
    assert not cluster.is_running()
    cluster.stop()  # stopping a stopped cluster is a no-op

    port = free_port()
    reused = EmbeddedCluster(cluster.data_dir, port=port)
    reused.start()
    try:
        adopted = EmbeddedCluster(cluster.data_dir)
        adopted.start()  # already running: adopted, not started twice
        kept = query(reused.dsn("postgres"), "SELECT v FROM kept")
        adopted_port = adopted.port
    finally:
        reused.stop()

    assert reused.dsn("app") == f"postgresql://postgres@127.0.0.1:{port}/app"
    assert kept == "before"
    assert adopted_port == port


def test_start_after_the_server_was_killed(cluster: EmbeddedCluster) -> None:
    cluster.init()
    cluster.start()
    execute(cluster.dsn("postgres"), "CREATE TABLE kept (v int); INSERT INTO kept VALUES (1)")
    pid_file = cluster.data_dir / "postmaster.pid"
    pid = int(pid_file.read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)

    stale = pid_file.exists()
    stopped = not cluster.is_running()
    cluster.start()
    try:
        kept = query(cluster.dsn("postgres"), "SELECT v FROM kept")
    finally:
        cluster.stop()

    assert stale
    assert stopped
    assert kept == 1


def test_start_with_a_pid_file_naming_another_process(cluster: EmbeddedCluster) -> None:
    # After a reboot the PID in a leftover postmaster.pid may be some unrelated process;
    # ours is alive and is not a postmaster.
    cluster.init()
    pid_file = cluster.data_dir / "postmaster.pid"
    pid_file.write_text(f"{os.getpid()}\n{cluster.data_dir}\n0\n5432\n\n127.0.0.1\n0 0\nready\n")

    not_running = not cluster.is_running()
    cluster.start()
    try:
        answer = query(cluster.dsn("postgres"), "SELECT 1")
    finally:
        cluster.stop()

    assert not_running
    assert answer == 1


def test_the_session_cluster_is_tuned_for_tests(database_dsn: str) -> None:
    if os.environ.get("FASTAGI_TEST_DSN"):
        pytest.skip("FASTAGI_TEST_DSN: the server's settings are its own")
    settings = query(
        database_dsn,
        "SELECT array_agg(setting ORDER BY name) FROM pg_settings"
        " WHERE name IN ('fsync', 'full_page_writes', 'synchronous_commit')",
    )

    assert settings == ["off", "off", "off"]
