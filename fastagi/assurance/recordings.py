"""The recordings directory of ``*557``: the server can write there (it moves a kept take
out of ``incoming/`` and deletes replaced recordings), and it exists, made by install with
Asterisk's group: created by the server on the first ``*557`` instead, it would carry the
server's owner and umask, and Asterisk's Record() might be refused writing the take."""

from __future__ import annotations

import asyncio

from fastagi.assurance.files import try_write
from fastagi.assurance.result import Finding
from fastagi.assurance.runner import Check, Context
from fastagi.config.recording import INCOMING

_REMEDY = (
    "fastagi freepbx install creates it (and its incoming/) with Asterisk's user and group,"
    " mode 2770; the server's user must be in that group"
)


async def recordings(context: Context) -> Finding:
    directory = context.settings.recording.directory
    if not await asyncio.to_thread(directory.is_dir):
        # A WARN, not a FAIL: *557 is not the alarm's path, and a site that never records
        # a location should not have its health lamp lit for it.
        creatable = await asyncio.to_thread(try_write, directory)
        return Finding.warn(
            f"{directory} does not exist: "
            + (
                "the first *557 creates it with the server's owner, and Asterisk may be"
                " refused writing the take into it"
                if creatable is None
                else f"*557 cannot record ({creatable})"
            ),
            _REMEDY,
        )
    for place in (directory, directory / INCOMING):
        problem = await asyncio.to_thread(try_write, place)
        if problem is not None:
            return Finding.fail(f"*557 cannot keep a recording: {problem}", _REMEDY)
    return Finding.ok(f"{directory} is writable")


CHECKS = (Check("recordings", "*557 can keep a recorded location", recordings),)
