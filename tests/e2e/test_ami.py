"""AmiClient against the real sandbox Asterisk, with SIPp as the paging phone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from fastagi.ami import AmiClient, ConnectionState, EventStream, Message, OriginateReason
from fastagi.assurance.asterisk import PROBE_EVENT
from fastagi.domain.fallback import USER_EVENT as FALLBACK_USER_EVENT
from fastagi.freepbx import ami_user
from fastagi_dev.sandbox.instance import Sandbox
from tests import sipp

pytestmark = pytest.mark.e2e

# [sandbox-test] in the sandbox's extensions.conf: Answer, Playback(beep), Hangup.
CONTEXT = "sandbox-test"
EXTEN = "beep"


def client_for(sandbox: Sandbox, username: str | None = None, **options: Any) -> AmiClient:
    return AmiClient(
        sandbox.ami_host,
        sandbox.ami_port,
        username or sandbox.ami_username,
        SecretStr(sandbox.ami_secret),
        **options,
    )


def least_client(sandbox: Sandbox) -> AmiClient:
    """The sandbox's least-privilege user: the rights and event filters of the user
    `fastagi freepbx install` makes."""
    return client_for(sandbox, username=sandbox.least_ami_username)


@pytest.fixture
async def ami(sandbox: Sandbox) -> AsyncIterator[AmiClient]:
    async with client_for(sandbox) as client:
        yield client


async def next_matching(
    stream: EventStream, check: Callable[[Message], bool], *, within: float
) -> Message:
    async with asyncio.timeout(within):
        async for event in stream:
            if check(event):
                return event
    raise AssertionError("event stream ended")


async def test_originate_answered_by_paging_phone(
    sandbox: Sandbox, ami: AmiClient, tmp_path: Path
) -> None:
    uniqueid = f"e2e-{uuid.uuid4().hex[:12]}"
    async with ami.events("Hangup") as hangups, sipp.PagingPhone(sandbox, 201, tmp_path) as phone:
        result = await ami.originate(
            "PJSIP/201",
            context=CONTEXT,
            exten=EXTEN,
            timeout_ms=10_000,
            channel_id=uniqueid,
            caller_id='"Panic" <999>',
        )
        assert result.answered, result
        assert result.reason == OriginateReason.ANSWERED
        assert result.uniqueid == uniqueid
        assert result.channel.startswith("PJSIP/201-")
        # The dialplan plays the beep and hangs up: the stream sees our Hangup.
        hangup = await next_matching(hangups, lambda e: e.get("Uniqueid") == uniqueid, within=20)
        assert hangup["Channel"] == result.channel
        assert len(await phone.wait_invites(1)) == 1


async def test_variables_arrive_whole_and_hangup(
    sandbox: Sandbox, ami: AmiClient, tmp_path: Path
) -> None:
    # Commas, brackets, quotes and a non-ASCII letter: what an admin may type as a
    # department name. Unescaped, the comma would split it into two variables.
    department = 'Caf\u00e9, floor 2 (east) "B" [annex]'
    async with ami.events("Hangup") as hangups, sipp.PagingPhone(sandbox, 202, tmp_path):
        # [sandbox-test] echo: Answer, beep, Echo() until the far end hangs up.
        result = await ami.originate(
            "PJSIP/202",
            context=CONTEXT,
            exten="echo",
            timeout_ms=10_000,
            variables={"PANIC_DEPARTMENT": department, "PANIC_ALARM_ID": "42"},
        )
        assert result.answered, result
        assert await ami.get_variable("PANIC_DEPARTMENT", channel=result.channel) == department
        assert await ami.get_variable("PANIC_ALARM_ID", channel=result.channel) == "42"
        assert await ami.hangup(result.channel) is True
        await next_matching(hangups, lambda e: e.get("Uniqueid") == result.uniqueid, within=10)
        assert await ami.hangup(result.channel) is False  # gone: "No such channel"


async def test_originate_without_a_phone_fails_with_a_reason(ami: AmiClient) -> None:
    # PJSIP/299 has a static contact, but nothing listens on its port: PJSIP resends the
    # INVITE unanswered until the Originate's Timeout, which Asterisk reports as
    # reason 3 (it was still "ringing", AST_CONTROL_RINGING) and no channel id.
    result = await ami.originate("PJSIP/299", context=CONTEXT, exten=EXTEN, timeout_ms=2000)
    assert not result.success, result
    assert not result.answered
    assert result.reason == OriginateReason.NO_ANSWER, result
    assert result.uniqueid is None
    assert result.event["Response"] == "Failure"


async def test_device_state_set_and_read_back(ami: AmiClient) -> None:
    # A lamp of its own: Custom:PANIC is the site's, and a test on the same sandbox may
    # have left it BUSY, which Asterisk would not announce again as a change.
    lamp = f"Custom:AMITEST{uuid.uuid4().hex[:12].upper()}"
    async with ami.events("DeviceStateChange") as changes:
        await ami.set_device_state(lamp, "BUSY")
        assert await ami.get_device_state(lamp) == "BUSY"
        assert await ami.get_variable(f"DEVICE_STATE({lamp})") == "BUSY"
        change = await next_matching(changes, lambda e: e.get("Device") == lamp, within=10)
        assert change["State"] == "BUSY"
        await ami.set_device_state(lamp, "NOT_INUSE")
        assert await ami.get_device_state(lamp) == "NOT_INUSE"


async def test_ping_and_generic_action(ami: AmiClient) -> None:
    assert 0 <= await ami.ping(timeout=5) < 5
    status = await ami.action("CoreStatus")
    assert status.response == "Success"
    assert ami.asterisk_version


async def test_reconnects_after_asterisk_restart(
    sandbox_factory: Callable[..., Sandbox],
) -> None:
    instance = sandbox_factory()
    reconnected = asyncio.Event()
    lamp_after_restart: list[str] = []

    async with client_for(
        instance, reconnect_initial_delay=0.1, reconnect_max_delay=1.0, ping_interval=1.0
    ) as client:

        async def reapply_lamps() -> None:
            lamp_after_restart.append(await client.get_device_state("Custom:PANIC"))
            await client.set_device_state("Custom:PANIC", "INUSE")
            reconnected.set()

        client.on_reconnect(reapply_lamps)
        await client.set_device_state("Custom:PANIC", "BUSY")
        await instance.stop()
        await instance.start()
        async with asyncio.timeout(30):
            await reconnected.wait()
        assert client.state is ConnectionState.CONNECTED
        # Custom device states persist in astdb across the restart.
        assert lamp_after_restart == ["BUSY"]
        assert await client.get_device_state("Custom:PANIC") == "INUSE"


async def collect_until(
    stream: EventStream, seen: list[Message], last: Callable[[Message], bool]
) -> None:
    async with asyncio.timeout(20):
        async for event in stream:
            seen.append(event)
            if last(event):
                return
    raise AssertionError("event stream ended")


async def test_the_server_user_is_not_sent_the_events_it_never_reads(
    sandbox: Sandbox, ami: AmiClient, tmp_path: Path
) -> None:
    """The least-privilege user carries `fastagi freepbx install`'s event filter
    (fastagi/freepbx/ami_user.py EXCLUDED_EVENTS): a call and a lamp change reach it as
    the events the server reads, without the ones it never does."""
    lamp = f"Custom:AMITEST{uuid.uuid4().hex[:12].upper()}"
    uniqueid = f"e2e-{uuid.uuid4().hex[:12]}"
    marker = uuid.uuid4().hex
    seen: list[Message] = []
    least = least_client(sandbox)
    async with (
        least,
        least.events() as stream,
        ami.events("DeviceStateChange", "SoftHangupRequest") as unfiltered,
        sipp.PagingPhone(sandbox, 201, tmp_path),
    ):
        await ami.set_device_state(lamp, "BUSY")
        result = await ami.originate(
            "PJSIP/201", context=CONTEXT, exten=EXTEN, timeout_ms=10_000, channel_id=uniqueid
        )
        assert result.answered, result
        # Both were sent: the administrator's user (no filter) sees them.
        await next_matching(unfiltered, lambda e: e.get("Device") == lamp, within=10)
        await next_matching(unfiltered, lambda e: e.get("Uniqueid") == uniqueid, within=20)
        await collect_until(
            stream, seen, lambda e: e.get("Uniqueid") == uniqueid and e.event == "Hangup"
        )
        # Events reach a session in order: the UserEvent comes after all of the above.
        await ami.action("UserEvent", UserEvent="AmiTestMarker", Marker=marker)
        await collect_until(stream, seen, lambda e: e.get("Marker") == marker)

    names = {event.event for event in seen}
    assert {"Newchannel", "Newstate", "Hangup", "UserEvent"} <= names
    assert names & {"DeviceStateChange", "SoftHangupRequest", "HangupRequest"} == set()


async def test_the_server_user_is_not_sent_the_end_of_call_user_events_it_never_reads(
    sandbox: Sandbox, ami: AmiClient
) -> None:
    """The second filter line drops the UserEvents the dialplan sends as each route's
    call ends (ami_user.IGNORED_USER_EVENTS), sent from a channel as the h extensions send
    them, and lets through the two the server waits for."""
    marker = uuid.uuid4().hex
    names = (*ami_user.IGNORED_USER_EVENTS, PROBE_EVENT, FALLBACK_USER_EVENT)
    seen: list[Message] = []
    least = least_client(sandbox)
    async with least, least.events("UserEvent") as stream, ami.events("UserEvent") as unfiltered:
        for name in names:
            result = await ami.originate(
                f"Local/{EXTEN}@{CONTEXT}",
                context=CONTEXT,
                exten="userevent",
                variables={"SANDBOX_EVENT": name, "SANDBOX_MARKER": marker},
                timeout_ms=10_000,
            )
            assert result.answered, result
        # Every one was sent, from a channel: the administrator's user sees them all.
        sent: list[Message] = []
        await collect_until(
            unfiltered,
            sent,
            lambda e: {m.get("UserEvent") for m in sent if m.get("Marker") == marker} >= set(names),
        )
        assert all("Channel" in e for e in sent if e.get("Marker") == marker)
        # Events reach a session in the order they were sent: this one comes last.
        await ami.action("UserEvent", UserEvent="AmiTestMarker", Marker=f"{marker}-end")
        await collect_until(stream, seen, lambda e: e.get("Marker") == f"{marker}-end")

    got = {event.get("UserEvent") for event in seen if event.get("Marker") == marker}
    assert got == {PROBE_EVENT, FALLBACK_USER_EVENT}
