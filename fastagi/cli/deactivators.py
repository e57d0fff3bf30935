"""``fastagi deactivator ...``: extensions allowed to deactivate alarms with a PIN.

PINs are never taken from the command line, where ``ps`` shows them: they are read with a
prompt, or from one line of standard input with ``--pin-stdin``.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from fastagi.admin import deactivators as admin
from fastagi.cli.common import Builder, fail, operator
from fastagi.cli.output import print_listing, when
from fastagi.domain import pins
from fastagi.domain.directory import is_extension
from fastagi.store import Stores


def register(builder: Builder) -> None:
    actions = builder.group("deactivator", "extensions allowed to deactivate alarms with a PIN")
    add = builder.command(actions, "add", "add a deactivator or change its PIN", _deactivator_add)
    add.add_argument("extension")
    add.add_argument(
        "--pin-stdin", action="store_true", help="read the PIN from one line of standard input"
    )
    builder.command(actions, "remove", "remove a deactivator", _deactivator_remove).add_argument(
        "extension"
    )
    builder.command(actions, "list", "list the deactivators", _deactivator_list, listing=True)
    builder.command(actions, "unlock", "end a PIN lockout", _deactivator_unlock).add_argument(
        "extension"
    )


async def _deactivator_add(stores: Stores, args: argparse.Namespace) -> int:
    extension = args.extension.strip()
    if not is_extension(extension):  # before asking for a PIN
        fail(f"malformed extension '{extension}': expected 1 to 20 digits")
    pin = _read_pin(args.pin_stdin)
    created = await admin.set_deactivator(stores, extension, pin, by=operator())
    print(f"{'added' if created else 'changed the PIN of'} deactivator {extension}")
    return 0


def _read_pin(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            fail("no PIN on standard input")
        pin = line.rstrip("\r\n")
    else:
        pin = getpass.getpass("PIN: ")
        again = getpass.getpass("PIN again: ")
        if pin != again:
            fail("the PINs differ")
    try:
        pins.validate_pin(pin)
    except ValueError as exc:
        fail(str(exc))
    return pin


async def _deactivator_remove(stores: Stores, args: argparse.Namespace) -> int:
    await admin.remove_deactivator(stores, args.extension, by=operator())
    print(f"removed deactivator {args.extension.strip()}")
    return 0


async def _deactivator_list(stores: Stores, args: argparse.Namespace) -> int:
    deactivators = await stores.deactivators.list_deactivators()
    print_listing(
        deactivators,
        as_json=args.json,
        headers=["EXTENSION", "PIN CHANGED", "LOCKED UNTIL"],
        row=lambda d: [
            d.extension,
            when(d.updated_at),
            when(d.locked_until) if d.locked_until else "-",
        ],
        empty="no deactivators",
    )
    return 0


async def _deactivator_unlock(stores: Stores, args: argparse.Namespace) -> int:
    await admin.unlock_deactivator(stores, args.extension, by=operator())
    print(f"cleared the wrong PINs and lockout of {args.extension.strip()}")
    return 0
