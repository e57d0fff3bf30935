"""``fastagi check`` against a site that works, then one fault at a time: each fault
turns its own line to FAIL, with a message that says what is wrong, and leaves every
other line OK (or SKIP, for the lines that stand on the failed one).

The site: a sandbox Asterisk of this module's own, whose Asterisk is bound by file
permissions (root without CAP_DAC_OVERRIDE: ``bypass_file_permissions=False``) and
qualifies paging phones 201-204 (OPTIONS every 2 s), answered by SIPp phones; a real
server (``running_server``) on a fresh database with departments ER (201, 202) and ICU
(203), a deactivator and an emergency destination (204 and a dialplan extension);
aiosmtpd with STARTTLS and a login; an HTTP SMS gateway. The check logs in to AMI as the
least-privileged user, as production does.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import trustme
from pydantic import SecretStr

from fastagi.admin import deactivators, departments, paging
from fastagi.app import running_server
from fastagi.assurance import Report, Status, run_checks
from fastagi.config import Settings
from fastagi.store import Stores
from fastagi_dev.sandbox.ami import AmiClient as SandboxAmi
from fastagi_dev.sandbox.instance import Sandbox
from tests import sipp
from tests.notify_servers import SmtpServer, WebhookServer, login_smtp
from tests.qualified_phones import qualified_phones, settle
from tests.sandbox_fixtures import sandbox_of_its_own

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

ER_PHONES = (201, 202)
ICU_PHONE = 203
EMERGENCY_PHONE = 204
PHONES = (*ER_PHONES, ICU_PHONE, EMERGENCY_PHONE)
SMTP_PASSWORD = "correct-horse-battery-staple"
# The lines that stand on AMI: SKIP when its login fails.
ON_AMI = (
    *("ami-rights", "dialplan", "fastagi-url", "paging-devices", "tts"),
    *("unknown-extension", "emergency"),
)


@dataclass(frozen=True)
class Site:
    sandbox: Sandbox
    agi_port: int


@pytest.fixture(scope="module")
def site(sandbox_rootfs: Path) -> Iterator[Site]:
    # File modes bind Asterisk, and its phones are qualified.
    with sandbox_of_its_own(
        sandbox_rootfs, "check", bypass_file_permissions=False, qualified_phones=PHONES
    ) as (instance, claim):
        yield Site(instance, claim.tcp_port(0))


@pytest.fixture
async def admin(site: Site) -> AsyncIterator[SandboxAmi]:
    """The sandbox's all-rights AMI user, for the test's own eyes (ContactStatus)."""
    async with await site.sandbox.ami() as client:
        yield client


@pytest.fixture
async def phones(
    site: Site, admin: SandboxAmi, tmp_path: Path
) -> AsyncIterator[dict[int, sipp.Phone]]:
    async with qualified_phones(site.sandbox, admin, PHONES, tmp_path) as started:
        yield started


@pytest.fixture
def mail(ca: trustme.CA, tmp_path: Path) -> Iterator[tuple[SmtpServer, str]]:
    with login_smtp(ca, tmp_path, SMTP_PASSWORD) as started:
        yield started


def config_toml(
    site: Site, dsn: str, tmp_path: Path, mail: tuple[SmtpServer, str], gateway: WebhookServer
) -> str:
    box = site.sandbox
    smtp, ca_file = mail
    return f"""
[agi]
port = {site.agi_port}
shutdown_grace = 1

[database]
dsn = "{dsn}"

[ami]
host = "{box.ami_host}"
port = {box.ami_port}
username = "{box.least_ami_username}"
secret = "{box.ami_secret}"

[tts]
directory = "{box.tts_dir}"
asterisk_directory = "{box.tts_dir_in_asterisk}"

[recording]
directory = "{box.recordings_dir}"
asterisk_directory = "{box.recordings_dir_in_asterisk}"

[alarm]
announcement = "Panic alarm. Department {{department}}. Extension {{extension}}."

[notify]
emails = ["er@hospital.example"]
sms = ["+491701234567"]

[notify.smtp]
host = "127.0.0.1"
port = {smtp.port}
security = "starttls"
username = "pbx"
password = "{SMTP_PASSWORD}"
ca_file = "{ca_file}"
from_address = "pbx@hospital.example"
timeout = 5

