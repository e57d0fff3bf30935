"""``fastagi user ...``: who may log in to the web console, with which role.

Passwords are never taken from the command line, where ``ps`` shows them: they are read
from standard input (one line), with a prompt when it is a terminal.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from fastagi.admin import users as admin
from fastagi.cli.common import Builder, fail, operator
from fastagi.cli.output import print_listing, when
from fastagi.domain import passwords
from fastagi.store import Stores
from fastagi.store.users import ROLES


def register(builder: Builder) -> None:
    actions = builder.group("user", "web console users and their roles")
    add = builder.command(actions, "add", "add a user (password from standard input)", _user_add)
    add.add_argument("name")
    add.add_argument(
        "--role",
        choices=ROLES,
        required=True,
        help="viewer: board, alarms, history; operator: + deactivate, interval, re-send;"
        " admin: + configuration and users",
    )
    builder.command(
        actions, "remove", "remove a user (ends its sessions)", _user_remove
    ).add_argument("name")
    builder.command(
        actions, "passwd", "change a password (standard input; ends its sessions)", _user_passwd
    ).add_argument("name")
    role = builder.command(actions, "role", "change a user's role", _user_role)
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    builder.command(actions, "list", "list the users", _user_list, listing=True)


def read_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Password again: "):
            fail("the passwords differ")
    else:
        line = sys.stdin.readline()
        if not line:
            fail("no password on standard input")
        password = line.rstrip("\r\n")
    try:
        passwords.validate_password(password)
    except ValueError as exc:
        fail(str(exc))
    return password


async def _user_add(stores: Stores, args: argparse.Namespace) -> int:
    user = await admin.add_user(stores, args.name, args.role, read_password(), by=operator())
    print(f"added user {user.name} ({user.role})")
    return 0


async def _user_remove(stores: Stores, args: argparse.Namespace) -> int:
    user = await admin.remove_user(stores, args.name, by=operator())
    print(f"removed user {user.name}")
    return 0


async def _user_passwd(stores: Stores, args: argparse.Namespace) -> int:
    user = await admin.set_password(stores, args.name, read_password(), by=operator())
    print(f"changed the password of {user.name}; their sessions have ended")
    return 0


async def _user_role(stores: Stores, args: argparse.Namespace) -> int:
    user = await admin.set_role(stores, args.name, args.role, by=operator())
    print(f"{user.name} is now {user.role}")
    return 0


async def _user_list(stores: Stores, args: argparse.Namespace) -> int:
    users = await admin.list_users(stores)
    print_listing(
        users,
        as_json=args.json,
        headers=["NAME", "ROLE", "CREATED", "CHANGED"],
        row=lambda u: [u.name, u.role, when(u.created_at), when(u.updated_at)],
    )
    return 0
