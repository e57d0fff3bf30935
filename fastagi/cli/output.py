"""How the administration commands print: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

# The history export's (shared with the web console), for every command's JSON.
from fastagi.admin.history import json_default

_Row = TypeVar("_Row")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str = "") -> None:
    if not rows:
        if empty:
            print(empty)
        return
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in [headers, *rows]:
        print(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)
            ).rstrip()
        )


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=json_default))


def print_listing(
    items: Sequence[_Row],
    *,
    as_json: bool,
    headers: Sequence[str],
    row: Callable[[_Row], Sequence[str]],
    empty: str = "",
) -> None:
    """A ``list`` command's output: the items (dataclasses) as JSON for scripts, else a
    table with a ``row`` of each."""
    if as_json:
        print_json([dataclasses.asdict(item) for item in items])  # type: ignore[call-overload]
    else:
        print_table(headers, [row(item) for item in items], empty=empty)


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone().isoformat(sep=" ", timespec="seconds")


def text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def details(values: dict[str, Any]) -> str:
    return " ".join(f"{key}={json.dumps(value)}" for key, value in values.items()) or "-"