[notify.webhook]
url = "{gateway.url("/sms")}"
timeout = 5

[emergency]
destinations = ["PJSIP/{EMERGENCY_PHONE}", "Local/echo@from-internal"]

[journal]
directory = "{tmp_path / "journal"}"
"""


async def seed(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        stores, by = Stores.over(pool), "test"
        for group, exts in (("ER", ER_PHONES), ("ICU", (ICU_PHONE,))):
            await paging.add_paging_group(stores, group, by=by)
            for ext in exts:
                await paging.add_paging_device(stores, group, f"PJSIP/{ext}", by=by)
            await departments.add_department(stores, group, paging_group=group, by=by)
        await departments.map_extensions(stores, "ER", "100-149", by=by)
        await departments.map_extensions(stores, "ICU", "150-199", by=by)
        await deactivators.set_deactivator(stores, "150", "2580", by=by)
    finally:
        await pool.close()


@pytest.fixture
async def config(
    site: Site,
    database_dsn: str,
    tmp_path: Path,
    mail: tuple[SmtpServer, str],
    gateway: WebhookServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """The site's config.toml, named by FASTAGI_CONFIG (and nothing else FASTAGI_*)."""
    for name in list(os.environ):
        if name.startswith("FASTAGI_"):
            monkeypatch.delenv(name)
    path = tmp_path / "config.toml"
    path.write_text(config_toml(site, database_dsn, tmp_path, mail, gateway))
    monkeypatch.setenv("FASTAGI_CONFIG", str(path))
    await seed(database_dsn)
    return path


@pytest.fixture
async def server(config: Path, phones: dict[int, sipp.Phone]) -> AsyncIterator[Settings]:
    """The site's server, running, with its phones up; its settings."""
    settings = Settings()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running_server(settings))
        yield settings


def assert_lines(report: Report, **expected: Status) -> None:
    """The named lines have the given statuses (``paging_devices=Status.FAIL``), every
    other line is OK."""
    wanted = {name.replace("_", "-"): status for name, status in expected.items()}
    got = {result.name: result.status for result in report.results}
    assert got == {name: wanted.get(name, Status.OK) for name in got}, _lines(report)


def _lines(report: Report) -> str:
    return "\n".join(f"{r.status.value} {r.name}: {r.message} | {r.remedy}" for r in report.results)


async def test_a_working_site_is_all_ok_from_the_command_line(
    server: Settings, config: Path
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fastagi",
        "check",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "FASTAGI_CONFIG": str(config)},
    )
    out, err = await process.communicate()
    printed = json.loads(out)
    lines = {line["name"]: (line["status"], line["message"]) for line in printed["checks"]}
    assert {name: status for name, (status, _) in lines.items()} == dict.fromkeys(lines, "OK"), (
        json.dumps(printed, indent=2) + err.decode()
    )
    assert process.returncode == 0
    assert len(lines) == 18
    assert lines["fastagi-url"][1].startswith(f"agi://127.0.0.1:{server.agi.port} answered")
    assert lines["paging-devices"][1] == "all 3 paging devices of 2 departments reachable"
    assert "Asterisk played /fastagi/instances/" in lines["tts"][1]


async def test_a_paging_phone_gone(
    server: Settings, phones: dict[int, sipp.Phone], admin: SandboxAmi
) -> None:
    await phones[ICU_PHONE].stop()
    await settle(admin, (ICU_PHONE,), "Unreachable")
    report = await run_checks(server)
    assert_lines(report, paging_devices=Status.FAIL)
    line = report.result("paging-devices")
    assert line.message.startswith(
        f"ICU has no reachable phone: PJSIP/{ICU_PHONE} (contact sip:{ICU_PHONE}@127.0.0.1:"
    )
    assert line.message.endswith(" Unreachable)")


async def test_a_department_with_one_of_its_phones_gone_warns(
    server: Settings, phones: dict[int, sipp.Phone], admin: SandboxAmi
) -> None:
    await phones[ER_PHONES[1]].stop()
    await settle(admin, (ER_PHONES[1],), "Unreachable")
    report = await run_checks(server)
    assert_lines(report, paging_devices=Status.WARN)
    assert report.result("paging-devices").message.startswith(f"ER: PJSIP/{ER_PHONES[1]} (")


