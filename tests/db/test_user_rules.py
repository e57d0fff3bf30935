"""The console's users against a real PostgreSQL: the console always keeps an admin (the
CLI and the console alike, also when two admins are demoted at once), an admin in the
console cannot remove or demote themselves, a removal ends the user's sessions and wakes
every open board stream, last logins come from the history, and a refusal names its field
without quoting a long paste back."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta

import pytest

from fastagi import cli
from fastagi.admin import users
from fastagi.config import WebSettings
from fastagi.store import StoreError, Stores
from fastagi.store.board import BOARD_CHANNEL
from fastagi.store.changes import ChannelListener

pytestmark = [pytest.mark.db, pytest.mark.timeout(60)]

SETTINGS = WebSettings()


async def test_the_last_admin_is_neither_removed_nor_demoted(db_pool):
    stores = Stores.over(db_pool)
    await users.add_user(stores, "ada", "admin", "ada-password", by="test")
    await users.add_user(stores, "otto", "operator", "otto-password", by="test")
    for role in ("operator", "viewer"):
        with pytest.raises(users.UserRefused, match="'ada' is the last admin") as refused:
            await users.set_role(stores, "ADA", role, by="cli:root")
        assert refused.value.field == "role"
    with pytest.raises(users.UserRefused, match="'ada' is the last admin") as refused:
        await users.remove_user(stores, "ada", by="cli:root")
    assert refused.value.field == "name"
    await users.set_role(stores, "ada", "admin", by="cli:root")  # no change: allowed
    # Another admin first; then either may go.
    await users.set_role(stores, "otto", "admin", by="cli:root")
    await users.set_role(stores, "ada", "viewer", by="cli:root")
    with pytest.raises(users.UserRefused, match="'otto' is the last admin"):
        await users.remove_user(stores, "otto", by="cli:root")
    await users.remove_user(stores, "ada", by="cli:root")
    assert [(u.name, u.role) for u in await users.list_users(stores)] == [("otto", "admin")]


async def test_two_admins_demoted_at_once_leave_one(db_pool):
    """Both demotions are under way (each has passed where it would check) before either
    may commit: held back by a third transaction's lock on the admins' rows."""
    stores = Stores.over(db_pool)
    for name in ("ada", "bea"):
        await users.add_user(stores, name, "admin", f"{name}-password", by="test")
    async with db_pool.acquire() as holder:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT id FROM web_users FOR UPDATE")
        demotions = [
            asyncio.ensure_future(users.set_role(stores, name, "viewer", by="cli:root"))
            for name in ("ada", "bea")
        ]
        await _until_waiting_on_locks(db_pool, 2)
        await transaction.rollback()
    outcomes = await asyncio.gather(*demotions, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, users.UserRefused)]
    assert len(refused) == 1, outcomes
    assert "is the last admin" in str(refused[0])
    assert [u.role for u in await users.list_users(stores)].count("admin") == 1


async def _until_waiting_on_locks(pool, count: int) -> None:
    """Until ``count`` other backends of this database wait for a lock."""
    async with asyncio.timeout(10):
        while True:
            waiting = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting >= count:
                return
            await asyncio.sleep(0.01)  # polling a condition PostgreSQL has no event for


async def test_an_admin_in_the_console_cannot_remove_or_demote_themselves(db_pool):
    stores = Stores.over(db_pool)
    for name in ("ada", "bea"):
        await users.add_user(stores, name, "admin", f"{name}-password", by="test")
    with pytest.raises(users.UserRefused, match="cannot remove yourself") as refused:
        await users.remove_user(stores, "Ada", by="web:ada", acting_user="ada")
    assert refused.value.field == "name"
    with pytest.raises(users.UserRefused, match="your own admin role") as refused:
        await users.set_role(stores, "ada", "operator", by="web:ada", acting_user="ada")
    assert refused.value.field == "role"
    # Another admin may; and nothing was recorded for the refusals.
    await users.set_role(stores, "ada", "operator", by="web:bea", acting_user="bea")
    await users.remove_user(stores, "ada", by="web:bea", acting_user="bea")
    actions = [
        (e.details["action"], e.details["by"])
        for e in await stores.history.history(*_around_now())
        if e.kind == "config_changed"
    ]
    assert actions[-2:] == [("user role", "web:bea"), ("user remove", "web:bea")]
    assert len(actions) == 4  # the two adds, then these


async def test_removal_and_new_password_end_sessions_and_wake_the_streams(db_pool):
    stores = Stores.over(db_pool)
    await users.add_user(stores, "ada", "admin", "ada-password", by="test")
    await users.add_user(stores, "olga", "operator", "olga-password", by="test")
    login = await users.authenticate(
        stores, "olga", "olga-password", address="127.0.0.1", settings=SETTINGS
    )
    woken: asyncio.Queue[str] = asyncio.Queue()
    listener = ChannelListener(db_pool, {BOARD_CHANNEL: woken.put_nowait})
    await listener.start()
    try:
        await users.set_role(stores, "olga", "viewer", by="web:ada", acting_user="ada")
        session = await stores.users.session(login.token)
        assert session is not None
        assert session.role == "viewer"
        await users.set_password(stores, "olga", "olga-password-2", by="web:ada")
        async with asyncio.timeout(5):
            await woken.get()
        assert await stores.users.session(login.token) is None
        login = await users.authenticate(
            stores, "olga", "olga-password-2", address="127.0.0.1", settings=SETTINGS
        )
        await users.remove_user(stores, "olga", by="web:ada", acting_user="ada")
        async with asyncio.timeout(5):
            await woken.get()
        assert await stores.users.session(login.token) is None
        rows = await db_pool.fetchval("SELECT count(*) FROM web_sessions")
        assert rows == 0  # gone, not merely unreadable
    finally:
        await listener.close()


async def test_last_logins_come_from_the_history(db_pool):
    stores = Stores.over(db_pool)
    for name in ("ada", "bob"):
        await users.add_user(stores, name, "admin", f"{name}-password", by="test")
    for name in ("ada", "ADA"):
        await users.authenticate(
            stores, name, "ada-password", address="127.0.0.1", settings=SETTINGS
        )
    [first, second] = [e for e in await stores.history.history(*_around_now()) if e.kind == "login"]
    assert first.occurred_at < second.occurred_at
    [ada, _bob] = await users.list_users(stores)
    assert await stores.users.last_logins() == {ada.id: second.occurred_at}  # bob: none
    # A namesake added after a removal has not logged in yet.
    await users.remove_user(stores, "ada", by="test")
    await users.add_user(stores, "ada", "viewer", "ada-password-2", by="test")
    assert await stores.users.last_logins() == {}


def _around_now() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=1), now + timedelta(hours=1)


@pytest.mark.parametrize(
    "hostile",
    [
        "o'brien",
        'say "hi"',
        "<script>alert(1)</script>",
        "x" * 10_000,
        "eve\nadmin",
        "ève",
        "-dash-first",
        "",
    ],
)
async def test_hostile_names_are_refused_naming_the_field(db_pool, hostile):
    stores = Stores.over(db_pool)
    with pytest.raises(users.UserRefused, match="bad user name") as refused:
        await users.add_user(stores, hostile, "viewer", "a-good-password", by="test")
    assert refused.value.field == "name"
    message = str(refused.value)
    assert len(message) < 200  # a 10 kB name is not quoted back whole
    assert "\n" not in message  # nor does a newline split the CLI's error line
    assert await users.list_users(stores) == []


async def test_refusals_name_their_field(db_pool):
    stores = Stores.over(db_pool)
    await users.add_user(stores, "ada", "admin", "ada-password", by="test")
    cases = [
        (users.add_user(stores, "Ada", "viewer", "a-good-password", by="t"), "name", "exists"),
        (users.add_user(stores, "ida", "root", "a-good-password", by="t"), "role", "unknown role"),
        (users.add_user(stores, "ida", "viewer", "short", by="t"), "password", "too short"),
        (users.set_password(stores, "ada", "line\nbreak!", by="t"), "password", "one line"),
    ]
    for call, field, text in cases:
        with pytest.raises(users.UserRefused, match=text) as refused:
            await call
        assert refused.value.field == field
    with pytest.raises(StoreError, match="unknown user"):
        await users.set_role(stores, "nobody", "viewer", by="t")


def test_the_cli_keeps_the_last_admin(database_dsn, capsys, monkeypatch):
    def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = cli.main([*argv, "--dsn", database_dsn])
        out, err = capsys.readouterr()
        return code, out, err

    assert run("user", "add", "root", "--role", "admin", stdin="root-password\n")[0] == 0
    code, _, err = run("user", "role", "root", "viewer")
    assert code == 2
    assert "'root' is the last admin" in err
    code, _, err = run("user", "remove", "root")
    assert code == 2
    assert "'root' is the last admin" in err
    code, _, err = run("user", "add", "a\nb", "--role", "viewer", stdin="a-good-password\n")
    assert (code, err.count("\n")) == (2, 1)
