"""``fastagi freepbx install`` into a FreePBX-shaped sandbox Asterisk, for real.

The sandbox's etc/ has FreePBX's shape (``Sandbox(freepbx=True)``: extensions.conf with
``[from-internal]`` -> ``[from-internal-xfer]`` -> ``[from-internal-custom]`` and
``#include extensions_custom.conf``, globals_custom.conf inside ``[globals]``,
manager.conf including manager_custom.conf) and none of our dialplan. Install (as a
process, the way an administrator runs it) writes ours and reloads the running Asterisk;
then a desk phone dials ``*555`` through ``from-internal`` to a ``fastagi serve`` that
reads nothing but the settings install wrote, the page reaches a SIPp paging phone, the
AMI user install wrote is refused what needs ``system`` or ``command``, and uninstall
leaves every file of etc/ as it was, to the byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import socket
import stat
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores
from fastagi_dev.sandbox.ami import AmiClient, AmiError
from fastagi_dev.sandbox.instance import Sandbox
from fastagi_dev.sandbox.ports import free_port
from tests import sipp
from tests.e2e.server_process import ServerProcess, seed_department, wait_alarm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DESK = 101
PAGING = 201
_names = itertools.count(1)


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


async def fastagi(*args: str) -> Run:
    """``python -m fastagi ...`` as a process, with no FASTAGI_* of the test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTAGI_")}
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fastagi",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode(), time.monotonic() - started)


