"""A PostgreSQL cluster of our own, for ``make run`` and the tests.

Theory of operation: a cluster is a data directory plus a small working directory next
to it (``<data_dir>/../``) holding the unix socket and the server log. ``init()`` runs
``initdb`` once; ``start()`` writes ``fastagi.conf`` into the data directory (port,
addresses, socket, optional test tuning), which ``postgresql.conf`` includes, then runs
``pg_ctl start -w`` and polls ``pg_isready`` until the server accepts a connection.
Keeping the settings in a file rather than on the command line means a cluster started
by hand with ``pg_ctl -D`` behaves the same.

PostgreSQL refuses to run as root, so when we are root every server binary runs as the
``postgres`` OS user (``runuser``) and the directories are handed over to it.

The server listens on 127.0.0.1 only and trusts every local connection: this is a
development and test cluster, never the production database.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "postgres"
# The OS user that runs the server when we are root; the Debian package creates it.
OS_USER = "postgres"
CONFIG_FILE = "fastagi.conf"
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
# sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107
_SHMEM_IN_USE = "pre-existing shared memory block"


class ClusterError(Exception):
    """The cluster could not be created, started or stopped; the message says why."""


def find_bin_dir(version: str | None = None) -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    ``version`` (a data directory's ``PG_VERSION``) asks for that major version. Otherwise
    the ``initdb`` on ``PATH`` wins, then the newest ``/usr/lib/postgresql/<ver>/bin`` (where
    Debian's ``postgresql`` package puts them, off ``PATH``).
    """
    if version is not None:
        candidate = DEBIAN_PG_ROOT / version / "bin"
        if _is_bin_dir(candidate):
            return candidate
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidate = Path(on_path).resolve().parent
        if _is_bin_dir(candidate) and (version is None or _major_version(candidate) == version):
            return candidate
    installed = sorted(
        (path for path in DEBIAN_PG_ROOT.glob("*/bin") if _is_bin_dir(path)),
        key=lambda path: _version_key(path.parent.name),
        reverse=True,
    )
    for candidate in installed:
        if version is None or candidate.parent.name == version:
            return candidate
    wanted = f"PostgreSQL {version}" if version else "PostgreSQL"
    raise ClusterError(
        f"{wanted} server binaries not found (no initdb on PATH or in "
        f"{DEBIAN_PG_ROOT}/*/bin); install the Debian package 'postgresql'"
    )


