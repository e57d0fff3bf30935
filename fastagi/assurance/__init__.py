"""``fastagi check``: proof, link by link, that an alarm would get through now.

Each check is an async function that tries one link the way an alarm uses it and returns
a :class:`Finding`: OK, WARN or FAIL with one line on what is wrong and what to do (SKIP
when a check it stands on failed). :func:`run_checks` runs them all at once, each after
the checks it needs, each within ``[check] timeout``, and returns a :class:`Report`
whose ``exit_code`` is 0 (all OK), 1 (a WARN) or 2 (a FAIL).

The command line opens its own PostgreSQL pool and AMI connection; a running server
lends its own (``pool=``, ``ami=``) to run the same checks on a schedule.

Nothing a check does reaches a person: the AMI rights are tried on channels and contexts
that do not exist, the FastAGI server is called through a ``Local`` channel into the
probe route, the prompt is played into a ``Local`` channel, and no e-mail or SMS goes out
without ``send_test``.
"""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

from fastagi.ami import AmiClient
from fastagi.assurance.result import CheckResult, Finding, Report, Status
from fastagi.assurance.runner import Check, Context
from fastagi.assurance.runner import run_checks as run_some
from fastagi.assurance.suite import CHECKS
from fastagi.config import Settings


async def run_checks(
    settings: Settings,
    *,
    pool: asyncpg.Pool[asyncpg.Record] | None = None,
    ami: AmiClient | None = None,
    send_test: bool = False,
    only: Collection[str] | None = None,
) -> Report:
    """Every check (or those named in ``only``, with what they need)."""
    return await run_some(settings, CHECKS, pool=pool, ami=ami, send_test=send_test, only=only)


__all__ = [
    "CHECKS",
    "Check",
    "CheckResult",
    "Context",
    "Finding",
    "Report",
    "Status",
    "run_checks",
]
