"""Who would hear an alarm now: every paging device of every department, the devices of
an alarm from an unknown extension, and the emergency destinations.

A PJSIP device is read contact by contact (``PJSIP_ENDPOINT``, ``PJSIP_AOR`` and
``PJSIP_CONTACT`` through Getvar: ``PJSIPShowContacts`` needs write ``system``, which
the AMI user must not have). A contact Asterisk qualifies (OPTIONS pings,
``qualify_frequency``) is Reachable or Unreachable; one it does not qualify is
NonQualified, and nobody knows whether the phone is there. Other technologies are read
with ``DEVICE_STATE()``.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fastagi.ami import AmiClient
from fastagi.assurance.asterisk import exists
from fastagi.assurance.result import Finding
from fastagi.assurance.runner import Check, Context
from fastagi.domain.directory import Directory

_QUALIFY_REMEDY = (
    "set qualify_frequency on the AORs of these phones (FreePBX: the extension's"
    " Qualify Frequency, 60 by default), so Asterisk knows when one is gone"
)


class Reach(enum.Enum):
    REACHABLE = "reachable"
    UNKNOWN = "not qualified"  # Asterisk cannot tell
    UNREACHABLE = "unreachable"
    MISSING = "does not exist"


@dataclass(frozen=True)
class DeviceState:
    device: str
    reach: Reach
    detail: str  # why, e.g. "contact sip:203@10.0.0.3:5060 Unreachable"

    def __str__(self) -> str:
        return f"{self.device} ({self.detail})"


async def device_state(client: AmiClient, device: str) -> DeviceState:
    tech, _, resource = device.partition("/")
    if tech.upper() == "PJSIP":
        return await _pjsip_state(client, device, resource)
    state = await client.get_device_state(device)
    reach = {
        "INVALID": Reach.MISSING,
        "UNAVAILABLE": Reach.UNREACHABLE,
        "UNKNOWN": Reach.UNKNOWN,
    }.get(state, Reach.REACHABLE)
    return DeviceState(device, reach, f"DEVICE_STATE {state}")


async def _pjsip_state(client: AmiClient, device: str, endpoint: str) -> DeviceState:
    aors = await client.get_variable(f"PJSIP_ENDPOINT({endpoint},aors)")
    if not aors:
        return DeviceState(device, Reach.MISSING, f"no PJSIP endpoint {endpoint}")
    contacts: list[str] = []
    for aor in _split(aors):
        contacts += _split(await client.get_variable(f"PJSIP_AOR({aor},contact)") or "")
    if not contacts:
        return DeviceState(device, Reach.UNREACHABLE, "no contact: not registered")
    seen = []
    for contact in contacts:
        status = await client.get_variable(f"PJSIP_CONTACT({contact},status)") or "Unknown"
        uri = await client.get_variable(f"PJSIP_CONTACT({contact},uri)") or contact
        seen.append((status, uri))
    for wanted, reach in (
        ("Reachable", Reach.REACHABLE),
        ("NonQualified", Reach.UNKNOWN),
        ("Unknown", Reach.UNKNOWN),
        ("Created", Reach.UNKNOWN),
    ):
        for status, uri in seen:
            if status == wanted:
                return DeviceState(device, reach, f"contact {uri} {status}")
    status, uri = seen[0]
    return DeviceState(device, Reach.UNREACHABLE, f"contact {uri} {status}")


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


async def states(context: Context, devices: Iterable[str]) -> dict[str, DeviceState]:
    """Each device's state, asked once per run whichever checks want it."""
    unique = list(dict.fromkeys(devices))
    found = await asyncio.gather(*(_state_once(context, device) for device in unique))
    return dict(zip(unique, found, strict=True))


async def _state_once(context: Context, device: str) -> DeviceState:
    async def ask() -> DeviceState:
        return await device_state(context.ami, device)

    return await context.once(f"device:{device}", ask)


async def directory(context: Context) -> Directory:
    return await context.once("directory", context.stores.directory.load_directory)


def _group_verdict(found: Sequence[DeviceState]) -> Reach:
    """Whether a group of devices would be heard: REACHABLE if all are, UNREACHABLE if
    none can be (no device, or all missing or unreachable), else UNKNOWN (some are
    gone, or Asterisk cannot tell)."""
    if found and all(state.reach is Reach.REACHABLE for state in found):
        return Reach.REACHABLE
    if all(state.reach in (Reach.MISSING, Reach.UNREACHABLE) for state in found):
        return Reach.UNREACHABLE
    return Reach.UNKNOWN