async def test_a_wrong_ami_secret(server: Settings) -> None:
    wrong = server.ami.model_copy(update={"secret": SecretStr("not-the-secret")})
    report = await run_checks(server.model_copy(update={"ami": wrong}))
    assert_lines(
        report, ami=Status.FAIL, **{name.replace("-", "_"): Status.SKIP for name in ON_AMI}
    )
    line = report.result("ami")
    assert line.message.startswith(
        f"AMI login refused for user '{server.ami.username}' at 127.0.0.1:{server.ami.port}"
    )
    assert "not-the-secret" not in json.dumps(report.to_dict())
    assert report.result("tts").message == "not checked: needs ami, which did not pass"


async def test_our_contexts_removed_and_the_dialplan_reloaded(
    server: Settings, site: Site, admin: SandboxAmi
) -> None:
    dialplan = site.sandbox.config_dir / "extensions_custom.conf"
    original = dialplan.read_text()
    probe_exists = {"Action": "Getvar", "Variable": "DIALPLAN_EXISTS(fastagi-panic-probe)"}
    dialplan.write_text("; emptied by the test\n")
    try:
        await site.sandbox.acli("dialplan reload")
        assert (await admin.action(probe_exists))["Value"] == "0"
        report = await run_checks(server)
    finally:
        dialplan.write_text(original)
        await site.sandbox.acli("dialplan reload")
    assert (await admin.action(probe_exists))["Value"] == "1"
    # The probe call and the prompt's playback need contexts of ours: not checked.
    assert_lines(report, dialplan=Status.FAIL, fastagi_url=Status.SKIP, tts=Status.SKIP)
    line = report.result("dialplan")
    assert line.message.startswith("contexts not loaded: panic-alarm, fastagi-panic-trigger,")
    assert line.message.endswith("feature codes not found from from-internal: *555, *556, *599")
    assert "fastagi freepbx install" in line.remedy
    assert report.result("fastagi-url").message == (
        "not checked: context fastagi-panic-probe is not loaded (see dialplan)"
    )


async def test_smtp_refusing_the_login(server: Settings, ca: trustme.CA, tmp_path: Path) -> None:
    # The site's CA: the settings' ca_file trusts this server as it trusts the site's.
    with login_smtp(ca, tmp_path, "another password") as (refusing, _):
        smtp = server.notify.smtp.model_copy(update={"port": refusing.port})
        notify = server.notify.model_copy(update={"smtp": smtp})
        report = await run_checks(server.model_copy(update={"notify": notify}))
    assert_lines(report, smtp=Status.FAIL)
    line = report.result("smtp")
    assert line.message.startswith(f"127.0.0.1:{refusing.port}: 535 ")
    assert line.remedy == "check notify.smtp.username and password"
    assert refusing.inbox.mails == []


async def test_the_sms_webhook_down(server: Settings, gateway: WebhookServer) -> None:
    gateway.stop()
    report = await run_checks(server)
    assert_lines(report, webhook=Status.FAIL)
    assert report.result("webhook").message.startswith(
        "the SMS gateway http://127.0.0.1 does not answer: ConnectError"
    )


async def test_the_prompt_directory_unreadable_by_asterisk(server: Settings, site: Site) -> None:
    directory = site.sandbox.tts_dir
    # Owned by another user, 0700: as a directory the server's user made for itself.
    os.chown(directory, 65534, 65534)
    directory.chmod(0o700)
    try:
        report = await run_checks(server)
    finally:
        os.chown(directory, 0, 0)
        directory.chmod(0o755)
    assert_lines(report, tts=Status.FAIL)
    line = report.result("tts")
    assert line.message.startswith(f"Asterisk could not play {site.sandbox.tts_dir_in_asterisk}/")
    assert f"in {directory} (0700 " in line.message
    assert "mode 2770" in line.remedy


async def test_no_server_behind_the_fastagi_url(
    config: Path, phones: dict[int, sipp.Phone], site: Site
) -> None:
    # Everything as in the working site, but no `fastagi serve` is running.
    report = await run_checks(Settings())
    assert_lines(report, fastagi_url=Status.FAIL)
    assert report.result("fastagi-url").message == (
        f"Asterisk could not reach the FastAGI server at agi://127.0.0.1:{site.agi_port}"
        " (AGISTATUS=FAILURE)"
    )
