"""PINs and the AMI secret never appear in a log record, a history row or an exception:
a real deactivation with a wrong then the right PIN, over a real AMI login, with every
logger at DEBUG."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fastagi.domain.pins import hash_pin_async
from fastagi_dev.sandbox import Sandbox
from tests.e2e.flow_harness import flow_harness
from tests.e2e.test_deactivate_flow import call, raise_alarm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

# Seven digits (the SIPp scenario sends at most eight keys, with "#"): unlikely enough
# that no other text holds them by chance (a 4-digit PIN once matched a timestamp).
PIN = "7394028"
WRONG_PIN = "8265910"


_RECORD_NUMBERS = frozenset(
    {"created", "msecs", "relativeCreated", "thread", "process", "lineno", "levelno"}
)


def record_text(record: logging.LogRecord) -> str:
    # Every attribute but the clock and process numbers every record carries.
    attributes = {k: v for k, v in record.__dict__.items() if k not in _RECORD_NUMBERS}
    parts = [record.getMessage(), repr(record.args), repr(attributes)]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(repr(record.exc_info[1]))
        parts.append(logging.Formatter().formatException(record.exc_info))
    if record.exc_text:
        parts.append(record.exc_text)
    return "\n".join(parts)


async def test_no_pin_and_no_ami_secret_in_logs_history_or_errors(
    sandbox: Sandbox,
    agi_port: int,
    database_dsn: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = sandbox.ami_secret
    assert len(secret) >= 8
    async with flow_harness(sandbox, agi_port, database_dsn, tmp_path) as harness:
        await harness.department("Ward 7", "120-129", interval=30)
        await harness.store.deactivators.set_deactivator("101", await hash_pin_async(PIN))
        await harness.store.policy.set_policy(pin_attempts=1, lockout_seconds=0)
        await harness.prerender()
        alarm = await raise_alarm(harness, "121")
        async with harness.serving() as (_, deactivate):
            # One wrong PIN ends the call (one attempt, no lockout); a second call
            # brings the right one.
            await call(harness, 101, answers=[f"{WRONG_PIN}#"])
            await call(harness, 101, answers=[f"{PIN}#"])
        errors = [repr(exc) for exc in deactivate.errors]
        stopped = await harness.store.alarms.get_alarm(alarm.id)
        rows = await harness.pool.fetch("SELECT * FROM alarm_events ORDER BY id")
        lockouts = await harness.pool.fetch("SELECT * FROM deactivation_lockouts")
        deactivators = await harness.pool.fetch("SELECT * FROM deactivators")

    assert stopped is not None
    assert stopped.state == "deactivated"
    kinds = [row["kind"] for row in rows]
    assert "deactivation_failed" in kinds
    assert "deactivated" in kinds
    assert lockouts == []  # the right PIN cleared the count
    texts = {
        "log record": [record_text(record) for record in caplog.records],
        "history row": [repr(dict(row)) for row in rows],
        "deactivator row": [repr(dict(row)) for row in deactivators],
        "exception": errors,
    }
    assert texts["log record"], "nothing was logged at DEBUG"
    for where, items in texts.items():
        for item in items:
            for needle in (PIN, WRONG_PIN, secret):
                assert needle not in item, f"a {where} holds a secret: {item[:300]}"