async def paging_devices(context: Context) -> Finding:
    snapshot = await directory(context)
    departments = [d for d in snapshot.departments if d.devices]
    if not departments:
        return Finding.ok("no department has paging devices (see the departments line)")
    found = await states(context, (device for d in departments for device in d.devices))
    silent, partial, fine = [], [], []
    for department in departments:
        group = [found[device] for device in department.devices]
        verdict = _group_verdict(group)
        bad = [str(state) for state in group if state.reach is not Reach.REACHABLE]
        if verdict is Reach.UNREACHABLE:
            silent.append(f"{department.name} has no reachable phone: {', '.join(bad)}")
        elif verdict is Reach.UNKNOWN:
            partial.append(f"{department.name}: {', '.join(bad)}")
        else:
            fine.append(department.name)
    unqualified = any(state.reach is Reach.UNKNOWN for state in found.values())
    if silent:
        return Finding.fail(
            "; ".join(silent + partial),
            "bring the phones back (powered, registered, on the network); "
            "`fastagi paging-group list` shows who pages whom",
        )
    if partial:
        return Finding.warn(
            "; ".join(partial),
            _QUALIFY_REMEDY if unqualified else "bring the phones back before an alarm needs them",
        )
    devices = len(found)
    return Finding.ok(f"all {devices} paging devices of {len(fine)} departments reachable")


async def unknown_extension(context: Context) -> Finding:
    """Who an alarm from an extension in no department pages: the settings' list, else
    every paging group's devices (never nobody, unless explicitly allowed)."""
    alarm = context.settings.alarm
    if alarm.unknown_department_devices is None:
        devices = (await directory(context)).all_devices
        if not devices:
            return Finding.fail(
                "an alarm from an extension in no department would page nobody: no paging"
                " group has a device",
                "add devices to the paging groups, or name devices in [alarm]"
                " unknown_department_devices",
            )
        return Finding.ok(
            f"an alarm from an extension in no department pages all {len(devices)}"
            " devices of the paging groups (see paging-devices)"
        )
    if not alarm.unknown_department_devices:
        return Finding.warn(
            "an alarm from an extension in no department pages nobody"
            " (allow_unknown_department_to_page_nobody = true)",
            "name devices in [alarm] unknown_department_devices, e.g. the security desk",
        )
    found = await states(context, alarm.unknown_department_devices)
    group = list(found.values())
    verdict = _group_verdict(group)
    bad = [str(state) for state in group if state.reach is not Reach.REACHABLE]
    if verdict is Reach.UNREACHABLE:
        return Finding.fail(
            f"an alarm from an extension in no department would page no reachable phone:"
            f" {', '.join(bad)}",
            "fix [alarm] unknown_department_devices, or bring those phones back",
        )
    if verdict is Reach.UNKNOWN:
        return Finding.warn(
            f"of the devices paged for an unknown extension: {', '.join(bad)}",
            "fix [alarm] unknown_department_devices, or bring those phones back",
        )
    return Finding.ok(
        f"an alarm from an extension in no department pages {', '.join(found)} (reachable)"
    )


def _local_target(destination: str) -> tuple[str, str] | None:
    """``Local/600@from-internal[/n]`` -> ``("from-internal", "600")``."""
    tech, _, rest = destination.partition("/")
    if tech.lower() != "local":
        return None
    exten, _, context = rest.split("/", 1)[0].partition("@")
    return (context or "default", exten)


async def emergency(context: Context) -> Finding:
    settings = context.settings.emergency
    destinations = list(dict.fromkeys([*settings.destinations, *settings.escalation_destinations]))
    if not destinations:
        return Finding.ok("no emergency call configured ([emergency] destinations is empty)")
    missing, unreachable, fine = [], [], []
    phones = [d for d in destinations if _local_target(d) is None]
    found = await states(context, phones)
    for destination in destinations:
        target = _local_target(destination)
        if target is not None:
            dial_context, exten = target
            if await exists(context.ami, dial_context, exten):
                fine.append(destination)
            else:
                missing.append(f"{destination} ({exten} is not in context {dial_context})")
            continue
        state = found[destination]
        if state.reach is Reach.MISSING:
            missing.append(str(state))
        elif state.reach is Reach.REACHABLE:
            fine.append(destination)
        else:
            unreachable.append(str(state))
    if missing:
        return Finding.fail(
            f"emergency destinations that do not exist: {', '.join(missing)}",
            "fix [emergency] destinations / escalation_destinations (PJSIP/150,"
            " Local/600@from-internal)",
        )
    if unreachable:
        return Finding.warn(
            f"emergency destinations not reachable now: {', '.join(unreachable)}",
            "the emergency call skips to the next destination; bring them back",
        )
    return Finding.ok(f"emergency destinations exist: {', '.join(fine)}")


CHECKS = (
    Check(
        "paging-devices",
        "every paging device of every department is reachable",
        paging_devices,
        ("ami", "migrations"),
    ),
    Check(
        "unknown-extension",
        "an alarm from an extension in no department pages someone",
        unknown_extension,
        ("ami", "migrations"),
    ),
    Check("emergency", "the emergency destinations exist", emergency, ("ami",)),
)
