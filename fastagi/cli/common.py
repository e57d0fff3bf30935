"""What the sub-command modules share: the user-facing error, the settings and database
address, and the plumbing of the administration commands (a pool, the stores, one line on
stderr for a refused request).

A module of its own so that sub-command modules need not import ``fastagi.cli``, which
imports them all to build its parser.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn, TypeAlias

import asyncpg
from pydantic import ValidationError

from fastagi.config import Settings, load_settings
from fastagi.store import StoreError, Stores
from fastagi.store.pool import redact_dsn


class CliError(Exception):
    """A user-facing error: printed as one line on stderr, exit code 2."""


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str], *, name: str) -> int:
    """Parse ``argv`` and run the chosen handler: its exit code, 2 with one line on stderr
    for a CliError, 130 on Ctrl-C. Shared by ``fastagi`` and ``python -m fastagi_dev``."""
    args = parser.parse_args(list(argv))
    try:
        result: int = args.handler(args)
    except CliError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


def fail(message: str) -> NoReturn:
    raise CliError(message) from None


def settings_error(exc: ValidationError) -> str:
    """One line naming each bad setting and its problem, never its value (a value may
    be a secret): ``agi.port: Input should be less than or equal to 65535``."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        message = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{where}: {message}")
    return "invalid settings: " + "; ".join(problems)


def load_settings_or_fail() -> Settings:
    """The settings, or a CliError whose one line says what is wrong with them."""
    try:
        return load_settings()
    except ValidationError as exc:
        fail(settings_error(exc))
    except OSError as exc:  # FASTAGI_CONFIG names a missing or unreadable file
        fail(f"cannot read the settings: {exc}")
    except ValueError as exc:  # the TOML file does not parse (tomllib.TOMLDecodeError)
        fail(f"cannot parse the settings file: {exc}")


def database_dsn(args: argparse.Namespace) -> str:
    """``--dsn`` when given, else the settings' ``database.dsn``."""
    if args.dsn:
        return str(args.dsn)
    return load_settings_or_fail().database.dsn.get_secret_value()


# -- the administration commands' plumbing --------------------------------------------

CONNECT_TIMEOUT = 10.0
# What connecting raises for a server that is down, a wrong password, a bad DSN...
CONNECT_ERRORS = (
    OSError,
    TimeoutError,
    ValueError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def fail_to_connect(dsn: str, exc: BaseException) -> NoReturn:
    reason = str(exc) or exc.__class__.__name__
    fail(f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {reason}")


Work = Callable[[Stores, argparse.Namespace], Awaitable[int]]
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class Builder:
    """Adds command groups and their leaf commands, each with ``--dsn``."""

    def __init__(self, subparsers: SubParsers) -> None:
        self._subparsers = subparsers
        self._common = argparse.ArgumentParser(add_help=False)
        self._common.add_argument(
            "--dsn", help="PostgreSQL URL (default: database.dsn from the settings)"
        )
        self._as_json = argparse.ArgumentParser(add_help=False)
        self._as_json.add_argument("--json", action="store_true", help="print JSON for scripts")

    @property
    def top(self) -> SubParsers:
        """For a command of its own, without a group (``fastagi drill``)."""
        return self._subparsers

    def group(self, name: str, help_text: str, parent: SubParsers | None = None) -> SubParsers:
        parser = (parent or self._subparsers).add_parser(name, help=help_text)
        return parser.add_subparsers(
            dest=f"{name.replace('-', '_')}_action", metavar="ACTION", required=True
        )

    def command(
        self, actions: SubParsers, name: str, help_text: str, work: Work, *, listing: bool = False
    ) -> argparse.ArgumentParser:
        parents = [self._common, self._as_json] if listing else [self._common]
        parser = actions.add_parser(name, help=help_text, parents=parents)
        parser.set_defaults(handler=_handler(work))
        return parser


def _handler(work: Work) -> Callable[[argparse.Namespace], int]:
    def handle(args: argparse.Namespace) -> int:
        return asyncio.run(_with_stores(database_dsn(args), work, args))

    return handle


async def _with_stores(dsn: str, work: Work, args: argparse.Namespace) -> int:
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, timeout=CONNECT_TIMEOUT)
    except CONNECT_ERRORS as exc:
        fail_to_connect(dsn, exc)
    try:
        return await work(Stores.over(pool), args)
    except StoreError as exc:
        fail(str(exc))
    except asyncpg.UndefinedTableError:
        fail("the database has no alarm tables yet: run `fastagi db migrate`")
    finally:
        await pool.close()


def operator() -> str:
    """Who runs this command, as the history records it."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"
