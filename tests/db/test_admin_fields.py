"""Every refusal of a fastagi/admin function names the argument it is about
(``StoreError.field``), so the console shows it next to that field; nothing is written."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from fastagi.admin import deactivators, departments, paging, policy
from fastagi.store import StoreError, Stores

pytestmark = [pytest.mark.db, pytest.mark.timeout(60)]

BY: dict[str, Any] = {"by": "test"}
Call = Callable[[Stores], Awaitable[object]]

CASES: list[tuple[str, Call, str | None]] = [
    ("blank name", lambda s: departments.add_department(s, "  ", **BY), "name"),
    ("NUL in a name", lambda s: departments.add_department(s, "A\0B", **BY), "name"),
    ("10 kB name", lambda s: departments.add_department(s, "x" * 10_000, **BY), "name"),
    ("duplicate", lambda s: departments.add_department(s, "ward", **BY), "name"),
    (
        "interval",
        lambda s: departments.add_department(s, "New", interval_seconds=2, **BY),
        "interval_seconds",
    ),
    (
        "unknown group",
        lambda s: departments.add_department(s, "New", paging_group="Nope", **BY),
        "paging_group",
    ),
    (
        "rename taken",
        lambda s: departments.set_department(s, "Ward", new_name="LAB", **BY),
        "new_name",
    ),
    (
        "rename NUL",
        lambda s: departments.set_department(s, "Ward", new_name="\0", **BY),
        "new_name",
    ),
    (
        "set interval",
        lambda s: departments.set_department(s, "Ward", interval_seconds=3601, **BY),
        "interval_seconds",
    ),
    (
        "set group",
        lambda s: departments.set_department(s, "Ward", paging_group="Nope", **BY),
        "paging_group",
    ),
    ("unknown department", lambda s: departments.set_department(s, "Nope", **BY), None),
    (
        "unknown department to map",
        lambda s: departments.map_extensions(s, "Nope", "101", **BY),
        "department",
    ),
    ("pattern", lambda s: departments.map_extensions(s, "Ward", "_1Y", **BY), "pattern"),
    ("mapped twice", lambda s: departments.map_extensions(s, "Lab", "101", **BY), "pattern"),
    ("unmapped", lambda s: departments.unmap_extensions(s, "999", **BY), "pattern"),
    ("group name", lambda s: paging.add_paging_group(s, "\0", **BY), "name"),
    ("group taken", lambda s: paging.add_paging_group(s, "er", **BY), "name"),
    ("device", lambda s: paging.add_paging_device(s, "ER", "PJSIP 201", **BY), "device"),
    ("device twice", lambda s: paging.add_paging_device(s, "ER", "PJSIP/201", **BY), "device"),
    ("device's group", lambda s: paging.add_paging_device(s, "No", "PJSIP/1", **BY), "group"),
    ("no device", lambda s: paging.remove_paging_device(s, "ER", "PJSIP/9", **BY), "device"),
    ("extension", lambda s: deactivators.set_deactivator(s, "15a", "1234", **BY), "extension"),
    ("PIN", lambda s: deactivators.set_deactivator(s, "150", "12", **BY), "pin"),
    ("PIN letters", lambda s: deactivators.set_deactivator(s, "150", "12ab", **BY), "pin"),
    ("not one", lambda s: deactivators.remove_deactivator(s, "151", **BY), "extension"),
    ("default interval", lambda s: policy.set_default_interval(s, 4, **BY), "seconds"),
    (
        "no-answer",
        lambda s: policy.set_policy(s, no_answer_policy="ring", **BY),
        "no_answer_policy",
    ),
    (
        "attempts",
        lambda s: policy.set_policy(s, confirmation_attempts=0, **BY),
        "confirmation_attempts",
    ),
    ("PIN attempts", lambda s: policy.set_policy(s, pin_attempts=11, **BY), "pin_attempts"),
    ("lockout", lambda s: policy.set_policy(s, lockout_seconds=-1, **BY), "lockout_seconds"),
]


@pytest.mark.parametrize(("what", "call", "field"), CASES, ids=[case[0] for case in CASES])
async def test_a_refusal_names_its_field_and_writes_nothing(
    db_pool, what: str, call: Call, field: str | None
) -> None:
    stores = Stores.over(db_pool)
    await paging.add_paging_group(stores, "ER", **BY)
    await paging.add_paging_device(stores, "ER", "PJSIP/201", **BY)
    await departments.add_department(stores, "Ward", paging_group="ER", **BY)
    await departments.add_department(stores, "Lab", **BY)
    await departments.map_extensions(stores, "Ward", "101", **BY)
    audited = await db_pool.fetchval("SELECT count(*) FROM alarm_events")
    directory = await db_pool.fetch("SELECT * FROM departments ORDER BY id")

    with pytest.raises(StoreError) as refused:
        await call(stores)

    assert refused.value.field == field, str(refused.value)
    assert await db_pool.fetchval("SELECT count(*) FROM alarm_events") == audited
    assert await db_pool.fetch("SELECT * FROM departments ORDER BY id") == directory
