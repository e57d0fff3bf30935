"""Running checks: each at once, each after the checks it stands on, each bounded.

A check is an async function of a :class:`Context` that returns a
:class:`~fastagi.assurance.result.Finding`. The context lends it what the checks share:
the settings, the PostgreSQL pool and the AMI client (the server's own when it runs the
checks, else opened by the ``postgresql`` and ``ami`` checks themselves, so that a
failure to open them is their line), and answers computed once for several checks (a
device's reachability, the directory).

A check whose ``needs`` did not pass (OK or WARN) is not run: its line is SKIP, naming
the line to look at. A check that raises or outlives ``check.timeout`` fails, with what
it raised or how long it was given: a check never takes the others down with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from fastagi.ami import AmiClient
from fastagi.assurance.result import CheckResult, Finding, Report, Status
from fastagi.config import Settings
from fastagi.store import Stores
from fastagi.store.pool import create_pool

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The command-line check's own pool: the LISTEN/NOTIFY round trip holds one connection
# while another sends the NOTIFY, and a few checks read at once.
POOL_SIZE = 4
CONNECT_TIMEOUT = 10.0
# Not the server's 10 s: a login that reads no "system" events waits this long for a
# FullyBooted that will not come, and the ami-rights line says so.
FULLY_BOOTED_TIMEOUT = 3.0


@dataclass(frozen=True)
class Check:
    name: str  # stable: the JSON's "name", and what --only takes
    what: str  # what an OK proves, in a few words
    run: Callable[[Context], Awaitable[Finding]]
    needs: tuple[str, ...] = ()


class Context:
    """What a run of checks shares. Built by :func:`run_checks`."""

    def __init__(
        self,
        settings: Settings,
        *,
        pool: asyncpg.Pool[asyncpg.Record] | None = None,
        ami: AmiClient | None = None,
        send_test: bool = False,
    ) -> None:
        self.settings = settings
        self.send_test = send_test
        self._pool = pool
        self._ami = ami
        self._own_pool = False
        self._own_ami = False
        self._once: dict[str, asyncio.Future[Any]] = {}

    @property
    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise RuntimeError("no PostgreSQL pool: the check must need 'postgresql'")
        return self._pool

    @property
    def stores(self) -> Stores:
        return Stores.over(self.pool)

    @property
    def ami(self) -> AmiClient:
        if self._ami is None:
            raise RuntimeError("no AMI client: the check must need 'ami'")
        return self._ami

    @property
    def lent_pool(self) -> bool:
        """True when the pool is the server's (the check did not open it)."""
        return self._pool is not None and not self._own_pool

    @property
    def lent_ami(self) -> bool:
        return self._ami is not None and not self._own_ami

    async def open_pool(self) -> asyncpg.Pool[asyncpg.Record]:
        """The server's pool, or a small one of our own (raises what asyncpg raises)."""
        if self._pool is None:
            self._pool = await create_pool(
                self.settings.database, max_size=POOL_SIZE, connect_timeout=CONNECT_TIMEOUT
            )
            self._own_pool = True
        return self._pool

    async def open_ami(self) -> AmiClient:
        """The server's client, or one of our own, logged in (raises what it raises)."""
        if self._ami is None:
            client = AmiClient.from_settings(
                self.settings.ami,
                connect_timeout=CONNECT_TIMEOUT,
                login_timeout=CONNECT_TIMEOUT,
                fully_booted_timeout=FULLY_BOOTED_TIMEOUT,
                login_log_level=logging.DEBUG,
            )
            await client.connect()
            self._ami, self._own_ami = client, True
        return self._ami

    async def once(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        """``compute()``'s result, computed once per run for every check that asks."""
        future = self._once.get(key)
        if future is None:
            future = asyncio.ensure_future(compute())
            self._once[key] = future
        result: T = await asyncio.shield(future)
        return result

    async def close(self) -> None:
        """Close what this run opened; a lent pool or client stays open. Cancelled
        midway (the server stops during a scheduled run), it still lets go of both: the
        client's close does, and the pool is terminated."""
        try:
            for future in self._once.values():
                future.cancel()
            await asyncio.gather(*self._once.values(), return_exceptions=True)
            if self._own_ami and self._ami is not None:
                await self._ami.close()
            if self._own_pool and self._pool is not None:
                await self._pool.close()
        except BaseException:
            if self._own_pool and self._pool is not None:
                self._pool.terminate()
            raise


def selected(checks: Sequence[Check], only: Collection[str] | None) -> list[Check]:
    """``checks`` limited to the names in ``only`` and what they need, in their order.
    An unknown name is a ValueError naming the known ones."""
    if only is None:
        return list(checks)
    by_name = {check.name: check for check in checks}
    unknown = sorted(set(only) - by_name.keys())
    if unknown:
        raise ValueError(f"no check named {', '.join(unknown)}; the checks: {', '.join(by_name)}")
    wanted: set[str] = set()
    pending = list(only)
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending.extend(by_name[name].needs)
    return [check for check in checks if check.name in wanted]


async def run_checks(
    settings: Settings,
    checks: Sequence[Check],
    *,
    pool: asyncpg.Pool[asyncpg.Record] | None = None,
    ami: AmiClient | None = None,
    send_test: bool = False,
    only: Collection[str] | None = None,
) -> Report:
    """Run ``checks`` (all at once, each after its ``needs``) and report every line, in
    the order of ``checks``. ``pool`` and ``ami``: the server's, lent for the run (else
    the run opens and closes its own). ``send_test``: the notification checks send a
    test message to every recipient. Never raises for what a check finds."""
    chosen = selected(checks, only)
    names = {check.name for check in chosen}
    for check in chosen:
        missing = [need for need in check.needs if need not in names]
        if missing:
            raise ValueError(f"check {check.name} needs {missing}, which are not among them")
    context = Context(settings, pool=pool, ami=ami, send_test=send_test)
    loop = asyncio.get_running_loop()
    done: dict[str, asyncio.Future[CheckResult]] = {
        check.name: loop.create_future() for check in chosen
    }
    limit = settings.check.timeout

    async def run_one(check: Check) -> None:
        failed = []
        for need in check.needs:
            if (await done[need]).status not in (Status.OK, Status.WARN):
                failed.append(need)
        started = loop.time()
        if failed:
            finding = Finding.skip(f"not checked: needs {', '.join(failed)}, which did not pass")
        else:
            finding = await _bounded(check, context, limit)
        done[check.name].set_result(
            CheckResult(
                check.name,
                finding.status,
                finding.message,
                finding.remedy,
                loop.time() - started,
            )
        )

    try:
        await asyncio.gather(*(run_one(check) for check in chosen))
    finally:
        await context.close()
    return Report(tuple(done[check.name].result() for check in chosen))


async def _bounded(check: Check, context: Context, limit: float) -> Finding:
    deadline = asyncio.timeout(limit)
    try:
        async with deadline:
            return await check.run(context)
    except Exception as exc:
        # Only our deadline means "too slow"; a TimeoutError of the check's own (an AMI
        # action's) is something it did not handle, like any other exception.
        if isinstance(exc, TimeoutError) and deadline.expired():
            return Finding.fail(
                f"no answer within {limit:g} s",
                "something it waits for hangs; raise [check] timeout if it is only slow",
            )
        logger.exception("check %s failed unexpectedly", check.name)
        return Finding.fail(f"the check itself failed: {type(exc).__name__}: {exc}")
