"""What the administrators set up: every department pages someone, often enough to be
heard as set, and someone can stop an alarm by phone."""

from __future__ import annotations

from datetime import datetime

from fastagi.assurance.result import Finding
from fastagi.assurance.runner import Check, Context
from fastagi.config.catalogues import load_languages
from fastagi.domain.language import DEFAULT_LANGUAGE, CatalogueError
from fastagi.tts.announcement import AnnouncementMeter, PiecesNotRendered


async def departments(context: Context) -> Finding:
    stores = context.stores
    listed = await stores.directory.list_departments()
    if not listed:
        return Finding.warn(
            "no departments: every alarm comes from an extension in no department",
            "fastagi department add NAME --paging-group GROUP; fastagi extension map ...",
        )
    snapshot = await stores.directory.load_directory()
    devices = {department.id: department.devices for department in snapshot.departments}
    silent = []
    for department in listed:
        if department.paging_group is None:
            silent.append(f"{department.name} has no paging group")
        elif not devices.get(department.id):
            silent.append(f"{department.name}'s paging group {department.paging_group} is empty")
    short = []
    # Measured from the pieces the server rendered ahead, never rendered here: a
    # department whose pieces are not there yet (a new site's first minute, a department
    # added a moment ago) is measured by a later run.
    not_yet = 0
    meter = AnnouncementMeter(context.settings, render_missing=False)
    try:
        for department in listed:
            interval = department.interval_seconds or snapshot.default_interval_seconds
            try:
                announcement = await meter.measure(
                    department.name,
                    department.patterns,
                    department.language or snapshot.default_language,
                )
            except PiecesNotRendered:
                not_yet += 1
                continue
            if announcement is not None and interval < announcement.seconds:
                short.append(
                    f"{department.name} pages every {announcement.seconds:.1f} s, not"
                    f" {interval} s: its announcement is longer than the interval"
                )
    finally:
        await meter.close()
    if silent:
        return Finding.fail(
            "an alarm would page nobody: " + "; ".join(silent + short),
            "fastagi department set NAME --paging-group GROUP;"
            " fastagi paging-group device add GROUP PJSIP/201",
        )
    pending = (
        f"; {not_yet} not measured yet (their prompts are not rendered yet)" if not_yet else ""
    )
    if short:
        return Finding.warn(
            "; ".join(short) + pending,
            "pages run back to back then; set a longer interval or a shorter [alarm] announcement",
        )
    return Finding.ok(f"{len(listed)} departments, each with a paging group of devices{pending}")


async def deactivators(context: Context) -> Finding:
    # A deactivator without a PIN cannot exist: pin_hash is NOT NULL with a CHECK
    # (sql/002_alarms.sql). What can: nobody, or everybody locked out.
    listed = await context.stores.deactivators.list_deactivators()
    if not listed:
        return Finding.warn(
            "no deactivator: no extension can stop an alarm by phone (*556), only the CLI",
            "fastagi deactivator add EXTENSION (it asks for the PIN)",
        )
    locked = [d for d in listed if d.locked_until is not None]
    if locked:
        names = ", ".join(f"{d.extension} until {_clock(d.locked_until)}" for d in locked)
        return Finding.warn(
            f"locked out after wrong PINs: {names}",
            "it ends by itself, or now: fastagi deactivator unlock EXTENSION",
        )
    return Finding.ok(f"{len(listed)} deactivator(s): {', '.join(d.extension for d in listed)}")


async def languages(context: Context) -> Finding:
    """Every catalogue parses; a text a translation lacks, and a language in use without
    a catalogue, are spoken in English: said here rather than heard first in an alarm."""
    try:
        # A few small files, read once per run: no thread needed.
        catalogues = load_languages(context.settings.flows.catalogues)
    except CatalogueError as exc:
        return Finding.fail(
            f"a prompt catalogue cannot be read: {exc}",
            'fix the file (TOML: key = "text", the {fields} of en.toml only) or remove it;'
            " the server refuses to start with it",
        )
    policy = await context.stores.policy.load_settings()
    listed = await context.stores.directory.list_departments()
    in_use = {policy.default_language: ["the site's default"]}
    for department in listed:
        if department.language:
            in_use.setdefault(department.language, []).append(department.name)
    problems = [
        f"{code} has no catalogue ({', '.join(users)} speak English)"
        for code, users in sorted(in_use.items())
        if code not in catalogues.catalogues
    ]
    problems += [
        f"{code} lacks {', '.join(keys)} (spoken in English)"
        for code, keys in catalogues.missing().items()
    ]
    if problems:
        return Finding.warn(
            "; ".join(problems),
            "translate the missing texts in the language's catalogue (copy them from"
            f" en.toml), or set another language: fastagi department set NAME --language"
            f" {DEFAULT_LANGUAGE}",
        )
    return Finding.ok(
        f"catalogues {', '.join(catalogues.codes)} complete; in use: {', '.join(sorted(in_use))}"
    )


def _clock(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%H:%M:%S")


CHECKS = (
    Check(
        "departments",
        "every department pages a group of devices, at its interval",
        departments,
        ("migrations",),
    ),
    Check("deactivators", "someone can stop an alarm by phone", deactivators, ("migrations",)),
    Check(
        "languages",
        "every prompt is translated in every language in use",
        languages,
        ("migrations",),
    ),
)
