"""Paging groups and their devices."""

from __future__ import annotations

from fastagi.admin.audit import record_change
from fastagi.store import Stores
from fastagi.store.directory import PagingGroup


async def add_paging_group(stores: Stores, name: str, *, by: str) -> PagingGroup:
    group = await stores.directory.add_paging_group(name)
    await record_change(stores, "paging-group add", by=by, name=group.name)
    return group


async def remove_paging_group(stores: Stores, name: str, *, by: str) -> None:
    """Remove a group; its departments are left without one (they page nobody)."""
    await stores.directory.remove_paging_group(name)
    await record_change(stores, "paging-group remove", by=by, name=name.strip())


async def add_paging_device(stores: Stores, group: str, device: str, *, by: str) -> None:
    await stores.directory.add_paging_device(group, device)
    await record_change(stores, "paging-group device add", by=by, group=group, device=device)


async def remove_paging_device(stores: Stores, group: str, device: str, *, by: str) -> None:
    await stores.directory.remove_paging_device(group, device)
    await record_change(stores, "paging-group device remove", by=by, group=group, device=device)
