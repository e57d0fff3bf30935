"""Route ``probe``: the connectivity probe behind feature code *599.

It plays a prompt, reads up to eight digits (``#`` ends early), records the call in
PostgreSQL and tells the dialplan the outcome in ``FASTAGI_STATUS``. An administrator uses
it to check that Asterisk reaches the server and the server reaches its database.
"""

from __future__ import annotations

import logging
from typing import Protocol

from fastagi.agi.errors import AgiHangup
from fastagi.agi.session import AgiSession

PROMPT = "vm-enter-num-to-call"
DIGITS_TIMEOUT_MS = 5000
MAX_DIGITS = 8

logger = logging.getLogger(__name__)


class ProbeRecorder(Protocol):
    async def record(
        self,
        *,
        uniqueid: str,
        channel: str,
        callerid: str | None,
        calleridname: str | None,
        digits: str,
        route: str,
    ) -> int: ...


class ProbeFlow:
    def __init__(self, recorder: ProbeRecorder) -> None:
        self._recorder = recorder

    async def __call__(self, session: AgiSession) -> None:
        env = session.environment
        log_extra = {"agi_uniqueid": env.uniqueid, "peer": session.peer}
        try:
            await session.answer()
            result = await session.get_data(
                PROMPT, timeout_ms=DIGITS_TIMEOUT_MS, max_digits=MAX_DIGITS
            )
        except AgiHangup:
            logger.info("caller hung up during the probe prompt", extra=log_extra)
            raise
        row_id = await self._recorder.record(
            uniqueid=env.uniqueid,
            channel=env.channel,
            callerid=env.callerid,
            calleridname=env.calleridname,
            digits=result.digits,
            route=env.variables.get("agi_network_script", env.script),
        )
        logger.info(
            "probe recorded",
            extra={**log_extra, "digits": result.digits, "probe_id": row_id},
        )
        await session.set_variable("FASTAGI_PROBE_DIGITS", result.digits)
        await session.set_variable("FASTAGI_STATUS", "OK")
