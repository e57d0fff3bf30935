"""The administrator's commands: departments, extensions, paging groups, intervals, the
policy, deactivators, alarms and their history.

Every command connects with ``--dsn`` or ``database.dsn`` from the settings, does its work
through :class:`~fastagi.store.alarms.Stores`, and prints an aligned table (or JSON
with ``--json`` on list and show commands). A user error is one line on stderr and exit
code 2. Each change is recorded in the history as a ``config_changed`` event naming the
OS user, so an audit shows who changed what.

PINs are never taken from the command line, where ``ps`` shows them: they are read with a
prompt, or from one line of standard input with ``--pin-stdin``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import getpass
import io
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeAlias
from uuid import UUID

import asyncpg

from fastagi.cliutil import database_dsn, fail
from fastagi.domain import pins
from fastagi.domain.alarm import Alarm
from fastagi.domain.directory import UNKNOWN_DEPARTMENT, alarm_key, is_extension
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.domain.policy import NO_ANSWER_POLICIES
from fastagi.store import StoreError, Stores
from fastagi.store.commands import redact
from fastagi.store.history import StoredEvent

CONNECT_TIMEOUT = 10.0

Work = Callable[[Stores, argparse.Namespace], Awaitable[int]]
_SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(subparsers: _SubParsers) -> None:
    """Add the administration commands to the ``fastagi`` parser (see fastagi/cli.py)."""
    builder = _Builder(subparsers)
    _register_departments(builder)
    _register_paging(builder)
    _register_deactivators(builder)
    _register_alarms(builder)


class _Builder:
    """Adds command groups and their leaf commands, each with ``--dsn``."""

    def __init__(self, subparsers: _SubParsers) -> None:
        self._subparsers = subparsers
        self._common = argparse.ArgumentParser(add_help=False)
        self._common.add_argument(
            "--dsn", help="PostgreSQL URL (default: database.dsn from the settings)"
        )
        self._as_json = argparse.ArgumentParser(add_help=False)
        self._as_json.add_argument("--json", action="store_true", help="print JSON for scripts")

    def group(self, name: str, help_text: str, parent: _SubParsers | None = None) -> _SubParsers:
        parser = (parent or self._subparsers).add_parser(name, help=help_text)
        return parser.add_subparsers(
            dest=f"{name.replace('-', '_')}_action", metavar="ACTION", required=True
        )

    def command(
        self, actions: _SubParsers, name: str, help_text: str, work: Work, *, listing: bool = False
    ) -> argparse.ArgumentParser:
        parents = [self._common, self._as_json] if listing else [self._common]
        parser = actions.add_parser(name, help=help_text, parents=parents)
        parser.set_defaults(handler=_handler(work))
        return parser


def _register_departments(builder: _Builder) -> None:
    actions = builder.group("department", "departments: add, list, set, remove")
    add = builder.command(actions, "add", "add a department", _department_add)
    add.add_argument("name")
    add.add_argument("--interval", type=int, metavar="SECONDS", help="its own paging interval")
    add.add_argument("--paging-group", metavar="GROUP")
    builder.command(actions, "list", "list the departments", _department_list, listing=True)
    builder.command(
        actions, "remove", "remove a department and its mappings", _department_rm
    ).add_argument("name")
    change = builder.command(actions, "set", "change a department", _department_set)
    change.add_argument("name")
    interval = change.add_mutually_exclusive_group()
    interval.add_argument("--interval", type=int, metavar="SECONDS")
    interval.add_argument(
        "--default-interval", action="store_true", help="use the global default interval"
    )
    paging = change.add_mutually_exclusive_group()
    paging.add_argument("--paging-group", metavar="GROUP")
    paging.add_argument("--no-paging-group", action="store_true")

    actions = builder.group("extension", "which extensions belong to which department")
    mapping = builder.command(
        actions, "map", "map an extension, a range (100-149) or a pattern (_1XX)", _extension_map
    )
    mapping.add_argument("department")
    mapping.add_argument("pattern")
    builder.command(actions, "unmap", "remove a mapping", _extension_unmap).add_argument("pattern")
    builder.command(
        actions,
        "lookup",
        "which department an extension is in, and why",
        _extension_lookup,
        listing=True,
    ).add_argument("extension")


def _register_paging(builder: _Builder) -> None:
    actions = builder.group("paging-group", "paging groups and their devices")
    builder.command(actions, "add", "add a paging group", _group_add).add_argument("name")
    builder.command(actions, "remove", "remove a paging group", _group_remove).add_argument("name")
    builder.command(actions, "list", "list the paging groups", _group_list, listing=True)
    devices = builder.group("device", "add or remove a group's devices", parent=actions)
    for name, work in (("add", _device_add), ("remove", _device_remove)):
        parser = builder.command(devices, name, f"{name} a device (e.g. PJSIP/201)", work)
        parser.add_argument("group")
        parser.add_argument("device")

    actions = builder.group("interval", "the global default paging interval")
    builder.command(actions, "set", "set the default interval", _interval_set).add_argument(
        "seconds", type=int
    )
    builder.command(actions, "show", "show the default interval", _interval_show, listing=True)

    actions = builder.group("policy", "confirmation and PIN policy")
    builder.command(actions, "show", "show the policy", _policy_show, listing=True)
    policy = builder.command(actions, "set", "change the policy", _policy_set)
    policy.add_argument("--no-answer", choices=NO_ANSWER_POLICIES, help="when nobody confirms")
    policy.add_argument("--confirmation-attempts", type=int, metavar="N")
    policy.add_argument("--pin-attempts", type=int, metavar="N")
    policy.add_argument("--lockout-seconds", type=int, metavar="S")


def _register_deactivators(builder: _Builder) -> None:
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


def _register_alarms(builder: _Builder) -> None:
    actions = builder.group("alarm", "alarms: list, show, deactivate")
    alarms = builder.command(actions, "list", "list the active alarms", _alarm_list, listing=True)
    alarms.add_argument("--all", action="store_true", help="recent alarms, active or not")
    builder.command(
        actions, "show", "an alarm and its timeline", _alarm_show, listing=True
    ).add_argument("id", type=int)
    stop = builder.command(actions, "deactivate", "deactivate an alarm", _alarm_deactivate)
    stop.add_argument("id", type=int)
    stop.add_argument("--reason", required=True)

    actions = builder.group("history", "the alarm history")
    export = builder.command(actions, "export", "export the events of a period", _history_export)
    export.add_argument(
        "--since",
        required=True,
        type=_since,
        metavar="DATE",
        help="YYYY-MM-DD or an ISO date-time (local time unless it has an offset)",
    )
    export.add_argument(
        "--until",
        required=True,
        type=_until,
        metavar="DATE",
        help="YYYY-MM-DD (that day included) or an ISO date-time (excluded)",
    )
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.add_argument("--output", type=Path, metavar="FILE", help="default: standard output")


# -- running -----------------------------------------------------------------------------


def _handler(work: Work) -> Callable[[argparse.Namespace], int]:
    def handle(args: argparse.Namespace) -> int:
        return asyncio.run(_with_store(database_dsn(args), work, args))

    return handle


async def _with_store(dsn: str, work: Work, args: argparse.Namespace) -> int:
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, timeout=CONNECT_TIMEOUT)
    except (
        OSError,
        TimeoutError,
        ValueError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as exc:
        reason = str(exc) or exc.__class__.__name__
        fail(f"cannot connect to PostgreSQL at {redact(dsn)}: {reason}")
    try:
        return await work(Stores.over(pool), args)
    except StoreError as exc:
        fail(str(exc))
    except asyncpg.UndefinedTableError:
        fail("the database has no alarm tables yet: run `fastagi db migrate`")
    finally:
        await pool.close()


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"


async def _audit(store: Stores, action: str, **details: Any) -> None:
    await store.history.append_event(
        HistoryEvent(
            kind=EventKind.CONFIG_CHANGED,
            alarm_id=None,
            extension=None,
            department=None,
            details={"action": action, "by": _operator(), **details},
        )
    )


# -- departments and extensions -----------------------------------------------------------


async def _department_add(store: Stores, args: argparse.Namespace) -> int:
    department = await store.directory.add_department(args.name, args.interval, args.paging_group)
    await _audit(
        store,
        "department add",
        name=department.name,
        interval_seconds=args.interval,
        paging_group=department.paging_group,
    )
    print(f"added department '{department.name}'")
    return 0


async def _department_list(store: Stores, args: argparse.Namespace) -> int:
    departments = await store.directory.list_departments()
    settings = await store.policy.load_settings()
    if args.json:
        _print_json([dataclasses.asdict(d) for d in departments])
        return 0
    _print_table(
        ["DEPARTMENT", "INTERVAL", "PAGING GROUP", "EXTENSIONS"],
        [
            [
                d.name,
                f"{d.interval_seconds}s"
                if d.interval_seconds is not None
                else f"default ({settings.default_interval_seconds}s)",
                d.paging_group or "-",
                " ".join(d.patterns) or "-",
            ]
            for d in departments
        ],
        empty="no departments",
    )
    return 0


async def _department_rm(store: Stores, args: argparse.Namespace) -> int:
    await store.directory.remove_department(args.name)
    await _audit(store, "department remove", name=args.name.strip())
    print(f"removed department '{args.name.strip()}'")
    return 0


async def _department_set(store: Stores, args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    if args.interval is not None or args.default_interval:
        await store.directory.set_department_interval(args.name, args.interval)
        changes["interval_seconds"] = args.interval
    if args.paging_group is not None or args.no_paging_group:
        await store.directory.set_department_paging_group(args.name, args.paging_group)
        changes["paging_group"] = args.paging_group
    if not changes:
        fail("nothing to change: give --interval, --default-interval or --paging-group")
    department = await store.directory.get_department(args.name)
    await _audit(store, "department set", name=department.name, **changes)
    print(f"changed department '{department.name}'")
    return 0


async def _extension_map(store: Stores, args: argparse.Namespace) -> int:
    pattern = await store.directory.map_extensions(args.department, args.pattern)
    department = await store.directory.get_department(args.department)
    await _audit(store, "extension map", department=department.name, pattern=pattern.text)
    print(f"mapped {pattern.kind.name.lower()} '{pattern.text}' to '{department.name}'")
    return 0


async def _extension_unmap(store: Stores, args: argparse.Namespace) -> int:
    await store.directory.unmap_extensions(args.pattern)
    await _audit(store, "extension unmap", pattern=args.pattern.strip())
    print(f"unmapped '{args.pattern.strip()}'")
    return 0


async def _extension_lookup(store: Stores, args: argparse.Namespace) -> int:
    extension = args.extension.strip()
    if not is_extension(extension):
        fail(f"malformed extension '{extension}': expected 1 to 20 digits")
    directory = await store.directory.load_directory()
    match = directory.lookup(extension)
    department = match.department if match else None
    result = {
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
    if args.json:
        _print_json(result)
    elif match is None:
        print(f"{extension}: {UNKNOWN_DEPARTMENT} (no mapping matches)")
        print(f"an alarm from it is keyed {result['alarm_key']}")
    else:
        others = [text for text in result["candidates"] if text != match.pattern.text]
        why = f"by {result['kind']} '{match.pattern.text}'"
        if others:
            why += f", the most specific of {', '.join([match.pattern.text, *others])}"
        print(f"{extension}: {match.department.name} ({why})")
        devices = " ".join(result["devices"]) or "no devices"
        print(f"pages {devices} every {result['interval_seconds']}s")
    return 0


# -- paging groups, interval, policy -------------------------------------------------------


async def _group_add(store: Stores, args: argparse.Namespace) -> int:
    group = await store.directory.add_paging_group(args.name)
    await _audit(store, "paging-group add", name=group.name)
    print(f"added paging group '{group.name}'")
    return 0


async def _group_remove(store: Stores, args: argparse.Namespace) -> int:
    await store.directory.remove_paging_group(args.name)
    await _audit(store, "paging-group remove", name=args.name.strip())
    print(f"removed paging group '{args.name.strip()}'")
    return 0


async def _group_list(store: Stores, args: argparse.Namespace) -> int:
    groups = await store.directory.list_paging_groups()
    if args.json:
        _print_json([dataclasses.asdict(g) for g in groups])
        return 0
    _print_table(
        ["PAGING GROUP", "DEVICES"],
        [[g.name, " ".join(g.devices) or "-"] for g in groups],
        empty="no paging groups",
    )
    return 0


async def _device_add(store: Stores, args: argparse.Namespace) -> int:
    await store.directory.add_paging_device(args.group, args.device)
    await _audit(store, "paging-group device add", group=args.group, device=args.device)
    print(f"added {args.device.strip()} to '{args.group.strip()}'")
    return 0


async def _device_remove(store: Stores, args: argparse.Namespace) -> int:
    await store.directory.remove_paging_device(args.group, args.device)
    await _audit(store, "paging-group device remove", group=args.group, device=args.device)
    print(f"removed {args.device.strip()} from '{args.group.strip()}'")
    return 0


async def _interval_set(store: Stores, args: argparse.Namespace) -> int:
    await store.policy.set_default_interval(args.seconds)
    await _audit(store, "interval set", seconds=args.seconds)
    print(f"default interval: {args.seconds}s")
    return 0


async def _interval_show(store: Stores, args: argparse.Namespace) -> int:
    seconds = (await store.policy.load_settings()).default_interval_seconds
    if args.json:
        _print_json({"default_interval_seconds": seconds})
    else:
        print(f"default interval: {seconds}s")
    return 0


async def _policy_show(store: Stores, args: argparse.Namespace) -> int:
    settings = await store.policy.load_settings()
    if args.json:
        _print_json(dataclasses.asdict(settings))
        return 0
    _print_table(
        ["SETTING", "VALUE"],
        [
            ["no-answer", settings.no_answer_policy],
            ["confirmation-attempts", str(settings.confirmation_attempts)],
            ["pin-attempts", str(settings.pin_attempts)],
            ["lockout-seconds", str(settings.lockout_seconds)],
            ["default-interval", f"{settings.default_interval_seconds}s"],
        ],
    )
    return 0


async def _policy_set(store: Stores, args: argparse.Namespace) -> int:
    given = {
        "no-answer": args.no_answer,
        "confirmation-attempts": args.confirmation_attempts,
        "pin-attempts": args.pin_attempts,
        "lockout-seconds": args.lockout_seconds,
    }
    changes = {name: value for name, value in given.items() if value is not None}
    if not changes:
        fail(
            "nothing to change: give --no-answer, --confirmation-attempts, --pin-attempts "
            "or --lockout-seconds"
        )
    await store.policy.set_policy(
        no_answer_policy=args.no_answer,
        confirmation_attempts=args.confirmation_attempts,
        pin_attempts=args.pin_attempts,
        lockout_seconds=args.lockout_seconds,
    )
    # As "name=value" strings: a details key may not contain "pin".
    await _audit(store, "policy set", changes=[f"{k}={v}" for k, v in changes.items()])
    print("policy changed: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
    return 0


# -- deactivators ----------------------------------------------------------------------------


async def _deactivator_add(store: Stores, args: argparse.Namespace) -> int:
    extension = args.extension.strip()
    if not is_extension(extension):
        fail(f"malformed extension '{extension}': expected 1 to 20 digits")
    pin = _read_pin(args.pin_stdin)
    try:
        pin_hash = await pins.hash_pin_async(pin)
    except ValueError as exc:
        fail(str(exc))
    created = await store.deactivators.set_deactivator(extension, pin_hash)
    await store.deactivators.clear_pin_failures(extension)
    await _audit(store, "deactivator add" if created else "deactivator change", extension=extension)
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


async def _deactivator_remove(store: Stores, args: argparse.Namespace) -> int:
    await store.deactivators.remove_deactivator(args.extension.strip())
    await _audit(store, "deactivator remove", extension=args.extension.strip())
    print(f"removed deactivator {args.extension.strip()}")
    return 0


async def _deactivator_list(store: Stores, args: argparse.Namespace) -> int:
    deactivators = await store.deactivators.list_deactivators()
    if args.json:
        _print_json([dataclasses.asdict(d) for d in deactivators])
        return 0
    _print_table(
        ["EXTENSION", "PIN CHANGED", "LOCKED UNTIL"],
        [
            [d.extension, _when(d.updated_at), _when(d.locked_until) if d.locked_until else "-"]
            for d in deactivators
        ],
        empty="no deactivators",
    )
    return 0


async def _deactivator_unlock(store: Stores, args: argparse.Namespace) -> int:
    extension = args.extension.strip()
    await store.deactivators.clear_pin_failures(extension)
    await _audit(store, "deactivator unlock", extension=extension)
    print(f"cleared the wrong PINs and lockout of {extension}")
    return 0


# -- alarms and history ------------------------------------------------------------------------


async def _alarm_list(store: Stores, args: argparse.Namespace) -> int:
    alarms = await store.alarms.recent_alarms() if args.all else await store.alarms.active_alarms()
    if args.json:
        _print_json([dataclasses.asdict(a) for a in alarms])
        return 0
    _print_table(
        ["ID", "STATE", "DEPARTMENT", "EXTENSION", "ACTIVATED", "CYCLES", "DEACTIVATED BY"],
        [
            [
                str(a.id),
                a.state,
                a.department_name,
                a.extension,
                _when(a.activated_at),
                str(a.cycles),
                a.deactivated_by or "-",
            ]
            for a in alarms
        ],
        empty="no active alarms" if not args.all else "no alarms",
    )
    return 0


async def _alarm_show(store: Stores, args: argparse.Namespace) -> int:
    alarm = await _get_alarm(store, args.id)
    events = await store.history.timeline(alarm.id)
    if args.json:
        _print_json(
            {"alarm": dataclasses.asdict(alarm), "timeline": [_event_dict(e) for e in events]}
        )
        return 0
    _print_table(
        ["FIELD", "VALUE"],
        [[f.name, _text(getattr(alarm, f.name))] for f in dataclasses.fields(alarm)],
    )
    print()
    _print_table(
        ["TIME", "EVENT", "EXTENSION", "DETAILS"],
        [[_when(e.occurred_at), e.kind, e.extension or "-", _details(e.details)] for e in events],
        empty="no events",
    )
    return 0


async def _alarm_deactivate(store: Stores, args: argparse.Namespace) -> int:
    alarm = await _get_alarm(store, args.id)
    reason = args.reason.strip()
    if not reason:
        fail("give a --reason")
    by = _operator()
    event = HistoryEvent(
        kind=EventKind.DEACTIVATED,
        alarm_id=alarm.id,
        extension=None,
        department=alarm.department_name,
        details={"by": by, "reason": reason, "source": "cli"},
    )
    done = await store.alarms.deactivate(alarm.id, by, reason, event)
    if done is None:
        fail(f"alarm {alarm.id} is not active")
    print(f"deactivated alarm {done.id} ({done.department_name})")
    return 0


async def _get_alarm(store: Stores, alarm_id: int) -> Alarm:
    alarm = await store.alarms.get_alarm(alarm_id)
    if alarm is None:
        fail(f"unknown alarm {alarm_id}")
    return alarm


CSV_COLUMNS = (
    "id",
    "event_id",
    "occurred_at",
    "alarm_id",
    "kind",
    "extension",
    "department",
    "details",
)


async def _history_export(store: Stores, args: argparse.Namespace) -> int:
    if args.since >= args.until:
        fail("--since must be before --until")
    events = await store.history.history(args.since, args.until)
    if args.format == "json":
        text = json.dumps([_event_dict(e) for e in events], indent=2, default=_json_default) + "\n"
    else:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for event in events:
            row = _event_dict(event)
            row["details"] = json.dumps(row["details"], sort_keys=True)
            writer.writerow(["" if row[c] is None else _text(row[c]) for c in CSV_COLUMNS])
        text = buffer.getvalue()
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {args.output}: {exc.strerror or exc}")
        print(f"wrote {len(events)} events to {args.output}", file=sys.stderr)
    return 0


def _since(text: str) -> datetime:
    return _parse_time(text, end_of_day=False)


def _until(text: str) -> datetime:
    return _parse_time(text, end_of_day=True)


def _parse_time(text: str, *, end_of_day: bool) -> datetime:
    """A date (its midnight; the next one for ``end_of_day``) or an ISO date-time.
    Without an offset it is local time."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if end_of_day:
                day += timedelta(days=1)
            moment = datetime.combine(day, time())
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date: '{text}' (expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM])"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()


# -- output ----------------------------------------------------------------------------------


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str = "") -> None:
    if not rows:
        if empty:
            print(empty)
        return
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in [headers, *rows]:
        print(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)
            ).rstrip()
        )


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=_json_default))


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _event_dict(event: StoredEvent) -> dict[str, Any]:
    return dataclasses.asdict(event)


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone().isoformat(sep=" ", timespec="seconds")


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _details(details: dict[str, Any]) -> str:
    return " ".join(f"{key}={json.dumps(value)}" for key, value in details.items()) or "-"
