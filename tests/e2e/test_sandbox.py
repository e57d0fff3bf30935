"""The sandbox itself: it boots, has the phones and dialplan the other e2e tests rely on,
takes calls from SIPp desk phones, calls SIPp paging phones, and runs beside another
instance."""

from __future__ import annotations

import re

import pytest

from fastagi_dev.sandbox import Sandbox
from tests import sipp

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


async def test_boots_asterisk_22(sandbox: Sandbox) -> None:
    # A new AMI session is told FullyBooted right after login once boot is complete.
    async with await sandbox.ami() as ami:
        booted = await ami.wait_event("FullyBooted", within=5)
    assert booted["Status"] == "Fully Booted"
    assert sandbox.cli("core show version").startswith("Asterisk 22.")


def test_has_desk_and_paging_phones(sandbox: Sandbox) -> None:
    endpoints = sandbox.cli("pjsip show endpoints")
    assert re.search(r"Endpoint:\s+101\b", endpoints), endpoints
    assert re.search(r"Endpoint:\s+201\b", endpoints), endpoints
    contacts = sandbox.cli("pjsip show contacts")
    assert f"sip:201@127.0.0.1:{sandbox.phone_base + 201}" in contacts


def test_includes_the_repositorys_extensions_custom(sandbox: Sandbox, agi_port: int) -> None:
    probe = sandbox.cli("dialplan show fastagi-panic-probe")
    assert "[extensions_custom.conf:" in probe, probe
    assert "AGI(${FASTAGI_PANIC_URL}/probe" in probe
    assert "from-internal-custom" in sandbox.cli("dialplan show from-internal")
    assert f"agi://127.0.0.1:{agi_port}" in sandbox.cli("dialplan show globals")


async def test_desk_phone_call_with_dtmf(sandbox: Sandbox, tmp_path) -> None:
    async with await sandbox.ami() as ami:
        result = await sipp.call_dtmf(sandbox, tmp_path, service="digits", ext=101, answers=["42#"])
        result.check()
        event = await ami.wait_event("UserEvent", UserEvent="SandboxDigits", within=5)
    assert event["Digits"] == "42"
    assert event["Caller"] == "101"
    assert result.received("BYE"), "Asterisk should hang up when the dialplan ends"


async def test_desk_phone_hangs_up_mid_prompt(sandbox: Sandbox, tmp_path) -> None:
    result = await sipp.call_dtmf(sandbox, tmp_path, service="echo", hang_up=True)
    result.check()


async def test_paging_phone_answers_originate(sandbox: Sandbox, tmp_path) -> None:
    async with sipp.PagingPhone(sandbox, 201, tmp_path) as phone, await sandbox.ami() as ami:
        await ami.action(
            {
                "Action": "Originate",
                "Channel": "PJSIP/201",
                "Application": "Playback",
                "Data": "beep",
                "Async": "true",
                "ActionID": "page-201",
            }
        )
        response = await ami.wait_event("OriginateResponse", ActionID="page-201", within=10)
        assert response["Response"] == "Success", response
        times = await phone.wait_invites(1)
    assert len(times) == 1


async def test_blf_subscription_gets_dialog_notify(sandbox: Sandbox, tmp_path) -> None:
    result = await sipp.subscribe_dialog(sandbox, tmp_path, service="7000", ext=102)
    result.check()
    notifies = result.received("NOTIFY")
    assert notifies
    assert "application/dialog-info+xml" in notifies[0].text


async def test_two_instances_side_by_side(sandbox: Sandbox, sandbox_factory, tmp_path) -> None:
    other = sandbox_factory()
    assert other.instance_dir != sandbox.instance_dir
    assert {other.sip_port, other.ami_port}.isdisjoint({sandbox.sip_port, sandbox.ami_port})
    assert "System uptime" in other.cli("core show uptime")
    assert "System uptime" in sandbox.cli("core show uptime")
    first = await sipp.call_dtmf(other, tmp_path / "other", service="beep")
    second = await sipp.call_dtmf(sandbox, tmp_path / "first", service="beep")
    first.check()
    second.check()
