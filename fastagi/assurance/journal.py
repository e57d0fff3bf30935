"""The journal: where history waits, fsync'd, while PostgreSQL is down."""

from __future__ import annotations

import asyncio

from fastagi.assurance.files import pending_bytes, try_write
from fastagi.assurance.result import Finding
from fastagi.assurance.runner import Check, Context
from fastagi.store.journal import JOURNAL_FILE


async def journal(context: Context) -> Finding:
    directory = context.settings.journal.directory
    if directory is None:
        return Finding.warn(
            "no journal directory: while PostgreSQL is down, history waits in memory only"
            " and a restart loses it",
            "set [journal] directory (default /var/lib/fastagi-panic/journal)",
        )
    problem = await asyncio.to_thread(try_write, directory)
    if problem is not None:
        return Finding.fail(
            problem,
            "the server's user must be able to write there (fastagi freepbx install makes"
            " it Asterisk's group, mode 2770)",
        )
    if not await asyncio.to_thread(directory.is_dir):
        return Finding.ok(f"{directory} does not exist yet; the server creates it when needed")
    waiting = await asyncio.to_thread(pending_bytes, directory / JOURNAL_FILE)
    if waiting:
        return Finding.warn(
            f"{waiting} bytes of history wait in {directory / JOURNAL_FILE}: it has not"
            " reached PostgreSQL yet",
            "a running server writes it to PostgreSQL once it answers; is one running,"
            " and does it reach PostgreSQL?",
        )
    return Finding.ok(f"{directory} is writable; no history waiting in it")


CHECKS = (Check("journal", "history can wait on disk while PostgreSQL is down", journal),)
