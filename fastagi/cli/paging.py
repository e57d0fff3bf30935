"""``fastagi paging-group ...``: paging groups and their devices."""

from __future__ import annotations

import argparse

from fastagi.admin import paging as admin
from fastagi.cli.common import Builder, operator
from fastagi.cli.output import print_listing
from fastagi.store import Stores


def register(builder: Builder) -> None:
    actions = builder.group("paging-group", "paging groups and their devices")
    builder.command(actions, "add", "add a paging group", _group_add).add_argument("name")
    builder.command(actions, "remove", "remove a paging group", _group_remove).add_argument("name")
    builder.command(actions, "list", "list the paging groups", _group_list, listing=True)
    devices = builder.group("device", "add or remove a group's devices", parent=actions)
    for name, work in (("add", _device_add), ("remove", _device_remove)):
        parser = builder.command(devices, name, f"{name} a device (e.g. PJSIP/201)", work)
        parser.add_argument("group")
        parser.add_argument("device")


async def _group_add(stores: Stores, args: argparse.Namespace) -> int:
    group = await admin.add_paging_group(stores, args.name, by=operator())
    print(f"added paging group '{group.name}'")
    return 0


async def _group_remove(stores: Stores, args: argparse.Namespace) -> int:
    await admin.remove_paging_group(stores, args.name, by=operator())
    print(f"removed paging group '{args.name.strip()}'")
    return 0


async def _group_list(stores: Stores, args: argparse.Namespace) -> int:
    groups = await stores.directory.list_paging_groups()
    print_listing(
        groups,
        as_json=args.json,
        headers=["PAGING GROUP", "DEVICES"],
        row=lambda g: [g.name, " ".join(g.devices) or "-"],
        empty="no paging groups",
    )
    return 0


async def _device_add(stores: Stores, args: argparse.Namespace) -> int:
    await admin.add_paging_device(stores, args.group, args.device, by=operator())
    print(f"added {args.device.strip()} to '{args.group.strip()}'")
    return 0


async def _device_remove(stores: Stores, args: argparse.Namespace) -> int:
    await admin.remove_paging_device(stores, args.group, args.device, by=operator())
    print(f"removed {args.device.strip()} from '{args.group.strip()}'")
    return 0