def _is_bin_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def _major_version(bin_dir: Path) -> str | None:
    result = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    match = re.search(r"(\d+)(?:\.\d+)?", result.stdout)
    return match.group(1) if match else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedCluster:
    """One PostgreSQL cluster in ``data_dir``, started and stopped by this process.

    ``port=None`` picks a free port at each start. ``tuned_for_tests`` makes ``initdb``
    skip its fsync and turns off ``fsync``, ``synchronous_commit`` and
    ``full_page_writes``: fast, and unsafe on a crash, so only for throwaway clusters.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        tuned_for_tests: bool = False,
        bin_dir: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self._fixed_port = port is not None
        self.tuned_for_tests = tuned_for_tests
        self._bin_dir = bin_dir
        self.socket_dir = self.data_dir.parent / "socket"
        self.log_file = self.data_dir.parent / "postgresql.log"
        self._as_root = os.geteuid() == 0

    # -- queries ---------------------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir(self.pg_version())
        return self._bin_dir

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def pg_version(self) -> str | None:
        """The major version the data directory was created with, or None."""
        try:
            return (self.data_dir / "PG_VERSION").read_text().strip()
        except FileNotFoundError:
            return None

    def is_running(self) -> bool:
        """Whether a postmaster serves this data directory (ours or adopted)."""
        pid = self._postmaster_pid()
        return pid is not None and _is_postmaster_of(pid, self.data_dir)

    def dsn(self, database: str = "postgres") -> str:
        if self.port is None:
            raise ClusterError("the cluster has no port yet: start() it first")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{quote(database, safe='')}"

    # -- life cycle ------------------------------------------------------------------

    def init(self) -> bool:
        """Create the cluster unless the data directory already holds one.

        Returns True when ``initdb`` ran.
        """
        if self.is_initialized():
            return False
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ClusterError(f"{self.data_dir} exists, is not empty and holds no cluster")
        self._prepare_dirs()
        command = [
            str(self.bin_dir / "initdb"),
            f"--pgdata={self.data_dir}",
            "--auth=trust",
            f"--username={SUPERUSER}",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ]
        if self.tuned_for_tests:
            command.append("--no-sync")
        self._run(command, what="initdb")
        return True

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and return once it accepts connections.

        A server already running on this data directory is adopted as it is. A
        ``postmaster.pid`` left by a killed server is cleared first.
        """
        if not self.is_initialized():
            raise ClusterError(f"{self.data_dir} holds no cluster: init() it first")
        if self.is_running():
            self.port = self._running_port()
            self._wait_ready(time.monotonic() + timeout)
            return
        self._prepare_dirs()
        deadline = time.monotonic() + timeout
        self._clear_stale_locks(deadline)
        attempts_left = 1 if self._fixed_port else 3
        while True:
            if not self._fixed_port:
                self.port = free_port()
            self._write_config()
            log_offset = self._log_size()
            try:
                self._pg_ctl_start(deadline)
            except ClusterError as exc:
                log = self._log_tail(since=log_offset)
                if _SHMEM_IN_USE in log and time.monotonic() < deadline:
                    # The backends of a killed postmaster are still on their way out.
                    time.sleep(0.1)
                    continue
                attempts_left -= 1
                if "could not bind" in log and attempts_left > 0:
                    continue  # someone took the free port between our check and the bind
                raise ClusterError(f"{exc}\n{log}") from None
            break
        self._wait_ready(deadline)

    def stop(self, timeout: float = 60.0) -> None:
        """Fast shutdown: roll back open transactions, disconnect clients, stop."""
        if not self.is_running():
            return
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "stop",
                f"--pgdata={self.data_dir}",
                "--mode=fast",
                "--wait",
                f"--timeout={max(1, round(timeout))}",
            ],
            what="pg_ctl stop",
        )

    def ensure_database(self, name: str) -> bool:
        """Create database ``name`` unless it exists; True when it was created."""
        psql = [
            str(self.bin_dir / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--tuples-only",
            "--no-align",
            f"--dbname={self.dsn('postgres')}",
            "--set=ON_ERROR_STOP=1",
            f"--set=name={name}",
        ]
        exists = subprocess.run(
            psql,
            input="SELECT 1 FROM pg_database WHERE datname = :'name';",
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
        )
        if exists.returncode != 0:
            raise ClusterError(f"psql failed: {exists.stderr.strip()}")
        if exists.stdout.strip() == "1":
            return False
        created = subprocess.run(
            psql,
            input='CREATE DATABASE :"name";',
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
        )
        if created.returncode != 0:
            raise ClusterError(f"psql failed: {created.stderr.strip()}")
        return True

    # -- internals -------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        socket_path = self.socket_dir / ".s.PGSQL.65535"
        if len(str(socket_path)) > _MAX_SOCKET_PATH:
            raise ClusterError(
                f"{self.socket_dir} is too long a path for a unix socket; "
                "put the data directory somewhere shorter"
            )
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self.log_file.touch(mode=0o600, exist_ok=True)
        if self._as_root:
            user = _os_user()
            for path in (self.data_dir, self.socket_dir, self.log_file):
                if path.stat().st_uid != user.pw_uid:
                    os.chown(path, user.pw_uid, user.pw_gid)
            probe = subprocess.run(
                ["runuser", "-u", OS_USER, "--", "test", "-w", str(self.data_dir)],
                check=False,
                cwd="/",
            )
            if probe.returncode != 0:
                raise ClusterError(
                    f"the {OS_USER!r} OS user cannot reach {self.data_dir}: "
                    "a parent directory is not searchable by it"
                )

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
        }
        if self.tuned_for_tests:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        lines = ["# Written by fastagi at each start; edits are lost.\n"]
        lines += [
            f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n" for key, value in settings.items()
        ]
        config = self.data_dir / CONFIG_FILE
        config.write_text("".join(lines))
        main_config = self.data_dir / "postgresql.conf"
        include = f"include_if_exists = '{CONFIG_FILE}'\n"
        if include not in main_config.read_text():
            with main_config.open("a") as file:
                file.write("\n" + include)
        if self._as_root:
            user = _os_user()
            os.chown(config, user.pw_uid, user.pw_gid)
        config.chmod(0o600)

    def _pg_ctl_start(self, deadline: float) -> None:
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "start",
                f"--pgdata={self.data_dir}",
                f"--log={self.log_file}",
                "--wait",
                f"--timeout={max(1, round(deadline - time.monotonic()))}",
            ],
            what="pg_ctl start",
        )

    def _wait_ready(self, deadline: float) -> None:
        """Poll until the server answers a connection attempt, or fail at the deadline."""
        command = [
            str(self.bin_dir / "pg_isready"),
            "--quiet",
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--username={SUPERUSER}",
            "--dbname=postgres",
            "--timeout=1",
        ]
        delay = 0.01
        while True:
            if subprocess.run(command, check=False, cwd="/").returncode == 0:
                return
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"PostgreSQL on port {self.port} does not accept connections\n"
                    + self._log_tail()
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _clear_stale_locks(self, deadline: float) -> None:
        """Remove lock files naming a process that is not our postmaster but looks alive.

        PostgreSQL itself recognises a lock file whose PID is gone, and then also checks
        that no orphaned backend still holds the old shared memory. It refuses to start
        when the PID still answers a signal: after a reboot or a container restart it may
        belong to an unrelated process, and a killed postmaster whose parent never reaps
        it stays a zombie. Those lock files we remove, once no process of the old server
        is left working in the data directory.
        """
        lock_files = [self.data_dir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")]
        for lock_file in lock_files:
            pid = _read_pid(lock_file)
            if pid is None or _pid_state(pid) == "gone":
                continue
            if _is_postmaster_of(pid, self.data_dir):
                raise ClusterError(f"PostgreSQL (PID {pid}) already runs in {self.data_dir}")
            self._wait_for_orphans(deadline)
            lock_file.unlink(missing_ok=True)

    def _wait_for_orphans(self, deadline: float) -> None:
        """Wait until no live process works in the data directory (a killed server's
        backends exit on their own once they notice their postmaster is gone)."""
        delay = 0.01
        while orphans := _processes_in(self.data_dir):
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"processes {orphans} of an earlier server still use {self.data_dir}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _postmaster_pid(self) -> int | None:
        return _read_pid(self.data_dir / "postmaster.pid")

    def _running_port(self) -> int:
        # postmaster.pid: pid, data dir, start time, port, socket dir, address, key, status
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        try:
            return int(lines[3])
        except (IndexError, ValueError):
            raise ClusterError(
                f"cannot read the port from {self.data_dir}/postmaster.pid"
            ) from None

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_tail(self, lines: int = 20, since: int = 0) -> str:
        """The last lines of the server log, of what was written after offset ``since``."""
        try:
            with self.log_file.open("rb") as file:
                file.seek(since)
                text = file.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _run(self, command: Sequence[str], *, what: str) -> str:
        if self._as_root:
            command = ["runuser", "-u", OS_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False, cwd="/")
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            raise ClusterError(f"{what} failed (exit {result.returncode}): {output}")
        return result.stdout


def _os_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        raise ClusterError(
            f"running as root, PostgreSQL needs the {OS_USER!r} OS user, which does not "
            "exist; install the Debian package 'postgresql'"
        ) from None


def _read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    # A single-user backend writes its PID negated.
    return abs(int(first)) if re.fullmatch(r"-?\d+", first) else None


def _pid_state(pid: int) -> str:
    """``gone``, ``zombie`` (exited, never reaped: still answers signals) or ``alive``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        pass
    with contextlib.suppress(OSError, IndexError):
        stat = (Path("/proc") / str(pid) / "stat").read_text()
        if stat.rpartition(")")[2].split()[0] == "Z":
            return "zombie"
    return "alive"


def _processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory`` (those we may inspect)."""
    target = directory.resolve()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError):
            if Path(os.readlink(proc / "cwd")) == target and _pid_state(int(proc.name)) == "alive":
                found.append(int(proc.name))
    return found


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a live postgres process working in ``data_dir``."""
    if _pid_state(pid) != "alive":
        return False
    proc = Path("/proc") / str(pid)
    if not proc.is_dir():
        return True  # no procfs: trust the PID
    try:
        if (proc / "comm").read_text().strip() != "postgres":
            return False
    except OSError:
        return False
    with contextlib.suppress(OSError):
        # The postmaster chdirs into its data directory.
        return Path(os.readlink(proc / "cwd")) == data_dir.resolve()
    return True  # another user's process: the name is all we can see
