"""The demo site of ``make run`` and ``make demo``: three departments, their paging
groups, a deactivator with a well-known PIN and a web console login. Development only:
a real site enters its own data with the ``fastagi`` administration commands."""

from __future__ import annotations

import dataclasses

from fastagi.domain import passwords, pins
from fastagi.store import Stores

DEMO_PIN = "2580"  # the keypad's middle column; for `make run` only
DEMO_DEACTIVATOR = "150"
# The web console's demo login, printed by `make run`; for `make run` only.
DEMO_WEB_USER = "admin"
DEMO_WEB_PASSWORD = "panic-demo"  # noqa: S105 (printed by make run, on purpose)


@dataclasses.dataclass(frozen=True)
class DemoInfo:
    departments: tuple[str, ...]
    deactivator: str
    pin: str
    web_user: str = DEMO_WEB_USER
    web_password: str = DEMO_WEB_PASSWORD


_DEMO = (
    # department, mapping, paging group, devices
    ("Emergency Room", "101-119", "ER", tuple(f"PJSIP/{n}" for n in range(201, 205))),
    ("Pharmacy", "120-139", "Pharmacy", ("PJSIP/205", "PJSIP/206")),
    ("Reception", "_14X", "Reception", ("PJSIP/207", "PJSIP/208")),
)


async def seed_demo(store: Stores) -> DemoInfo:
    """Demo departments, paging groups and a deactivator, for ``make run``. Idempotent:
    what exists is left as it is, except that the demo deactivator's PIN is reset to
    :data:`DEMO_PIN` when it differs."""
    groups = {group.name: group for group in await store.directory.list_paging_groups()}
    departments = {
        department.name: department for department in await store.directory.list_departments()
    }
    for name, pattern, group_name, devices in _DEMO:
        group = groups.get(group_name) or await store.directory.add_paging_group(group_name)
        for device in devices:
            if device not in group.devices:
                await store.directory.add_paging_device(group_name, device)
        department = departments.get(name) or await store.directory.add_department(
            name, paging_group=group_name
        )
        if pattern not in department.patterns:
            await store.directory.map_extensions(name, pattern)
    stored = await store.deactivators.deactivator_pin_hash(DEMO_DEACTIVATOR)
    if stored is None or not await pins.verify_pin_async(DEMO_PIN, stored):
        await store.deactivators.set_deactivator(
            DEMO_DEACTIVATOR, await pins.hash_pin_async(DEMO_PIN)
        )
    await _seed_web_user(store)
    return DemoInfo(
        departments=tuple(name for name, *_ in _DEMO),
        deactivator=DEMO_DEACTIVATOR,
        pin=DEMO_PIN,
    )


async def _seed_web_user(store: Stores) -> None:
    """The console's demo administrator, for ``make run`` only (never in production:
    ``fastagi serve`` seeds nothing). Its password is reset to the demo's when changed."""
    found = await store.users.credentials(DEMO_WEB_USER)
    if found is None:
        await store.users.add_user(
            DEMO_WEB_USER, "admin", await passwords.hash_password_async(DEMO_WEB_PASSWORD)
        )
    elif not await passwords.verify_password_async(DEMO_WEB_PASSWORD, found[1]):
        await store.users.set_password(
            DEMO_WEB_USER, await passwords.hash_password_async(DEMO_WEB_PASSWORD)
        )
