"""A department's confirmation mode and language (sql/009_language_modes.sql): set by
the CLI through the admin functions, refused when malformed, seen in the directory the
trigger reads, and checked by ``fastagi check``'s ``languages`` line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from pydantic import SecretStr

from fastagi import cli
from fastagi.assurance import Status, run_checks
from fastagi.config import DatabaseSettings, Settings
from fastagi.config.catalogues import BUILT_IN
from fastagi.store import StoreError, Stores

pytestmark = [pytest.mark.db, pytest.mark.timeout(60)]

T = TypeVar("T")


def fastagi(dsn: str, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([*argv, "--dsn", dsn])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def on_database(
    dsn: str, work: Callable[[Stores, asyncpg.Pool[asyncpg.Record]], Awaitable[T]]
) -> T:
    """``work`` on a pool of its own: the CLI runs its own event loop (asyncio.run)."""

    async def run() -> T:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            return await work(Stores.over(pool), pool)
        finally:
            await pool.close()

    return asyncio.run(run())


def test_the_cli_sets_a_departments_mode_and_language_and_the_sites_defaults(
    database_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fastagi(database_dsn, capsys, "department", "add", "Ward 3")[0] == 0
    code, _, err = fastagi(
        database_dsn,
        capsys,
        "department",
        "set",
        "Ward 3",
        "--confirmation-mode",
        "tone",
        "--language",
        "pl",
    )
    assert (code, err) == (0, "")

    async def read(stores: Stores, pool: asyncpg.Pool[asyncpg.Record]) -> tuple[Any, ...]:
        directory = await stores.directory.load_directory()
        details = await pool.fetchval(
            "SELECT details FROM alarm_events WHERE kind = 'config_changed' ORDER BY id DESC"
        )
        return directory, json.loads(details), await stores.policy.load_settings()

    directory, details, _ = on_database(database_dsn, read)
    [ward] = directory.departments
    assert (ward.confirmation_mode, ward.language) == ("tone", "pl")
    # The change is in the history, as every administrative change.
    assert {"confirmation_mode": "tone", "language": "pl"}.items() <= details.items()

    code, out, err = fastagi(database_dsn, capsys, "department", "list", "--json")
    assert code == 0, err
    [row] = json.loads(out)
    assert (row["confirmation_mode"], row["language"]) == ("tone", "pl")

    # Back to the site's defaults, which change too.
    code, _, err = fastagi(
        database_dsn,
        capsys,
        "department",
        "set",
        "Ward 3",
        "--default-confirmation-mode",
        "--default-language",
    )
    assert code == 0, err
    code, _, err = fastagi(
        database_dsn, capsys, "policy", "set", "--confirmation-mode", "neutral", "--language", "pl"
    )
    assert code == 0, err
    directory, _, policy = on_database(database_dsn, read)
    [ward] = directory.departments
    assert (ward.confirmation_mode, ward.language) == (None, None)
    assert directory.default_language == "pl"
    assert (policy.confirmation_mode, policy.default_language) == ("neutral", "pl")


async def test_a_malformed_mode_or_language_is_refused_and_changes_nothing(
    db_pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    stores = Stores.over(db_pool)
    await stores.directory.add_department("Ward 3")
    with pytest.raises(StoreError, match="confirmation mode must be one of"):
        await stores.directory.update_department("Ward 3", confirmation_mode="whisper")
    with pytest.raises(StoreError, match="not a language code"):
        await stores.directory.update_department("Ward 3", language="Polish; DROP")
    with pytest.raises(StoreError, match="not a language code"):
        await stores.policy.set_policy(default_language="PL")
    # The schema refuses them too, for whoever writes around the store.
    with pytest.raises(asyncpg.CheckViolationError):
        await db_pool.execute("UPDATE departments SET confirmation_mode = 'loud'")
    [ward] = (await stores.directory.load_directory()).departments
    assert (ward.confirmation_mode, ward.language) == (None, None)


def settings_for(dsn: str, catalogues: Path | None = None) -> Settings:
    settings = Settings(database=DatabaseSettings(dsn=SecretStr(dsn)))
    settings.flows.catalogues = catalogues
    return settings


async def test_check_languages_ok_with_the_built_in_catalogues(database_dsn: str) -> None:
    report = await run_checks(settings_for(database_dsn), only=["languages"])
    line = report.result("languages")
    assert (line.status, line.message) == (
        Status.OK,
        "catalogues en, pl complete; in use: en",
    )


async def test_check_languages_lists_missing_translations_and_languages_without_one(
    database_dsn: str, db_pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    # A site's German catalogue, two texts translated.
    (tmp_path / "de.toml").write_text(
        'name = "Deutsch"\nvoice = "de"\n'
        'digits = ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben",'
        ' "acht", "neun"]\n'
        "[texts]\n"
        'question = "Notruf für {department}. Eins zum Bestätigen, zwei zum Abbrechen."\n'
        'activated = "Alarm ausgelöst."\n',
        encoding="utf-8",
    )
    stores = Stores.over(db_pool)
    await stores.directory.add_department("Station 1")
    await stores.directory.update_department("Station 1", language="de")
    await stores.directory.add_department("Salle 2")
    await stores.directory.update_department("Salle 2", language="fr")
    report = await run_checks(settings_for(database_dsn, tmp_path), only=["languages"])
    line = report.result("languages")
    assert line.status == Status.WARN
    assert line.message.startswith("fr has no catalogue (Salle 2 speak English); de lacks display,")
    assert "unknown_label, cancelled, neutral_question" in line.message
    assert "pl lacks" not in line.message


async def test_check_languages_fails_on_a_broken_catalogue(
    database_dsn: str, tmp_path: Path
) -> None:
    broken = (BUILT_IN / "pl.toml").read_text(encoding="utf-8").replace("{department}", "{dept}")
    (tmp_path / "pl.toml").write_text(broken, encoding="utf-8")
    report = await run_checks(settings_for(database_dsn, tmp_path), only=["languages"])
    line = report.result("languages")
    assert line.status == Status.FAIL
    assert "catalogue pl: question: {dept} is not a field of this text" in line.message
