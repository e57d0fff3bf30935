"""Re-enacting a recorded alarm against the sandbox (issue 13, part 4): the engine behind
``python -m fastagi_dev replay FILE``.

Why here and not in ``fastagi``: a replay drives the sandbox Asterisk and SIPp phones,
development tools that are not in the wheel; the replay file itself is written by the
production ``fastagi history export --alarm ID --format replay`` (fastagi/admin/replay.py).

What it does, from a replay file (fastagi/domain/replay.py):

0. The server's ``[alarm]`` settings of the time (lead-in, page timeout, announcement
   template...: ``AlarmSettings.REPLAYED``) over this machine's.
1. The directory of the time into the (empty) database: the department, its paging
   group and devices (the interval divided by ``speed``, at least the schema's 5 s), the
   caller's extension mapped to it, and the policy's confirmation settings.
2. A SIPp phone for each paging device of the sandbox (PJSIP/2NN), playing what that
   device did at the first page: answered (answers), busy (486), anything else (no
   phone: nobody answers).
3. The trigger: the caller's extension dials *555 from a SIPp desk phone and presses
   what they pressed (1 confirmed, 2 cancelled, nothing when nobody answered).
4. The deactivation at the original's moment divided by ``speed``, by the same name
   (through fastagi/admin, as the console's or the CLI's would be: PINs are not in the
   file, so a *556 call cannot be replayed key for key).
5. Both timelines side by side, and the differences (fastagi/domain/replay.py), the
   settings that had to differ among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import ValidationError

from fastagi.admin.alarms import deactivate_alarm
from fastagi.admin.replay import replay_document
from fastagi.app import running_server
from fastagi.config import AlarmSettings, Settings
from fastagi.domain.policy import MIN_INTERVAL
from fastagi.domain.replay import (
    FORMAT,
    TimelineEntry,
    compare_directories,
    compare_settings,
    compare_timelines,
    device_outcomes,
    entries,
    listed_entries,
    not_replayed,
    side_by_side,
)
from fastagi.flows import prompts
from fastagi.store import Stores
from fastagi.tts import TextToSpeech
from fastagi.tts.announcement import page_clips
from fastagi_dev.cluster import free_port
from fastagi_dev.devenv import prepare_database, running_cluster
from fastagi_dev.sandbox import sipp
from fastagi_dev.sandbox.instance import PAGING_PHONES, Sandbox, SandboxPorts, running_sandbox
from fastagi_dev.sandbox.settings import server_settings

__all__ = ["ReplayError", "ReplayResult", "load_replay_file", "replay", "replayed_alarm_settings"]

#: The one department a replay seeds its paging group under, when the file names none.
_GROUP = "replay"
_TRIGGER_SECONDS = 60.0


class ReplayError(Exception):
    """A replay file this engine cannot re-enact (another format, no activation)."""


@dataclass
class ReplayResult:
    original: list[TimelineEntry]
    replayed: list[TimelineEntry]
    alarm_id: int
    timeline_differences: list[str] = field(default_factory=list)
    directory_differences: list[str] = field(default_factory=list)
    # The [alarm] settings the replay paged with other values than the original's.
    settings_differences: list[str] = field(default_factory=list)
    # What a person should know but is no difference (a file without settings).
    notes: list[str] = field(default_factory=list)
    # The original's steps a replay does not re-enact (e-mail, SMS, emergency calls).
    listed: list[TimelineEntry] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return not (
            self.timeline_differences or self.directory_differences or self.settings_differences
        )

    def report(self) -> str:
        lines = [side_by_side(self.original, self.replayed, self.listed), ""]
        differences = [
            *self.settings_differences,
            *self.directory_differences,
            *self.timeline_differences,
        ]
        lines += (
            ["differences:", *(f"  {d}" for d in differences)]
            if differences
            else ["no differences"]
        )
        unreplayed = not_replayed(self.listed)
        if unreplayed:
            lines += ["not re-enacted (listed only):", *(f"  {line}" for line in unreplayed)]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def load_replay_file(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ReplayError(f"{path}: not a {FORMAT} file")
    return document


def replayed_alarm_settings(
    base: AlarmSettings,
    recorded: Mapping[str, Any] | None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[AlarmSettings, list[str]]:
    """``base`` (this machine's) with the file's ``[alarm]`` settings, and ``overrides``
    over them; and the notes. A value this version refuses, or a key it does not replay,
    keeps this machine's: :func:`compare_settings` then names the setting."""
    notes = []
    if recorded is None:
        notes.append(
            "the file holds no [alarm] settings (exported before sql/012): this machine's were used"
        )
    current = base.model_dump()
    for key, value in {**(recorded or {}), **(overrides or {})}.items():
        if key not in AlarmSettings.REPLAYED:
            continue
        try:
            AlarmSettings(**{**current, key: value})
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            notes.append(
                f"alarm.{key} = {value!r} is refused here ({reason}): kept {current[key]!r}"
            )
            continue
        current[key] = value
    return AlarmSettings(**current), notes


def _first_outcomes(original: list[TimelineEntry]) -> dict[str, str]:
    for entry in original:
        if entry.kind == "page_cycle":
            return device_outcomes(entry)
    return {}


def _answers(original: list[TimelineEntry]) -> list[str]:
    kinds = {entry.kind for entry in original}
    if "confirmed" in kinds:
        return ["1"]
    if "cancelled" in kinds:
        return ["2"]
    return []


async def _seed(stores: Stores, directory: Mapping[str, Any], extension: str, speed: float) -> None:
    department = directory.get("department")
    if not department:
        return  # an extension of no department: the alarm pages every group
    group = department.get("paging_group") or _GROUP
    await stores.directory.add_paging_group(group)
    for device in department.get("devices") or []:
        await stores.directory.add_paging_device(group, device)
    interval = department.get("interval_seconds")
    if interval is not None:
        interval = max(MIN_INTERVAL, round(interval / speed))
    await stores.directory.add_department(
        department["name"], interval_seconds=interval, paging_group=group
    )
    await stores.directory.map_extensions(department["name"], extension)


async def _prerender(settings: Settings, department: str) -> None:
    """The question and the announcement rendered before the trigger: a fresh sandbox
    renders them cold (seconds on a loaded laptop), which the site's server, running for
    weeks, did not; the replay would show that as a late page. The announcement as its
    page plays it: the department's pieces and the digit clips, not the whole text."""
    tts = TextToSpeech(settings.tts)
    try:
        await tts.prerender(
            [*prompts.fixed_texts(), prompts.panic_question(department)],
            clips=page_clips(settings.alarm.announcement, department),
        )
    finally:
        await tts.aclose()


def _phone(sandbox: Sandbox, device: str, outcome: str, workdir: Path) -> sipp.Phone | None:
    technology, _, name = device.partition("/")
    if technology != "PJSIP" or not name.isdigit() or int(name) not in PAGING_PHONES:
        return None
    if outcome == "busy":
        return sipp.Phone(sandbox, int(name), workdir, "uas_busy.xml")
    if outcome in {"answered", ""}:
        return sipp.PagingPhone(sandbox, int(name), workdir)
    return None  # no answer, failed: nobody picks up


async def replay(
    document: Mapping[str, Any],
    *,
    sandbox: Sandbox,
    settings: Settings,
    workdir: Path,
    speed: float = 1.0,
    directory: Mapping[str, Any] | None = None,
    alarm_settings: Mapping[str, Any] | None = None,
    tolerance: float = 1.5,
) -> ReplayResult:
    """Re-enact ``document`` with a server of ``settings`` (its database empty and
    migrated, its AMI the sandbox's), its ``[alarm]`` settings those of the file, and
    compare. ``directory``: page this directory instead of the recorded one;
    ``alarm_settings``: these ``[alarm]`` values instead of the recorded ones (the diff
    then names what changed)."""
    original = entries(document)
    if not any(entry.kind == "activated" for entry in original):
        raise ReplayError("the file has no activation to replay")
    recorded_settings = (document.get("settings") or {}).get("alarm")
    alarm_used, notes = replayed_alarm_settings(settings.alarm, recorded_settings, alarm_settings)
    settings = settings.model_copy(update={"alarm": alarm_used})
    recorded = document.get("directory") or {}
    used = directory if directory is not None else recorded
    alarm = document["alarm"]
    extension = str(alarm["extension"])
    pool = await asyncpg.create_pool(
        settings.database.dsn.get_secret_value(), min_size=1, max_size=4
    )
    try:
        stores = Stores.over(pool)
        await _seed(stores, used, extension, speed)
        await _prerender(settings, str(alarm["department"]))
        outcomes = _first_outcomes(original)
        devices = (used.get("department") or {}).get("devices") or list(outcomes)
        async with contextlib.AsyncExitStack() as stack:
            for device in devices:
                phone = _phone(sandbox, device, outcomes.get(device, ""), workdir)
                if phone is not None:
                    await stack.enter_async_context(phone)
            await stack.enter_async_context(running_server(settings))
            alarm_id = await _trigger_and_stop(
                stores,
                sandbox,
                workdir=workdir,
                extension=extension,
                answers=_answers(original),
                alarm=alarm,
                speed=speed,
            )
        replayed = entries(await replay_document(stores, alarm_id))
    finally:
        await pool.close()
    return ReplayResult(
        original=original,
        replayed=replayed,
        alarm_id=alarm_id,
        timeline_differences=compare_timelines(
            original, replayed, speed=speed, tolerance=tolerance
        ),
        directory_differences=compare_directories(recorded, used),
        settings_differences=compare_settings(recorded_settings, alarm_used.replayed()),
        notes=notes,
        listed=listed_entries(document),
    )


async def _trigger_and_stop(
    stores: Stores,
    sandbox: Sandbox,
    *,
    workdir: Path,
    extension: str,
    answers: list[str],
    alarm: Mapping[str, Any],
    speed: float,
) -> int:
    """The trigger call, then the deactivation at the original's moment after the
    activation (divided by ``speed``); the new alarm's id."""
    call = await sipp.call_dtmf(
        sandbox,
        workdir / "trigger",
        service="*555",
        ext=extension,
        answers=answers,
        within=_TRIGGER_SECONDS,
    )
    call.check()
    active = await stores.alarms.active_alarms()
    if len(active) != 1:
        raise ReplayError(f"the trigger left {len(active)} active alarms, not 1")
    [new] = active
    after = alarm.get("deactivated_after")
    if after is not None:
        # A replay plays the original's time: this wait is the point of it. The alarm
        # row's activated_at is PostgreSQL's clock, on this machine.
        due = new.activated_at.timestamp() + after / speed
        await asyncio.sleep(max(0.0, due - time.time()))
        await deactivate_alarm(
            stores,
            new.id,
            reason=str(alarm.get("deactivation_reason") or "replay"),
            by=str(alarm.get("deactivated_by") or "replay"),
        )
    return new.id


# -- python -m fastagi_dev replay ---------------------------------------------------------

#: A sandbox instance of its own, on ports beside ``make run``'s (which may be running).
REPLAY_PORTS = SandboxPorts(sip=5160, ami=5138, rtp_start=11000, rtp_end=11999, phone_base=5100)
REPLAY_AGI_PORT = 4673
REPLAY_INSTANCE = "replay"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="re-enact a recorded alarm against a sandbox of its own and compare timelines",
        description=(
            "Re-enact the alarm of a replay file (fastagi history export --alarm ID --format"
            " replay) on a sandbox Asterisk and an embedded PostgreSQL of its own, then print"
            " the original and the replayed timelines side by side and their differences."
            " Exit code 0 when they match, 1 otherwise."
        ),
    )
    parser.add_argument("file", type=Path, help="the replay file")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="N times faster (waits and intervals / N)"
    )
    parser.add_argument(
        "--tolerance", type=float, default=1.5, help="seconds an event may move (default 1.5)"
    )
    parser.set_defaults(handler=_replay_command)


