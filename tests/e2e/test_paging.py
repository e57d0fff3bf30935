"""Pager against the sandbox Asterisk: Page() over a Local channel to SIPp paging phones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from pydantic import SecretStr

from fastagi.alarms.paging import CycleResult, Pager
from fastagi.ami import AmiClient
from fastagi.config import AlarmSettings
from fastagi_dev.sandbox.instance import Sandbox
from tests import sipp

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

PHONES = (201, 202, 203, 204)
# Built-in sounds of several seconds, so a page lasts long enough to be cancelled.
LONG_PROMPTS = ("beep", "vm-Urgent", "extension", "digits/2", "digits/0", "digits/1")
SETTINGS = AlarmSettings(lead_in=0.5, page_timeout=5, max_page_seconds=30)


@pytest.fixture
async def ami(sandbox: Sandbox) -> AsyncIterator[AmiClient]:
    client = AmiClient(
        sandbox.ami_host, sandbox.ami_port, sandbox.ami_username, SecretStr(sandbox.ami_secret)
    )
    async with client:
        yield client


async def phones(
    stack: AsyncExitStack, sandbox: Sandbox, workdir: Path, exts
) -> list[sipp.PagingPhone]:
    return [
        await stack.enter_async_context(sipp.PagingPhone(sandbox, ext, workdir)) for ext in exts
    ]


async def test_page_reaches_every_phone_with_auto_answer_headers(
    sandbox: Sandbox, ami: AmiClient, tmp_path: Path
) -> None:
    pager = Pager(ami, SETTINGS)
    async with AsyncExitStack() as stack:
        group = await phones(stack, sandbox, tmp_path, PHONES)
        result = await pager.page(
            1,
            1,
            [f"PJSIP/{ext}" for ext in PHONES],
            ["beep"],
            caller_name="PANIC Ward 3",
            caller_number="101",
        )
        for phone in group:
            await phone.wait("BYE")
    assert result == CycleResult(
        dialled=4,
        answered=4,
        duration=result.duration,
        error=None,
        channel_id=result.channel_id,
        devices={f"PJSIP/{ext}": "answered" for ext in PHONES},
    )
    assert 0.5 < result.duration < 10
    assert not pager.in_flight(1)
    for phone in group:
        (invite,) = phone.received("INVITE")
        assert f"Alert-Info: {SETTINGS.alert_info}" in invite.text
        assert f"Call-Info: {SETTINGS.call_info}" in invite.text
        assert '"PANIC Ward 3" <sip:101@' in invite.text
        # The page ended by itself (the announcement's end), one BYE per phone.
        assert len(phone.received("BYE")) == 1


async def test_empty_header_settings_add_no_header(
    sandbox: Sandbox, ami: AmiClient, tmp_path: Path
) -> None:
    pager = Pager(ami, SETTINGS.model_copy(update={"alert_info": "", "call_info": ""}))
    async with sipp.PagingPhone(sandbox, 205, tmp_path) as phone:
        result = await pager.page(2, 1, ["PJSIP/205"], ["beep"])
        await phone.wait("BYE")
    assert (result.dialled, result.answered, result.error) == (1, 1, None)
    (invite,) = phone.received("INVITE")
    assert "Alert-Info" not in invite.text
    assert "Call-Info" not in invite.text


async def test_page_to_a_device_without_phone_is_a_failure_not_an_exception(
    ami: AmiClient,
) -> None:
    # PJSIP/299 has a contact, but nothing listens there: it rings until page_timeout.
    pager = Pager(ami, SETTINGS)
    result = await pager.page(3, 1, ["PJSIP/299"], ["beep"])
    assert result.dialled == 1
    assert result.answered == 0
    assert result.error == "no device answered"
    assert result.devices == {"PJSIP/299": "no answer"}
    assert not result.ok


async def test_page_without_devices_or_with_bad_ones(ami: AmiClient) -> None:
    pager = Pager(ami, SETTINGS)
    empty = await pager.page(4, 1, [], ["beep"])
    assert empty.error == "no devices to page"
    assert empty.devices == {}
    assert (empty.dialled, empty.answered, empty.channel_id) == (0, 0, None)
    bad = await pager.page(4, 2, ["PJSIP/201&PJSIP/202"], ["beep"])
    assert bad.error is not None
    assert "cannot be passed" in bad.error
    assert bad.devices == {"PJSIP/201&PJSIP/202": "not dialled"}


async def test_page_with_ami_down_returns_an_error(sandbox: Sandbox) -> None:
    client = AmiClient(
        sandbox.ami_host, sandbox.ami_port, sandbox.ami_username, SecretStr(sandbox.ami_secret)
    )
    await client.connect()
    await client.close()  # closed: every action fails at once
    result = await Pager(client, SETTINGS).page(5, 1, ["PJSIP/201"], ["beep"])
    assert result.error is not None
    assert result.error.startswith("originate failed")
    assert result.answered == 0


async def test_cancel_hangs_up_every_leg(sandbox: Sandbox, ami: AmiClient, tmp_path: Path) -> None:
    pager = Pager(ami, SETTINGS)
    async with AsyncExitStack() as stack:
        group = await phones(stack, sandbox, tmp_path, PHONES)
        page = asyncio.create_task(
            pager.page(6, 1, [f"PJSIP/{ext}" for ext in PHONES], list(LONG_PROMPTS))
        )
        for phone in group:
            await phone.wait_invites(1)
        await asyncio.sleep(1.0)  # the legs are up and the announcement plays
        assert pager.in_flight(6)
        cancelled_at = time.time()
        assert await pager.cancel(6) is True
        returned_after = time.time() - cancelled_at
        for phone in group:
            await phone.wait("BYE", within=5)
        result = await page
    last_bye = max(phone.received("BYE")[0].time.timestamp() for phone in group)
    cancel_to_last_bye = last_bye - cancelled_at
    print(f"cancel() returned after {returned_after * 1000:.1f} ms; "
          f"last BYE {cancel_to_last_bye * 1000:.1f} ms after cancel()")  # fmt: skip
    assert cancel_to_last_bye < 1.0
    assert result.cancelled
    assert (result.dialled, result.answered, result.error) == (4, 4, None)
    assert await pager.cancel(6) is False  # nothing in flight any more


async def test_cancel_before_the_page_starts_ringing(
    sandbox: Sandbox, ami: AmiClient, tmp_path: Path
) -> None:
    pager = Pager(ami, SETTINGS)
    async with sipp.PagingPhone(sandbox, 206, tmp_path) as phone:
        page = asyncio.create_task(pager.page(7, 1, ["PJSIP/206"], list(LONG_PROMPTS)))
        await asyncio.sleep(0)  # the Originate is written, nothing has come back yet
        assert await pager.cancel(7, within=10) is True
        result = await asyncio.wait_for(page, 15)
        # Every INVITE that got out is ended: by a CANCEL when the hang-up caught the leg
        # ringing (Asterisk had not seen the phone's 200 yet), by a BYE when answered. The
        # page ends with the Hangup events, and PJSIP sends those requests from its own
        # thread, so they may reach SIPp's log a little later.
        await phone.wait(("BYE ", "CANCEL "), len(phone.received("INVITE ")), within=5)
    assert result.cancelled
    assert result.duration < 5


async def test_concurrent_pages_each_hear_only_their_own_legs(
    sandbox: Sandbox, ami: AmiClient, tmp_path: Path
) -> None:
    # One subscription serves every page in flight, routed by the page's Linkedid: each
    # page must count its own legs, none of another's, and leave nothing subscribed.
    pager = Pager(ami, SETTINGS)
    groups = {11: (201, 202), 12: (203,), 13: (204, 205)}
    async with AsyncExitStack() as stack:
        await phones(stack, sandbox, tmp_path, [ext for exts in groups.values() for ext in exts])
        results = await asyncio.gather(
            *(
                pager.page(alarm_id, 1, [f"PJSIP/{ext}" for ext in exts], ["beep"])
                for alarm_id, exts in groups.items()
            )
        )
    for (alarm_id, exts), result in zip(groups.items(), results, strict=True):
        assert result.error is None, (alarm_id, result)
        assert (result.dialled, result.answered) == (len(exts), len(exts))
        assert result.devices == {f"PJSIP/{ext}": "answered" for ext in exts}
        assert not pager.in_flight(alarm_id)
    # No page in flight: the call events of other calls are not even parsed.
    assert ami._wanted_events() == frozenset()
