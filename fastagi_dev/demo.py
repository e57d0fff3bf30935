"""``make demo`` (``python -m fastagi_dev demo``): the whole story against ``make run``,
with SIPp phones standing in for real ones, so a newcomer sees the main job without a softphone.

1. Phones 201-204 (the Emergency Room paging group) come up as SIPp phones that answer.
2. Desk phone 101 presses the panic key (*555) and confirms with 1.
3. The phones receive two page cycles (the demo sets the department's interval to 10 s
   for the duration of the demo and restores it afterwards).
4. Deactivator 150 dials *556 and enters the demo PIN.
5. The alarm's timeline is printed from the history table, and two delays measured from
   the SIPp logs: the confirming DTMF to the first page, the PIN's last key to the end of
   the page in progress.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

from fastagi.cli.common import CliError
from fastagi.store import Stores
from fastagi_dev.sandbox.image import default_rootfs
from fastagi_dev.sandbox.instance import Sandbox
from fastagi_dev.sandbox.sipp import PagingPhone, SipMessage, SippResult, call_dtmf, parse_messages
from fastagi_dev.seed import DEMO_PIN

DEMO_DEPARTMENT = "Emergency Room"
DEMO_CALLER = 101
DEMO_DEACTIVATOR = 150
DEMO_PHONES = (201, 202, 203, 204)
DEMO_INTERVAL_SECONDS = 10
DEMO_CYCLES = 2


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="play the whole alarm story against `make run`")
    demo.add_argument("--dsn", help="the database of `make run` (default: read from it)")
    demo.set_defaults(handler=_demo_command)


def dev_cache_dir() -> Path:
    """Where ``make run`` keeps its state: ``$FASTAGI_DEV_DIR``, else ``<repo>/.cache``."""
    from fastagi_dev.sandbox.image import repo_root

    return Path(os.environ.get("FASTAGI_DEV_DIR", repo_root() / ".cache"))


def dev_state_path() -> Path:
    """What a running ``make run`` tells ``make demo``: its DSN and sandbox instance."""
    return dev_cache_dir() / "dev.json"


def _demo_command(args: argparse.Namespace) -> int:
    state_file = dev_state_path()
    if args.dsn is None and not state_file.is_file():
        raise CliError("`make run` is not running (start it in another terminal first)")
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    dsn = args.dsn or state["dsn"]
    try:
        sandbox = Sandbox.attach(default_rootfs(), state.get("instance", "dev"))
    except Exception as exc:
        raise CliError(f"{exc}: start `make run` in another terminal first") from None
    asyncio.run(run_demo(sandbox, dsn))
    return 0


def say(step: str) -> None:
    print(f"\n== {step}", flush=True)


async def run_demo(sandbox: Sandbox, dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    store = Stores.over(pool)
    department = await store.directory.get_department(DEMO_DEPARTMENT)
    workdir = Path(tempfile.mkdtemp(prefix="fastagi-demo-"))
    try:
        await store.directory.set_department_interval(DEMO_DEPARTMENT, DEMO_INTERVAL_SECONDS)
        async with contextlib.AsyncExitStack() as stack:
            phones = [
                await stack.enter_async_context(PagingPhone(sandbox, ext, workdir / f"phone-{ext}"))
                for ext in DEMO_PHONES
            ]
            await _story(sandbox, store, phones, workdir)
    finally:
        await store.directory.set_department_interval(DEMO_DEPARTMENT, department.interval_seconds)
        await pool.close()
    print(f"\nSIPp logs: {workdir}")


async def _story(sandbox: Sandbox, store: Stores, phones: list[PagingPhone], workdir: Path) -> None:
    say(f"phones {', '.join(map(str, DEMO_PHONES))} are up (SIPp, answering every call)")
    say(f"desk phone {DEMO_CALLER} presses the panic key (*555) and confirms with 1")
    trigger = await call_dtmf(
        sandbox, workdir / "trigger", service="*555", ext=DEMO_CALLER, answers=["1"]
    )
    trigger.check()
    [alarm] = [a for a in await store.alarms.active_alarms() if a.extension == str(DEMO_CALLER)]
    print(f"   alarm {alarm.id} is active: {alarm.department_name}, extension {alarm.extension}")

    say(f"the paging group hears {DEMO_CYCLES} cycles, {DEMO_INTERVAL_SECONDS} s apart")
    for phone in phones:
        await phone.wait_invites(DEMO_CYCLES, within=DEMO_INTERVAL_SECONDS * DEMO_CYCLES + 30)
    first = min(phone.invite_times[0] for phone in phones)
    for phone in phones:
        times = ", ".join(f"+{(t - first).total_seconds():.1f} s" for t in phone.invite_times)
        print(f"   phone {phone.ext}: INVITEs at {times}")

    say(f"deactivator {DEMO_DEACTIVATOR} dials *556 and enters the PIN {DEMO_PIN}")
    stop = await call_dtmf(
        sandbox,
        workdir / "deactivate",
        service="*556",
        ext=DEMO_DEACTIVATOR,
        answers=[f"{DEMO_PIN}#"],
    )
    stop.check()
    stopped = await store.alarms.get_alarm(alarm.id)
    assert stopped is not None
    print(f"   alarm {alarm.id}: {stopped.state}, by {stopped.deactivated_by}")

    say(f"timeline of alarm {alarm.id} (fastagi alarm show {alarm.id})")
    for event in await store.history.timeline(alarm.id):
        details = json.dumps(dict(event.details), ensure_ascii=False) if event.details else ""
        print(f"   {event.occurred_at:%H:%M:%S.%f}"[:-3] + f"  {event.kind:<22} {details}")

    say("measured from the SIPp logs")
    for line in measurements(trigger, stop, phones):
        print(f"   {line}")


def measurements(trigger: SippResult, stop: SippResult, phones: Sequence[PagingPhone]) -> list[str]:
    """Two delays, from the SIPp logs (one clock: every SIPp runs on this machine).

    The confirming DTMF is the last INFO phone 101 sent; the last PIN key is the INFO with
    ``Signal=#`` phone 150 sent. The end of the page is the last BYE a paging phone
    received after that key (none: no page was in progress at the deactivation).
    """
    lines = []
    confirm = _sent_info(trigger.messages)
    invites = [t for phone in phones for t in phone.invite_times]
    if confirm is None or not invites:
        lines.append("confirming DTMF -> first page INVITE: not found in the SIPp logs")
    else:
        lines.append(f"confirming DTMF -> first page INVITE: {_ms(min(invites) - confirm.time)}")
    last_key = _sent_info(stop.messages, signal="#")
    if last_key is None:
        lines.append("last PIN digit (#) -> last page BYE: no '#' in the SIPp log")
        return lines
    byes = [
        m.time
        for phone in phones
        for m in parse_messages(phone.messages_log)
        if m.received and m.first_line.startswith("BYE ") and m.time >= last_key.time
    ]
    if byes:
        lines.append(f"last PIN digit (#) -> last page BYE: {_ms(max(byes) - last_key.time)}")
    else:
        lines.append("last PIN digit (#) -> last page BYE: no page was in progress")
    return lines


def _sent_info(messages: Sequence[SipMessage], signal: str | None = None) -> SipMessage | None:
    """The last SIP INFO sent (DTMF), of ``Signal=<signal>`` when given."""
    sent = [
        m
        for m in messages
        if not m.received
        and m.first_line.startswith("INFO ")
        and (signal is None or f"Signal={signal}" in m.text)
    ]
    return sent[-1] if sent else None


def _ms(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() * 1000:.0f} ms"
