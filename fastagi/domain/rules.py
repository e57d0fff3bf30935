"""Pure rules of a running alarm: when its next page starts, what it says, what it pages.

No I/O and no clock of its own: callers pass monotonic times (``loop.time()``), so the
rules are tested with plain numbers (tests/unit/test_domain_rules.py).

Theory of operation. An alarm pages its department every ``interval`` seconds, measured
start to start, and never overlaps two pages of itself: a page that runs longer than the
interval delays the next one until it has ended, and the schedule then continues from
that later start (no burst of catch-up pages). The interval is whatever the database says
right before each wait, so an administrator's change applies from the next cycle.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

from fastagi.domain.directory import UNKNOWN_DEPARTMENT

# Page()'s first argument joins devices with '&' (app_page.c, page_exec splits on '&'),
# Playback's first argument joins files with '&' (app_playback.c): neither may appear
# inside one item, nor a ',' that would end the application's first argument.
_SEPARATORS = frozenset("&,|()")


def next_cycle_start(started: float, ended: float, interval: float) -> float:
    """When the next cycle starts, given when the last one started and ended.

    Start to start, ``interval`` apart; never before the last one ended.
    """
    if interval <= 0:
        raise ValueError(f"interval must be positive, not {interval}")
    if ended < started:
        raise ValueError("a cycle cannot end before it started")
    return max(started + interval, ended)


def wait_before(now: float, next_start: float) -> float:
    """Seconds to wait from ``now`` until ``next_start`` (0 when it has passed)."""
    return max(0.0, next_start - now)


def error_backoff(failures_in_a_row: int, base: float, ceiling: float) -> float:
    """The pause after a cycle that raised: ``base``, doubling per failure, at most
    ``ceiling``. A failure is never a reason to stop paging, only to slow the retries."""
    if failures_in_a_row <= 0:
        return 0.0
    return float(min(ceiling, base * 2.0 ** (failures_in_a_row - 1)))


def announcement_text(template: str, department: str | None, extension: str) -> str:
    """The text to speak, e.g. "Panic alarm. Department Ward 3. Extension 201."."""
    return template.format(department=department or UNKNOWN_DEPARTMENT, extension=extension)


# An extension is a handful of characters; a longer string is not worth paging out loud.
MAX_SPOKEN_CHARACTERS = 20


@dataclass(frozen=True, slots=True)
class SpokenCharacters:
    """An extension, spoken one character at a time ("2 0 1"): letters and digits only,
    at most MAX_SPOKEN_CHARACTERS of them."""

    characters: str


def announcement_segments(
    template: str, department: str | None, extension: str
) -> list[str | SpokenCharacters]:
    """The announcement cut where it names the extension, e.g. ["Panic alarm. Department
    Ward 3. Extension", SpokenCharacters("201")] for the default template.

    The texts depend on the department only, so each is rendered once per department
    ahead of time, and the extension is spoken from one clip per character: an alarm from
    an extension never heard before needs no render. Each text comes from
    ``announcement_text`` over the template's pieces between ``{extension}`` fields; a
    piece with nothing to say (the closing ".") is left out.
    """
    segments: list[str | SpokenCharacters] = []
    piece: list[str] = []

    def flush() -> None:
        text = announcement_text("".join(piece), department, extension).strip()
        if any(char.isalnum() for char in text):
            segments.append(text)
        piece.clear()

    for literal, field, spec, conversion in string.Formatter().parse(template):
        piece.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is None:
            continue
        if field == "extension":
            flush()
            spoken = "".join(char for char in extension if char.isalnum())
            if spoken:
                segments.append(SpokenCharacters(spoken[:MAX_SPOKEN_CHARACTERS]))
        else:
            piece.append(
                "{"
                + field
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
    flush()
    return segments


def join_items(items: Sequence[str], what: str) -> str:
    """Devices or sound files joined with '&' for Page() or Playback().

    Raises ValueError for an empty list or an item that would split the argument.
    """
    if not items:
        raise ValueError(f"no {what}")
    for item in items:
        if not item or _SEPARATORS.intersection(item) or any(c.isspace() for c in item):
            raise ValueError(f"{what}: {item!r} cannot be passed to Asterisk")
    return "&".join(items)


def lamp_states(
    active_departments: Sequence[int | None],
    known_departments: Sequence[int],
    *,
    lamp_device: str,
    department_prefix: str,
    on_state: str,
) -> dict[str, str]:
    """Every lamp's wanted state: the main lamp lit while any alarm is active, each
    department's lamp lit while an alarm of that department is; known departments
    without an alarm are set off (a lamp left on by a crashed server goes out)."""
    wanted = {lamp_device: on_state if active_departments else "NOT_INUSE"}
    for department_id in known_departments:
        wanted[f"{department_prefix}{department_id}"] = "NOT_INUSE"
    for active_id in active_departments:
        if active_id is not None:
            wanted[f"{department_prefix}{active_id}"] = on_state
    return wanted
