"""``fastagi interval ...`` and ``fastagi policy ...``: the default paging interval, and
the confirmation and PIN policy."""

from __future__ import annotations

import argparse
import dataclasses

from fastagi.admin import policy as admin
from fastagi.cli.common import Builder, operator
from fastagi.cli.departments import warn_if_shorter_than_announcement
from fastagi.cli.output import print_json, print_table
from fastagi.domain.language import CONFIRMATION_MODES
from fastagi.domain.policy import NO_ANSWER_POLICIES
from fastagi.store import Stores


def register(builder: Builder) -> None:
    actions = builder.group("interval", "the global default paging interval")
    builder.command(
        actions, "set", "set the default interval (departments without their own)", _interval_set
    ).add_argument(
        "seconds",
        type=int,
        help="from the start of one page to the start of the next; pages never overlap",
    )
    builder.command(actions, "show", "show the default interval", _interval_show, listing=True)

    actions = builder.group("policy", "confirmation and PIN policy")
    builder.command(actions, "show", "show the policy", _policy_show, listing=True)
    policy = builder.command(actions, "set", "change the policy", _policy_set)
    policy.add_argument("--no-answer", choices=NO_ANSWER_POLICIES, help="when nobody confirms")
    policy.add_argument("--confirmation-attempts", type=int, metavar="N")
    policy.add_argument("--pin-attempts", type=int, metavar="N")
    policy.add_argument("--lockout-seconds", type=int, metavar="S")
    policy.add_argument(
        "--confirmation-mode",
        choices=CONFIRMATION_MODES,
        help="the site's default: how the trigger asks (a department may have its own)",
    )
    policy.add_argument("--language", metavar="CODE", help="the site's default language (en, pl)")


async def _interval_set(stores: Stores, args: argparse.Namespace) -> int:
    await admin.set_default_interval(stores, args.seconds, by=operator())
    print(f"default interval: {args.seconds}s")
    for department in await stores.directory.list_departments():
        if department.interval_seconds is None:
            await warn_if_shorter_than_announcement(stores, department, args.seconds)
    return 0


async def _interval_show(stores: Stores, args: argparse.Namespace) -> int:
    seconds = (await stores.policy.load_settings()).default_interval_seconds
    if args.json:
        print_json({"default_interval_seconds": seconds})
    else:
        print(f"default interval: {seconds}s")
    return 0


async def _policy_show(stores: Stores, args: argparse.Namespace) -> int:
    policy = await stores.policy.load_settings()
    if args.json:
        print_json(dataclasses.asdict(policy))
        return 0
    print_table(
        ["SETTING", "VALUE"],
        [
            ["no-answer", policy.no_answer_policy],
            ["confirmation-attempts", str(policy.confirmation_attempts)],
            ["pin-attempts", str(policy.pin_attempts)],
            ["lockout-seconds", str(policy.lockout_seconds)],
            ["default-interval", f"{policy.default_interval_seconds}s"],
            ["confirmation-mode", policy.confirmation_mode],
            ["language", policy.default_language],
        ],
    )
    return 0


async def _policy_set(stores: Stores, args: argparse.Namespace) -> int:
    await admin.set_policy(
        stores,
        no_answer_policy=args.no_answer,
        confirmation_attempts=args.confirmation_attempts,
        pin_attempts=args.pin_attempts,
        lockout_seconds=args.lockout_seconds,
        confirmation_mode=args.confirmation_mode,
        default_language=args.language,
        by=operator(),
    )
    given = {
        "no-answer": args.no_answer,
        "confirmation-attempts": args.confirmation_attempts,
        "pin-attempts": args.pin_attempts,
        "lockout-seconds": args.lockout_seconds,
        "confirmation-mode": args.confirmation_mode,
        "language": args.language,
    }
    print("policy changed: " + ", ".join(f"{k}={v}" for k, v in given.items() if v is not None))
    return 0