def _replay_command(args: Any) -> int:
    from fastagi.cli.common import fail

    if args.speed <= 0:
        fail("--speed must be above 0")
    try:
        document = load_replay_file(args.file)
    except (OSError, ValueError, ReplayError) as exc:
        fail(f"cannot read the replay file: {exc}")
    result = asyncio.run(_replay_in_a_sandbox(document, args.speed, args.tolerance))
    print(result.report())
    return 0 if result.matches else 1


async def _replay_in_a_sandbox(
    document: Mapping[str, Any], speed: float, tolerance: float
) -> ReplayResult:
    with tempfile.TemporaryDirectory(prefix="fastagi-replay-") as scratch:
        workdir = Path(scratch)
        # PostgreSQL runs as its own OS user when this runs as root: it must reach the data.
        await asyncio.to_thread(workdir.chmod, 0o755)
        async with running_cluster(workdir / "pg", free_port()) as cluster:
            dsn = await prepare_database(cluster)
            async with running_sandbox(
                name=REPLAY_INSTANCE,
                ports=REPLAY_PORTS,
                agi_url=f"agi://127.0.0.1:{REPLAY_AGI_PORT}",
            ) as sandbox:
                settings = server_settings(sandbox, REPLAY_AGI_PORT, dsn)
                return await replay(
                    document,
                    sandbox=sandbox,
                    settings=settings,
                    workdir=workdir / "sipp",
                    speed=speed,
                    tolerance=tolerance,
                )
