"""Asterisk: the AMI login and its rights, the dialplan we ship, and the FastAGI server
reached the way a panic call reaches it.

Everything here stays within the AMI user's rights (README, "AMI permissions"): write
``call,originate,reporting``, read ``system,call,user``. Each action the server uses is
tried where it cannot change anything (a channel or a context that does not exist: a
refused right answers "Permission denied", anything else proves the right). The
dialplan is read with ``Getvar`` of ``DIALPLAN_EXISTS()`` (not ``ShowDialPlan``, which
would list all of FreePBX's dialplan, nor ``Command``, which needs ``command``), and
the FastAGI server is proven by a real call to the probe route through a ``Local``
channel that rings no phone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from fastagi.ami import (
    AmiActionError,
    AmiAuthError,
    AmiClient,
    AmiError,
    AmiTimeout,
    EventStream,
    Message,
)
from fastagi.assurance.result import Finding, Status
from fastagi.assurance.runner import Check, Context
from fastagi.store.probe import ProbeStore

PERMISSION_DENIED = "Permission denied"
# Names that exist nowhere, so that each right is tried without touching anything.
NO_CHANNEL = "Local/fastagi-check-none@fastagi-check-none-00000000;1"
NO_CONTEXT = "fastagi-check-none"
CHECK_FAMILY = "fastagi-panic-check"

# The contexts of extensions_custom.conf that nothing in the settings renames.
OUR_CONTEXTS = (
    "panic-alarm",
    "fastagi-panic-trigger",
    "fastagi-panic-fallback",
    "fastagi-panic-fallback-loop",
    "fastagi-panic-fallback-page",
    "fastagi-panic-fallback-announce",
    "fastagi-panic-deactivate",
    "fastagi-panic-config",
    "fastagi-panic-probe",
    "fastagi-panic-page-leg",
)
PROBE_CONTEXT = "fastagi-panic-probe"
# The dialplan's own default, when FASTAGI_PANIC_URL is not set ([fastagi-panic-config]).
DEFAULT_URL = "agi://127.0.0.1:4573"
AGI_PORT = 4573
# The probe call's other half plays silence into it until the server is done: the
# prompt and GET DATA's 5 s take about 7 s.
PROBE_SILENCE = "silence/10&silence/10"
PROBE_CALLER_ID = '"fastagi check" <0>'
PROBE_EVENT = "FastAGIProbeEnd"
# The probe call takes about 7 s; a server that has not finished it by then hangs.
PROBE_WAIT = 20.0

Attempt = Callable[[AmiClient], Awaitable[object]]


async def ami(context: Context) -> Finding:
    settings = context.settings.ami
    where = f"{settings.username}@{settings.host}:{settings.port}"
    if context.lent_ami:
        client = context.ami
        if not client.connected:
            return Finding.fail(
                f"the server's AMI connection to {settings.host}:{settings.port} is"
                f" {client.state.value}",
                "is Asterisk running? The server reconnects by itself; its log says why not",
            )
    else:
        try:
            client = await context.open_ami()
        except AmiAuthError as exc:
            return Finding.fail(
                str(exc),
                "set [ami] username and secret to the user in manager_custom.conf"
                " (fastagi freepbx install writes both)",
            )
        except (AmiError, OSError) as exc:
            return Finding.fail(
                str(exc),
                "is Asterisk running, with the manager enabled on that address"
                " (manager.conf [general] enabled, bindaddr, port)?",
            )
    try:
        rtt = await client.ping()
    except AmiError as exc:
        return Finding.fail(f"logged in as {where}, but Ping failed: {exc}")
    version = client.asterisk_version or "?"
    return Finding.ok(f"logged in as {where} (AMI {version}, Ping {rtt * 1000:.0f} ms)")


def _originate_nowhere(client: AmiClient) -> Awaitable[object]:
    # Refused by main/manager.c before any channel is made: the context does not exist.
    return client.originate(
        f"Local/s@{NO_CONTEXT}/n", context=NO_CONTEXT, exten="s", timeout_ms=1000
    )


# Each action the server sends (fastagi/freepbx/ami_user.py RIGHTS), tried harmlessly,
# with the write class it needs.
NEEDED: tuple[tuple[str, str, Attempt], ...] = (
    ("Originate", "originate", _originate_nowhere),
    ("Hangup", "call", lambda c: c.action("Hangup", Channel=NO_CHANNEL)),
    ("Setvar", "call", lambda c: c.action("Setvar", Channel=NO_CHANNEL, Variable="X", Value="")),
    ("Getvar", "call", lambda c: c.action("Getvar", Channel=NO_CHANNEL, Variable="X")),
    ("DBGet", "reporting", lambda c: c.action("DBGet", Family=CHECK_FAMILY, Key="none")),
    ("DBGetTree", "reporting", lambda c: c.action_list("DBGetTree", Family=CHECK_FAMILY)),
    ("CoreSettings", "reporting", lambda c: c.action("CoreSettings")),
)
# Rights the server must not have: each of these succeeding is a warning. Both harmless.
EXCESS: tuple[tuple[str, str, Attempt], ...] = (
    ("Command", "command", lambda c: c.action("Command", Command="core show uptime")),
    ("ModuleCheck", "system", lambda c: c.action("ModuleCheck", Module="app_page")),
)


async def _allowed(client: AmiClient, attempt: Attempt) -> bool:
    try:
        await attempt(client)
    except AmiActionError as exc:
        return exc.message != PERMISSION_DENIED
    return True


def _named(entry: tuple[str, str, Attempt]) -> str:
    name, write_class, _ = entry
    return f"{name} (write {write_class})"


async def ami_rights(context: Context) -> Finding:
    client = context.ami
    needed = await asyncio.gather(*(_allowed(client, attempt) for _, _, attempt in NEEDED))
    excess = await asyncio.gather(*(_allowed(client, attempt) for _, _, attempt in EXCESS))
    refused = [
        f"{name} (write {cls})" for (name, cls, _), ok in zip(NEEDED, needed, strict=True) if not ok
    ]
    if refused:
        return Finding.fail(
            f"the AMI user may not: {', '.join(refused)}",
            "give it write = call,originate,reporting in manager_custom.conf, then"
            " `manager reload` (fastagi freepbx install writes it so)",
        )
    problems = []
    too_much = [
        f"{name} (write {cls})" for (name, cls, _), ok in zip(EXCESS, excess, strict=True) if ok
    ]
    if too_much:
        problems.append(f"the AMI user may also run {', '.join(too_much)}: more than it needs")
    if not client.fully_booted:
        problems.append(
            "no FullyBooted event at login: the user does not read 'system' events, and"
            " the server waits 10 s at each connection before it acts"
        )
    if problems:
        return Finding.warn(
            "; ".join(problems),
            "make it read = system,call,user and write = call,originate,reporting",
        )
    names = ", ".join(name for name, _, _ in NEEDED)
    return Finding.ok(f"may {names}; may not Command, ModuleCheck; FullyBooted seen")


async def exists(client: AmiClient, context: str, exten: str | None = None) -> bool:
    """Whether the dialplan has ``context`` (and ``exten`` at priority 1 in it,
    includes followed) now: ``DIALPLAN_EXISTS()`` (func_dialplan.c) through Getvar."""
    argument = context if exten is None else f"{context},{exten},1"
    return await client.get_variable(f"DIALPLAN_EXISTS({argument})") == "1"


def our_contexts(context: Context) -> list[str]:
    settings = context.settings
    return [
        *OUR_CONTEXTS,
        settings.alarm.page_context,
        settings.alarm.announce_context,
        settings.emergency.context,
    ]


async def dialplan(context: Context) -> Finding:
    client = context.ami
    check = context.settings.check
    contexts = our_contexts(context)
    found = await asyncio.gather(*(exists(client, name, "s") for name in contexts))
    missing = [name for name, ok in zip(contexts, found, strict=True) if not ok]
    codes = await asyncio.gather(
        *(exists(client, check.phone_context, code) for code in check.feature_codes)
    )
    unreachable = [code for code, ok in zip(check.feature_codes, codes, strict=True) if not ok]
    if missing or unreachable:
        problems = []
        if missing:
            problems.append(f"contexts not loaded: {', '.join(missing)}")
        if unreachable:
            problems.append(
                f"feature codes not found from {check.phone_context}: {', '.join(unreachable)}"
            )
        return Finding.fail(
            "; ".join(problems),
            "is fastagi-panic.conf included (fastagi freepbx install), and the dialplan"
            " reloaded (fwconsole reload, or `dialplan reload`)? Changed codes: set"
            " [check] feature_codes",
        )
    warnings = []
    lamp = context.settings.alarm.lamp_device
    trigger = check.feature_codes[0] if check.feature_codes else None
    if trigger is not None:
        state = await client.action("ExtensionState", Exten=trigger, Context=check.phone_context)
        if lamp not in (state.get("Hint") or ""):
            warnings.append(
                f"no BLF hint {lamp} on {trigger}@{check.phone_context}: a lamp key on"
                f" {trigger} will not light"
            )
    if not await client.get_variable("FASTAGI_PANIC_FALLBACK_DEVICES"):
        warnings.append(
            "FASTAGI_PANIC_FALLBACK_DEVICES is empty: when no server answers, the dialplan"
            " raises the alarm but pages nobody"
        )
    if warnings:
        return Finding.warn(
            "; ".join(warnings),
            "set FASTAGI_PANIC_FALLBACK_DEVICES in globals_custom.conf (README, 'When no"
            " server answers') and keep the hint lines of [fastagi-panic-hints]",
        )
    return Finding.ok(
        f"{len(contexts)} contexts loaded; {', '.join(check.feature_codes)} found from"
        f" {check.phone_context}; BLF hint and fallback devices set"
    )


def _port(url: str) -> int | None:
    try:
        parts = urlsplit(url)
        return parts.port or AGI_PORT if parts.scheme == "agi" else None
    except ValueError:
        return None


async def fastagi_url(context: Context) -> Finding:
    """FASTAGI_PANIC_URL set and pointing at a server that answers: a call to the probe
    route, as a phone dialling *599 makes it, and the row it leaves in PostgreSQL."""
    client = context.ami
    settings = context.settings
    announce = settings.alarm.announce_context
    for needed in (PROBE_CONTEXT, announce):
        if not await exists(client, needed, "s"):
            return Finding.skip(f"not checked: context {needed} is not loaded (see dialplan)")
    url = await client.get_variable("FASTAGI_PANIC_URL")
    url2 = await client.get_variable("FASTAGI_PANIC_URL2")
    effective = url or DEFAULT_URL
    notes = []
    if not url:
        notes.append(f"FASTAGI_PANIC_URL is not set: the dialplan's default {DEFAULT_URL} applies")
    ports = [_port(each) for each in (effective, url2) if each]
    # hagi:// (SRV records) names no port: nothing to compare.
    if None not in ports and settings.agi.port not in ports:
        notes.append(
            f"neither FASTAGI_PANIC_URL nor _URL2 uses this server's port {settings.agi.port}"
        )
    finding = await _probe_call(context, client, announce, effective)
    if finding.status is not Status.OK or not notes:
        return finding
    return Finding.warn(
        f"{finding.message}; but {'; '.join(notes)}",
        "set FASTAGI_PANIC_URL in globals_custom.conf (fastagi freepbx install --agi-url)",
    )


async def _probe_call(context: Context, client: AmiClient, announce: str, url: str) -> Finding:
    probe_id = str(uuid.uuid4())
    loop = asyncio.get_running_loop()
    started = loop.time()
    ended = await _call_probe_route(client, announce, url, probe_id)
    if isinstance(ended, Finding):
        return ended
    seconds = loop.time() - started
    agi_status, status = ended.get("AGISTATUS", ""), ended.get("FASTAGI_STATUS", "")
    if agi_status == "FAILURE":
        return Finding.fail(
            f"Asterisk could not reach the FastAGI server at {url} (AGISTATUS=FAILURE)",
            "is `fastagi serve` running and listening there (agi.host, agi.port), and does"
            " agi.allowed_networks let Asterisk's address in?",
        )
    if agi_status != "SUCCESS" or status != "OK":
        return Finding.fail(
            f"the FastAGI server at {url} took the probe call but it ended"
            f" AGISTATUS={agi_status or '-'} FASTAGI_STATUS={status or '-'}",
            f"the server's log says why (the probe's uniqueid is {probe_id})",
        )
    row = await ProbeStore(context.pool).find(probe_id)
    if row is None:
        return Finding.fail(
            f"the FastAGI server at {url} answered the probe call, but its row is not in"
            " this database",
            "does the server at that URL use another database.dsn than this one?",
        )
    return Finding.ok(f"{url} answered a probe call in {seconds:.1f} s (probe_calls #{row.id})")


async def _call_probe_route(
    client: AmiClient, announce: str, url: str, probe_id: str
) -> Message | Finding:
    """The probe route's end (its UserEvent), or why the call did not get there."""
    async with client.events("UserEvent") as events:
        try:
            result = await client.originate(
                f"Local/s@{PROBE_CONTEXT}/n",
                context=announce,
                exten="s",
                variables={"PANIC_PROMPTS": PROBE_SILENCE, "PANIC_LEAD_IN": "0"},
                caller_id=PROBE_CALLER_ID,
                timeout_ms=10_000,
                channel_id=str(uuid.uuid4()),
                other_channel_id=probe_id,
            )
        except AmiTimeout:
            return Finding.fail(
                "no OriginateResponse for the probe call: the AMI user does not read"
                " 'call' events, and the server would not see a page's outcome either",
                "make it read = system,call,user",
            )
        if not result.answered:
            return Finding.fail(
                f"the probe call to {PROBE_CONTEXT} did not start ({result.reason_name})",
                "see Asterisk's log",
            )
        try:
            async with asyncio.timeout(PROBE_WAIT):
                return await _probe_end(events, probe_id)
        except TimeoutError:
            return Finding.fail(
                f"the probe call did not end within {PROBE_WAIT:g} s (no {PROBE_EVENT}"
                f" UserEvent): the server at {url} hangs, or the AMI user does not read"
                " 'user' events",
                "make it read = system,call,user; else see the server's log",
            )


async def _probe_end(events: EventStream, probe_id: str) -> Message:
    # The probe route's h extension: UserEvent FastAGIProbeEnd (read class user), on the
    # channel whose uniqueid we chose.
    async for message in events:
        if (
            message.event == "UserEvent"
            and message.get("UserEvent") == PROBE_EVENT
            and (message.get("Uniqueid") == probe_id)
        ):
            return message
    raise AmiError("the AMI connection closed before the probe call ended")


CHECKS = (
    Check("ami", "the AMI login works", ami),
    Check(
        "ami-rights", "the AMI user may do what the server does, and no more", ami_rights, ("ami",)
    ),
    Check("dialplan", "our contexts, feature codes and hint are loaded", dialplan, ("ami",)),
    Check(
        "fastagi-url",
        "Asterisk reaches this server's FastAGI probe route",
        fastagi_url,
        ("ami", "migrations"),
    ),
)
