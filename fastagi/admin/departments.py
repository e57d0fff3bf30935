"""Departments and which extensions belong to them."""

from __future__ import annotations

from typing import Any

from fastagi.admin.audit import record_change
from fastagi.domain.directory import UNKNOWN_DEPARTMENT, ExtensionPattern, alarm_key, is_extension
from fastagi.store import StoreError, Stores
from fastagi.store.directory import UNCHANGED, DepartmentInfo


async def add_department(
    stores: Stores,
    name: str,
    *,
    interval_seconds: int | None = None,
    paging_group: str | None = None,
    by: str,
) -> DepartmentInfo:
    department = await stores.directory.add_department(name, interval_seconds, paging_group)
    await record_change(
        stores,
        "department add",
        by=by,
        name=department.name,
        interval_seconds=interval_seconds,
        paging_group=department.paging_group,
    )
    return department


async def remove_department(stores: Stores, name: str, *, by: str) -> None:
    """Remove a department and its mappings; its alarms keep their department name."""
    await stores.directory.remove_department(name)
    await record_change(stores, "department remove", by=by, name=name.strip())


async def set_department(
    stores: Stores,
    name: str,
    *,
    new_name: str = UNCHANGED,
    interval_seconds: int | None = UNCHANGED,
    paging_group: str | None = UNCHANGED,
    confirmation_mode: str | None = UNCHANGED,
    language: str | None = UNCHANGED,
    by: str,
) -> DepartmentInfo:
    """Rename a department, change its interval (None: the global default), its paging
    group (None: none), its confirmation mode or language (None: the site's default;
    fastagi/domain/language.py), all or nothing; what is not given stays. Its alarms keep
    the name they were raised with; e-mail and SMS recipients are found by name
    (``[notify.departments]``), so a renamed department gets the default recipients
    until the settings file names it."""
    changes: dict[str, Any] = {}
    if new_name is not UNCHANGED:
        changes["new_name"] = new_name
    if interval_seconds is not UNCHANGED:
        changes["interval_seconds"] = interval_seconds
    if paging_group is not UNCHANGED:
        changes["paging_group"] = paging_group
    if confirmation_mode is not UNCHANGED:
        changes["confirmation_mode"] = confirmation_mode
    if language is not UNCHANGED:
        changes["language"] = language
    if not changes:
        raise StoreError(
            "nothing to change: give a name, an interval, a paging group,"
            " a confirmation mode or a language"
        )
    department = await stores.directory.update_department(name, **changes)
    if "new_name" in changes:
        changes["new_name"] = department.name
        changes["renamed_from"] = name.strip()
    await record_change(stores, "department set", by=by, name=department.name, **changes)
    return department


async def map_extensions(
    stores: Stores, department: str, pattern: str, *, by: str
) -> tuple[ExtensionPattern, DepartmentInfo]:
    """Map an extension, a range (100-149) or a pattern (_1XX) to a department."""
    mapped = await stores.directory.map_extensions(department, pattern)
    info = await stores.directory.get_department(department)
    await record_change(stores, "extension map", by=by, department=info.name, pattern=mapped.text)
    return mapped, info


async def unmap_extensions(stores: Stores, pattern: str, *, by: str) -> None:
    await stores.directory.unmap_extensions(pattern)
    await record_change(stores, "extension unmap", by=by, pattern=pattern.strip())


async def lookup_extension(stores: Stores, extension: str) -> dict[str, Any]:
    """Which department ``extension`` is in and why (the mapping that won, every mapping
    that matches, most specific first), what an alarm from it pages and how often: what
    ``fastagi extension lookup --json`` prints and the console's tester shows."""
    extension = extension.strip()
    if not is_extension(extension):
        raise StoreError(
            f"malformed extension '{extension}': expected 1 to 20 digits", field="extension"
        )
    directory = await stores.directory.load_directory()
    match = directory.lookup(extension)
    department = match.department if match else None
    return {
        "extension": extension,
        "department": department.name if department else UNKNOWN_DEPARTMENT,
        "pattern": match.pattern.text if match else None,
        "kind": match.pattern.kind.name.lower() if match else None,
        "candidates": [
            m.pattern.text
            for m in sorted(
                (m for m in directory.mappings if m.pattern.matches(extension)),
                key=lambda m: m.pattern.specificity(len(extension)),
            )
        ],
        "alarm_key": alarm_key(department, extension),
        "interval_seconds": directory.interval_for(department),
        "devices": list(department.devices) if department else [],
    }