def digests(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under ``directory``, by relative path."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


class NotifySocket:
    """What systemd listens on for ``Type=notify`` (an abstract unix datagram socket)."""

    def __init__(self) -> None:
        self.name = f"@fastagi-test-notify-{os.getpid()}-{next(_names)}"
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(b"\0" + self.name[1:].encode())
        self.socket.setblocking(False)
        self.received: list[bytes] = []

    async def wait_for(self, line: bytes, within: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within):
            while not any(line in message.split(b"\n") for message in self.received):
                self.received.append(await loop.sock_recv(self.socket, 4096))

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def pbx(sandbox_factory) -> Sandbox:
    instance: Sandbox = sandbox_factory(freepbx=True)
    return instance


@pytest.fixture
async def notify() -> AsyncIterator[NotifySocket]:
    listener = NotifySocket()
    try:
        yield listener
    finally:
        listener.close()


async def test_install_page_least_privilege_uninstall(
    pbx: Sandbox,
    database_dsn: str,
    db_pool: asyncpg.Pool[asyncpg.Record],
    notify: NotifySocket,
    tmp_path: Path,
) -> None:
    agi_port = free_port(socket.SOCK_STREAM)
    config = tmp_path / "etc-fastagi" / "config.toml"
    unit = tmp_path / "fastagi-panic.service"
    where = [
        "--asterisk-dir",
        str(pbx.config_dir),
        "--config",
        str(config),
        "--unit-path",
        str(unit),
        # The sandbox's asterisk runs in a chroot; on FreePBX install runs fwconsole reload.
        "--asterisk-command",
        f"chroot {pbx.rootfs} asterisk -C {pbx.asterisk_conf_in_chroot}",
    ]
    install = [
        "freepbx",
        "install",
        *where,
        "--systemd",
        "--agi-url",
        f"agi://127.0.0.1:{agi_port}",
        "--asterisk-user",
        "root",  # Asterisk runs as root in the sandbox's chroot
        "--tts-dir",
        str(pbx.tts_dir),
        "--tts-asterisk-dir",
        pbx.tts_dir_in_asterisk,
        "--recordings-dir",
        str(tmp_path / "locations"),
        "--journal-dir",
        str(tmp_path / "journal"),
        "--dsn",
        database_dsn,
    ]
    before = digests(pbx.config_dir)
    assert "fastagi-panic.conf" not in before

    first = await fastagi(*install)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    assert "-rx 'manager reload'" in first.stdout
    installed = digests(pbx.config_dir)
    again = await fastagi(*install)
    # The sandbox writes manager_custom.conf 0644, as an administrator may have.
    readable = (
        f"note: {pbx.config_dir}/manager_custom.conf is readable by every local user, and so "
        "is the AMI secret in it\n"
    )
    assert readable in first.stdout
    assert (again.returncode, again.stdout, again.stderr) == (
        0,
        readable + "nothing to change: already installed\n",
        "",
    )
    assert digests(pbx.config_dir) == installed
    # *557 records into incoming/ as Asterisk's user: install made both, Asterisk's.
    for directory in (tmp_path / "locations", tmp_path / "locations" / "incoming"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o2770, directory
    print(f"install {first.seconds:.2f} s (with two reloads); again {again.seconds:.2f} s")

    # What the running Asterisk made of it.
    assert f"FASTAGI_PANIC_URL=agi://127.0.0.1:{agi_port}" in await pbx.acli(
        "dialplan show globals"
    )
    assert "SITE_NAME=Sandbox ward" in await pbx.acli("dialplan show globals")
    features = await pbx.acli("dialplan show *555@from-internal")
    assert "Goto(fastagi-panic-trigger,s,1)" in features
    assert "Custom:PANIC" in features  # the BLF hint
    assert "Playback(beep)" in await pbx.acli("dialplan show 1234@from-internal")
    user = await pbx.acli("manager show user fastagi-panic")
    assert "read perm: system,call,user\n" in user
    assert "write perm: call,reporting,originate\n" in user
    assert "allow - 127.0.0.1/255.255.255.255" in user

    # The server, configured by nothing but the file install wrote (and short test timings).
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTAGI_")}
    env.update(
        {
            "FASTAGI_CONFIG": str(config),
            "FASTAGI_ALARM__LEAD_IN": "0.3",
            "FASTAGI_ALARM__ANNOUNCEMENT": "Panic {extension}.",
            "FASTAGI_ALARM__PAGE_TIMEOUT": "5",
            "FASTAGI_AGI__SHUTDOWN_GRACE": "1",
            "NOTIFY_SOCKET": notify.name,
            "WATCHDOG_USEC": "2000000",
        }
    )
    server = ServerProcess("freepbx", env, tmp_path / "server.log")
    store = Stores.over(db_pool)
    await seed_department(store, "FreePBX Ward", str(DESK), [f"PJSIP/{PAGING}"], 60)
    try:
        await server.start()
        await notify.wait_for(b"READY=1", within=5)
        async with sipp.PagingPhone(pbx, PAGING, tmp_path) as phone:
            dialled = time.monotonic()
            call = await sipp.call_dtmf(
                pbx,
                tmp_path / "trigger",
                service="*555",
                ext=DESK,
                answers=["1"],
            )
            call.check()
            await phone.wait_invites(1, within=20)
            paged = time.monotonic() - dialled
            alarm = await wait_alarm(store, str(DESK), cycles=1, within=20)
        (invite,) = phone.received("INVITE")
        assert f'"PANIC FreePBX Ward" <sip:{DESK}@' in invite.text
        print(f"*555 dialled to the page's INVITE: {paged:.2f} s")
        event = HistoryEvent(EventKind.DEACTIVATED, alarm.id, alarm.extension, "FreePBX Ward")
        assert await store.alarms.deactivate(alarm.id, "test", "done", event) is not None
        await notify.wait_for(b"WATCHDOG=1", within=5)
    finally:
        await server.stop()
    await notify.wait_for(b"STOPPING=1", within=5)
    assert "AMI logged in" in server.log()
    assert "no FullyBooted" not in server.log()

    # The AMI user install wrote: what the server needs works, nothing more.
    ami = tomllib.loads(config.read_text())["ami"]
    assert (ami["username"], ami["port"]) == ("fastagi-panic", pbx.ami_port)
    async with await AmiClient.connect(
        "127.0.0.1", pbx.ami_port, ami["username"], ami["secret"]
    ) as client:
        await client.wait_event("FullyBooted", within=5)  # read = system
        await client.action({"Action": "Ping"})
        await client.action(
            {"Action": "Setvar", "Variable": "DEVICE_STATE(Custom:PANIC_TEST)", "Value": "BUSY"}
        )
        state = await client.action(
            {"Action": "Getvar", "Variable": "DEVICE_STATE(Custom:PANIC_TEST)"}
        )
        assert state["Value"] == "BUSY"
        with pytest.raises(AmiError, match="Database entry not found"):  # allowed, just empty
            await client.action({"Action": "DBGet", "Family": "DEVICE", "Key": "101/emergency_cid"})
        refused = {
            "Command": {"Command": "core show version"},  # command
            "DBPut": {"Family": "x", "Key": "y", "Val": "z"},  # system
            "ModuleCheck": {"Module": "chan_pjsip"},  # system
            "Reload": {},  # system or config
            "UpdateConfig": {"SrcFilename": "x", "DstFilename": "y"},  # config
        }
        for action, fields in refused.items():
            with pytest.raises(AmiError, match="Permission denied"):
                await client.action({"Action": action, **fields})
        # DB() over AMI is refused whatever the rights (func_db registers it escalating and
        # AMI sessions inhibit escalation, main/tcptls.c): a Getvar reads it as empty,
        # silently. DBGet (reporting) is the way to read astdb.
        await pbx.acli("database put fastagi probe 42")
        assert (await client.action({"Action": "Getvar", "Variable": "DB(fastagi/probe)"}))[
            "Value"
        ] == ""
        with pytest.raises(AmiError, match="Variable not set"):
            await client.action({"Action": "Setvar", "Variable": "DB(fastagi/probe)", "Value": "1"})
        await client.action({"Action": "DBGet", "Family": "fastagi", "Key": "probe"})
        with pytest.raises(AmiError, match="GetVar Access Forbidden"):
            await client.action({"Action": "Getvar", "Variable": "SHELL(id)"})
        with pytest.raises(AmiError, match="Originate Access Forbidden"):
            await client.action(
                {
                    "Action": "Originate",
                    "Channel": "Local/beep@from-internal",
                    "Application": "System",
                    "Data": "touch /tmp/pwned",
                    "Async": "true",
                }
            )

    # Uninstall: every file of etc/ as before install, and Asterisk forgot it all.
    removal = await fastagi("freepbx", "uninstall", *where)
    assert removal.returncode == 0, removal.stderr
    assert digests(pbx.config_dir) == before
    assert not config.exists()
    assert not unit.exists()
    print(f"uninstall {removal.seconds:.2f} s (with two reloads)")
    assert "There is no manager called fastagi-panic" in await pbx.acli(
        "manager show user fastagi-panic"
    )
    assert "There is no existence of *555@from-internal" in await pbx.acli(
        "dialplan show *555@from-internal"
    )
