"""SIPp phones registered to the sandbox and seen Reachable by Asterisk's qualify: what
the tests of ``fastagi check`` and of the health watch start from."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastagi_dev.sandbox.ami import AmiClient as SandboxAmi
from fastagi_dev.sandbox.instance import Sandbox
from tests import sipp


async def contact_status(admin: SandboxAmi, ext: int) -> str:
    contact = await admin.action({"Action": "Getvar", "Variable": f"PJSIP_AOR({ext},contact)"})
    found = await admin.action(
        {"Action": "Getvar", "Variable": f"PJSIP_CONTACT({contact['Value']},status)"}
    )
    return found.get("Value", "")


async def settle(admin: SandboxAmi, phones: tuple[int, ...], wanted: str) -> None:
    """Until Asterisk's qualify says ``wanted`` (Reachable, Unreachable) of each phone's
    contact: its current status, else the ContactStatus event that changes it (the
    connection was open before anything changed, so no event is missed)."""
    pending = {str(ext) for ext in phones if await contact_status(admin, ext) != wanted}
    while pending:
        event = await admin.wait_event(
            "ContactStatus",
            within=20,
            where=lambda e: e.get("AOR") in pending and e.get("ContactStatus") == wanted,
        )
        pending.discard(event["AOR"])


@asynccontextmanager
async def qualified_phones(
    sandbox: Sandbox, admin: SandboxAmi, exts: tuple[int, ...], tmp_path: Path
) -> AsyncIterator[dict[int, sipp.Phone]]:
    """The phones ``exts``, answering qualify's OPTIONS, once all are Reachable; after,
    stopped and seen Unreachable."""
    started = {ext: sipp.Phone(sandbox, ext, tmp_path, answer_options=True) for ext in exts}
    try:
        for phone in started.values():
            await phone.start()
        await settle(admin, exts, "Reachable")
        yield started
    finally:
        for phone in started.values():
            await phone.stop()
        # The next test starts from Unreachable, not from a qualify still in flight.
        await settle(admin, exts, "Unreachable")
