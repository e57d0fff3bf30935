"""The AMI user the server logs in as: loopback only, and the least rights that work.

Every action the code sends (fastagi/ami/client.py, fastagi/alarms/) and every event it
reads, with the class main/manager.c asks for. References are to asterisk/asterisk at
commit f0c1c1a7b7 (master, August 2026); the registrations have not changed since
Asterisk 12. An action runs when the user's ``write`` classes share one bit with the
action's (manager.c:7155 ``writeperm & act_found->authority``, or the action needs none);
an event reaches a session only when its ``read`` classes cover the event's class
(manager.c:6488). ``read`` classes grant no action at all.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Right:
    what: str  # action or event
    kind: str  # "action" or "event"
    classes: str  # what manager.c requires (any one of them for an action)
    chosen: str  # the class we grant for it ("" when none is needed)
    source: str  # where manager.c says so
    used_by: str


RIGHTS: tuple[Right, ...] = (
    Right("Login", "action", "none", "", "main/manager.c:9794", "AmiClient._login"),
    Right("Logoff", "action", "none", "", "main/manager.c:9793", "AmiClient.close"),
    Right("Ping", "action", "none", "", "main/manager.c:9791", "AmiClient._ping (keep-alive)"),
    Right(
        "Originate",
        "action",
        "originate",
        "originate",
        "main/manager.c:9808; with Context/Exten (never Application) the per-application "
        "checks of manager.c:5133-5166, 5367 do not apply",
        "Pager.page, EmergencyCaller (always Async)",
    ),
    Right(
        "Hangup",
        "action",
        "system or call",
        "call",
        "main/manager.c:9796",
        "Pager.cancel, EmergencyCaller._hang_up",
    ),
    Right(
        "Setvar",
        "action",
        "call",
        "call",
        "main/manager.c:9798 (DEVICE_STATE() and DB_DELETE() are not escalating; DB() is"
        " dangerous and refused over AMI whatever the rights, funcs/func_db.c)",
        "Lamps: DEVICE_STATE(Custom:PANIC); FallbackAdopter: DB_DELETE() of an adopted entry",
    ),
    Right(
        "Getvar",
        "action",
        "call or reporting",
        "call",
        "main/manager.c:9799; a name containing SHELL or EVAL needs system too "
        "(manager.c:728-738, 3643)",
        "AmiClient.get_device_state; the fallback devices global",
    ),
    Right(
        "DBGetTree",
        "action",
        "system or reporting",
        "reporting",
        "main/db.c (manager_dbgettree, registered like DBGet; Asterisk 16.28, 18.14, 19.6, 20+)",
        "FallbackAdopter: the alarms the dialplan raised without a server",
    ),
    Right(
        "DBGet",
        "action",
        "system or reporting",
        "reporting",
        "main/db.c:1264",
        "EmergencyCaller: FreePBX's DEVICE/<ext>/emergency_cid",
    ),
    Right(
        "CoreSettings",
        "action",
        "system or reporting",
        "reporting",
        "main/manager.c:9819",
        "fastagi check: Asterisk's run user and group (who must be able to read the prompts)",
    ),
    Right(
        "ExtensionState",
        "action",
        "call or reporting",
        "call",
        "main/manager.c:9810",
        "fastagi check: the BLF hint of the trigger's feature code",
    ),
    Right(
        "Command",
        "action",
        "command",
        "",
        "main/manager.c:9809",
        "fastagi check tries `core show uptime`: it must be refused (else: too many rights)",
    ),
    Right(
        "ModuleCheck",
        "action",
        "system",
        "",
        "main/manager.c:9826",
        "fastagi check tries it on app_page: it must be refused (else: too many rights)",
    ),
    Right(
        "FullyBooted",
        "event",
        "system",
        "system",
        "main/manager.c:3423 (sent at Login only to a session reading system), "
        "main/asterisk.c:1012",
        "AmiClient._wait_fully_booted: actions wait until Asterisk has booted",
    ),
    Right(
        "OriginateResponse",
        "event",
        "call",
        "call",
        "main/manager.c:4473, 4491",
        "AmiClient.originate: the outcome of every page and emergency call",
    ),
    Right(
        "Newchannel, Newstate, Hangup",
        "event",
        "call",
        "call",
        "main/manager_channels.c:642, 670, 651",
        "Pager (who answered, when the page ended), EmergencyCaller (hang-up cause)",
    ),
    Right(
        "DialBegin",
        "event",
        "call",
        "call",
        "main/manager_channels.c channel_dial_cb (manager_event(EVENT_FLAG_CALL, ...))",
        "Pager: each device of a page dialled (its INVITE out) before the page lock ends",
    ),
    Right(
        "ConfbridgeJoin",
        "event",
        "call",
        "call",
        "apps/confbridge/confbridge_manager.c:592",
        "Pager: a paged phone joined the page",
    ),
    Right(
        "UserEvent",
        "event",
        "user",
        "user",
        'apps/app_userevent.c (manager_event(EVENT_FLAG_USER, "UserEvent", ...))',
        "FallbackAdopter: FastAGIPanicFallback, adopt at once",
    ),
    Right(
        "DBGetTreeResponse",
        "event",
        "none (part of DBGetTree's answer)",
        "",
        "main/db.c (astman_append to the asking session)",
        "FallbackAdopter",
    ),
    Right(
        "DBGetResponse",
        "event",
        "none (part of DBGet's answer)",
        "",
        "main/db.c:1037 (astman_append to the asking session)",
        "EmergencyCaller",
    ),
)

READ = "system,call,user"
WRITE = "call,originate,reporting"
# Events of the classes the user reads that nothing here reads (the table above lists
# what it does read; tests/unit/test_freepbx_plan.py checks the two never meet). Asterisk
# drops them before they reach the session. A PBX sends them for every call and phone:
# in the sandbox a probe call brought seven events, three of them these (two
# DeviceStateChange, a SoftHangupRequest), and on a FreePBX every BLF lamp and contact
# qualify adds more. Each one cost the server a wake-up, a read and a look
# (docs/performance.md, "The AMI events of other calls").
EXCLUDED_EVENTS = (
    "DeviceStateChange",
    "ExtensionStatus",
    "PresenceStateChange",
    "HangupRequest",
    "SoftHangupRequest",
    "NewCallerid",
    "NewConnectedLine",
    "NewAccountCode",
    "Rename",
    "Hold",
    "Unhold",
    "MusicOnHoldStart",
    "MusicOnHoldStop",
    "DialState",
    "DialEnd",
    "BridgeCreate",
    "BridgeDestroy",
    "BridgeEnter",
    "BridgeLeave",
    "BridgeMerge",
    "LocalBridge",
    "ContactStatus",
    "PeerStatus",
    "Registry",
)


# The UserEvents the dialplan sends as each route's call ends (extensions_custom.conf, the
# h extensions), for monitoring and the tests. The server reads two UserEvents, which
# stay: FastAGIProbeEnd (its probe check, fastagi/assurance/asterisk.py) and
# FastAGIPanicFallback (an alarm the dialplan raised without it). Every panic call brought
# the server one of these, for nothing.
IGNORED_USER_EVENTS = (
    "FastAGIPanicEnd",
    "FastAGIDeactivateEnd",
    "FastAGIDrillEnd",
    "FastAGIRecordLocationEnd",
    "FastAGIEmergencyEnd",
)


def event_filters() -> tuple[str, ...]:
    """The manager.conf lines that drop EXCLUDED_EVENTS and IGNORED_USER_EVENTS for the
    user.

    Regular expression filters, which every Asterisk since 1.8 reads (``eventfilter``,
    "!" excludes what matches; manager.conf.sample). Each is matched against the event's
    whole text, which starts with its ``Event:`` header (manager.c
    ``__ast_manager_event_multichan``); an event name must end there, so
    ``ContactStatusDetail`` (an answer to an action, not filtered anyway) is not caught by
    ``ContactStatus``. A UserEvent's own name is its ``UserEvent:`` header, after the
    channel's headers when the dialplan sent it: manager.c compiles the filters without
    REG_NEWLINE, so ``.`` crosses lines to reach it.
    """
    return (
        "eventfilter = !^Event: (" + "|".join(EXCLUDED_EVENTS) + ")[[:space:]]",
        "eventfilter = !^Event: UserEvent[[:space:]].*[[:space:]]UserEvent: ("
        + "|".join(IGNORED_USER_EVENTS)
        + ")[[:space:]]",
    )


# What the user must never get: "system" and "command" write run shell commands (SHELL(),
# System(), the Command action's "!"), reload modules or write astdb (DBPut); "config"
# rewrites Asterisk's files.
FORBIDDEN_WRITE = frozenset({"system", "command", "config", "agent", "user", "dialplan"})


def _classes(value: str) -> set[str]:
    return {part.strip() for part in value.split(",") if part.strip()}


def needed_classes() -> tuple[set[str], set[str]]:
    """The read and write classes RIGHTS asks for."""
    read = {r.chosen for r in RIGHTS if r.kind == "event" and r.chosen}
    write = {r.chosen for r in RIGHTS if r.kind == "action" and r.chosen}
    return read, write


def render(username: str, secret: str) -> str:
    """The user's section for manager_custom.conf (inside our marker block)."""
    return (
        f"[{username}]\n"
        '; fastagi-panic\'s server (`fastagi serve`). Rights: README, "AMI permissions".\n'
        f"secret = {secret}\n"
        "; Loopback only. An IPv4 rule does not apply to an IPv6 client (main/acl.c\n"
        "; ast_apply_ha), so both families are denied first, then loopback permitted.\n"
        "deny = 0.0.0.0/0.0.0.0\n"
        "deny = ::/0\n"
        "permit = 127.0.0.1/255.255.255.255\n"
        "permit = ::1/128\n"
        f"read = {READ}\n"
        f"write = {WRITE}\n"
        "writetimeout = 5000\n"
        "; The events the server never reads, dropped by Asterisk before it sends them\n"
        "; (fastagi/freepbx/ami_user.py EXCLUDED_EVENTS, IGNORED_USER_EVENTS).\n"
        + "".join(f"{line}\n" for line in event_filters())
        + "; The server's scheduled checks log in afresh every [health] interval: not a\n"
        "; line in Asterisk's log each time.\n"
        "displayconnects = no\n"
    )


def secret_in(body: str) -> str | None:
    """The ``secret =`` value of a block ``render`` wrote."""
    for line in body.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "secret":
            return value.strip() or None
    return None


def username_in(body: str) -> str | None:
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and "]" in stripped:
            return stripped[1 : stripped.index("]")]
    return None
