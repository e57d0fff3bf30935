"""docs/config.example.toml: it loads with the settings class, names every setting of
every section, and shows each default as it is in the code (but for a few examples)."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from fastagi.config import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "config.example.toml"
# Values the example fills in where the default is empty or a placeholder.
EXAMPLES = {
    ("database", "dsn"),
    ("ami", "username"),
    ("ami", "secret"),
    ("alarm", "unknown_department_devices"),
    ("notify", "emails"),
    ("notify", "sms"),
    ("notify", "admin_emails"),
    ("notify", "departments"),
    ("emergency", "destinations"),
    ("emergency", "escalation_destinations"),
}
# Tables whose keys are the administrator's (department names, header names).
FREE_TABLES = {("notify", "departments"), ("notify", "webhook", "headers")}


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("FASTAGI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FASTAGI_CONFIG", str(EXAMPLE))
    return Settings()


def sections(text: str) -> dict[tuple[str, ...], str]:
    """The text of each ``[table]`` of the file, by its dotted name."""
    found: dict[tuple[str, ...], list[str]] = {(): []}
    current: tuple[str, ...] = ()
    for line in text.splitlines():
        header = re.fullmatch(r"\[([^\]]+)\]", line.strip())
        if header:
            current = tuple(part.strip('"') for part in header.group(1).split("."))
            found.setdefault(current, [])
        else:
            found[current].append(line)
    return {name: "\n".join(lines) for name, lines in found.items()}


def fields(model: type[BaseModel], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    every = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            every.extend(fields(annotation, (*path, name)))
        else:
            every.append((path, name))
    return every


def test_the_example_loads(example: Settings) -> None:
    assert example.ami.username == "fastagi-panic"
    assert example.database.dsn.get_secret_value().startswith("postgresql://")
    assert example.notify.departments["Emergency Room"].emails == ["er-lead@example.org"]
    assert example.emergency.enabled


def test_every_setting_is_in_the_example() -> None:
    text = EXAMPLE.read_text()
    tables = sections(text)
    missing = []
    for path, name in fields(Settings):
        if path in FREE_TABLES:
            continue
        body = tables.get(path, "")
        as_key = re.search(rf"^(# )?{name} = ", body, re.M)
        as_table = any(t[: len(path) + 1] == (*path, name) for t in tables)
        if not (as_key or as_table):
            missing.append(".".join((*path, name)))
    assert missing == []


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def test_the_example_shows_the_defaults(example: Settings) -> None:
    # model_construct: the fields' defaults, no file or environment read.
    baseline = _plain(Settings.model_construct())
    written = tomllib.loads(EXAMPLE.read_text())
    loaded = _plain(example)
    differ = []
    for path, name in fields(Settings):
        if (*path, name) in EXAMPLES or path in FREE_TABLES:
            continue
        node: Any = written
        for part in path:
            node = node.get(part, {})
        if name not in node:
            continue  # commented out: the default (None) applies
        here, default = loaded, baseline
        for part in (*path, name):
            here, default = here[part], default[part]
        if here != default:
            differ.append(f"{'.'.join((*path, name))}: {here!r} != {default!r}")
    assert differ == []
