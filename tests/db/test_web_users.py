"""The console's users, sessions, login rate limit, re-send request and board, against a
real PostgreSQL (fastagi/store/users.py, fastagi/admin/users.py, fastagi/store/board.py),
and the ``fastagi user`` commands."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fastagi import cli
from fastagi.admin import alarms as admin_alarms
from fastagi.admin import users
from fastagi.config import WebSettings
from fastagi.domain import passwords
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import StoreError, Stores
from fastagi.store.board import BOARD_CHANNEL, BoardStore
from fastagi.store.changes import PAGE_CHANNEL, ChannelListener

pytestmark = [pytest.mark.db, pytest.mark.timeout(60)]

LIMITS = WebSettings(login_failures_per_name=3, login_failures_per_address=5, login_window=900)


async def events_of(stores: Stores, kind: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    found = await stores.history.history(now - timedelta(hours=1), now + timedelta(hours=1))
    return [dict(e.details) for e in found if e.kind == kind]


async def test_passwords_are_argon2id_and_verified_in_constant_work():
    stored = await passwords.hash_password_async("correct horse")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert await passwords.verify_password_async("correct horse", stored)
    assert not await passwords.verify_password_async("correct horsE", stored)
    assert not await passwords.verify_password_async("anything", None)  # unknown user
    assert not passwords.verify_password("x", "$argon2id$garbage")
    assert not passwords.needs_rehash(stored)
    with pytest.raises(ValueError, match="too short"):
        passwords.hash_password("short")


async def test_login_opens_a_session_with_the_current_role(db_pool):
    stores = Stores.over(db_pool)
    await users.add_user(stores, "Anna", "operator", "anna-password", by="cli:root")
    login = await users.authenticate(
        stores, "anna", "anna-password", address="10.0.0.7", settings=LIMITS
    )
    assert (login.session.user_name, login.session.role) == ("Anna", "operator")
    assert len(login.token) >= 43
    assert login.session.csrf_token != login.token
    # The role as it is now, at every request.
    await users.set_role(stores, "anna", "viewer", by="cli:root")
    session = await stores.users.session(login.token)
    assert session is not None
    assert session.role == "viewer"
    # A password change ends the user's sessions; so does removing the user.
    await users.set_password(stores, "Anna", "new-anna-password", by="cli:root")
    assert await stores.users.session(login.token) is None
    again = await users.authenticate(
        stores, "Anna", "new-anna-password", address="10.0.0.7", settings=LIMITS
    )
    await users.remove_user(stores, "Anna", by="cli:root")
    assert await stores.users.session(again.token) is None
    [login_event, _] = await events_of(stores, "login")
    assert login_event == {"user": "Anna", "address": "10.0.0.7", "role": "operator"}
    actions = [d["action"] for d in await events_of(stores, "config_changed")]
    assert actions == ["user add", "user role", "user passwd", "user remove"]


async def test_a_session_expires_and_a_logout_ends_it(db_pool):
    stores = Stores.over(db_pool)
    await users.add_user(stores, "bob", "viewer", "bob-password", by="test")
    expired = await users.authenticate(
        stores,
        "bob",
        "bob-password",
        address="127.0.0.1",
        settings=LIMITS.model_copy(update={"session_lifetime": 60}),
    )
    # A lifetime that has passed: the store is given one of none.
    user, _ = await stores.users.credentials("bob") or (None, None)
    assert user is not None
    event = HistoryEvent(EventKind.LOGIN, None, None, None, {"user": "bob"})
    await stores.users.open_session(
        "t" * 43, user_id=user.id, csrf_token="c" * 43, lifetime=0, address="x", event=event
    )
    assert await stores.users.session("t" * 43) is None
    assert await stores.users.session(expired.token) is not None
    await users.logout(stores, expired.token, address="127.0.0.1")
    assert await stores.users.session(expired.token) is None
    [logout] = await events_of(stores, "logout")
    assert logout["user"] == "bob"


async def test_wrong_passwords_are_limited_per_name_and_per_address(db_pool):
    stores = Stores.over(db_pool)
    await users.add_user(stores, "carl", "admin", "carl-password", by="test")
    for _ in range(LIMITS.login_failures_per_name):
        with pytest.raises(users.LoginFailed) as failed:
            await users.authenticate(stores, "carl", "wrong!!!", address="a", settings=LIMITS)
        assert not isinstance(failed.value, users.LoginRateLimited)
    # The right password, too late: refused without being checked.
    with pytest.raises(users.LoginRateLimited, match="this user name") as limited:
        await users.authenticate(stores, "CARL", "carl-password", address="b", settings=LIMITS)
    assert limited.value.retry_after == 900
    # From address "a", two more names fail; its limit (5) is reached for any name.
    for name in ("dora", "emil"):
        with pytest.raises(users.LoginFailed):
            await users.authenticate(stores, name, "whatever", address="a", settings=LIMITS)
    with pytest.raises(users.LoginRateLimited, match="this address"):
        await users.authenticate(stores, "fred", "whatever", address="a", settings=LIMITS)
    failed_events = await events_of(stores, "login_failed")
    assert [(d["user"], d["reason"], d["address"]) for d in failed_events] == [
        ("carl", "wrong password", "a")
    ] * 3 + [("dora", "unknown user", "a"), ("emil", "unknown user", "a")]
    assert [d["limited"] for d in await events_of(stores, "login_refused")] == [
        "this user name",
        "this address",
    ]


async def test_failures_outside_the_window_do_not_count_and_a_login_forgets_them(db_pool):
    stores = Stores.over(db_pool)
    await users.add_user(stores, "gina", "viewer", "gina-password", by="test")
    tiny = LIMITS.model_copy(update={"login_window": 0.001})
    for _ in range(5):  # each has left the window before the next attempt
        with pytest.raises(users.LoginFailed) as failed:
            await users.authenticate(stores, "gina", "nope-nope", address="c", settings=tiny)
        assert not isinstance(failed.value, users.LoginRateLimited)
    await users.authenticate(stores, "gina", "gina-password", address="c", settings=tiny)
    # Two failures, a good login, two more: the count started again at the login.
    for _ in range(2):
        with pytest.raises(users.LoginFailed):
            await users.authenticate(stores, "gina", "nope", address="d", settings=LIMITS)
    await users.authenticate(stores, "gina", "gina-password", address="d", settings=LIMITS)
    for _ in range(2):
        with pytest.raises(users.LoginFailed) as failed:
            await users.authenticate(stores, "gina", "nope", address="d", settings=LIMITS)
        assert not isinstance(failed.value, users.LoginRateLimited)


async def test_user_names_and_roles_are_checked(db_pool):
    stores = Stores.over(db_pool)
    await users.add_user(stores, "hans", "viewer", "hans-password", by="test")
    with pytest.raises(StoreError, match="exists already"):
        await users.add_user(stores, "HANS", "viewer", "hans-password", by="test")
    with pytest.raises(StoreError, match="unknown role"):
        await users.add_user(stores, "ida", "root", "ida-password", by="test")
    with pytest.raises(StoreError, match="bad user name"):
        await users.add_user(stores, "<script>", "viewer", "ida-password", by="test")
    with pytest.raises(StoreError, match="too short"):
        await users.add_user(stores, "ida", "viewer", "short", by="test")
    with pytest.raises(StoreError, match="unknown user"):
        await users.remove_user(stores, "nobody", by="test")
    assert users.may("admin", "operator")
    assert users.may("operator", "operator")
    assert not users.may("viewer", "operator")
    assert not users.may("nonsense", "viewer")


async def test_a_page_request_reaches_listeners_and_never_an_ended_alarm(db_pool):
    stores = Stores.over(db_pool)
    event = HistoryEvent(EventKind.ACTIVATED, None, "101", "Ward", {"uniqueid": "u1"})
    alarm, _ = await stores.alarms.activate("extension:101", None, "Ward", "101", [event])
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = ChannelListener(db_pool, {PAGE_CHANNEL: heard.put_nowait})
    await listener.start()
    try:
        await admin_alarms.request_page(stores, alarm.id, by="web:otto")
        async with asyncio.timeout(5):
            assert await heard.get() == str(alarm.id)
        [requested] = [
            e for e in await stores.history.timeline(alarm.id) if e.kind == "page_requested"
        ]
        assert requested.details["by"] == "web:otto"
        await admin_alarms.deactivate_alarm(
            stores, alarm.id, reason="done", by="web:otto", source="web"
        )
        with pytest.raises(StoreError, match="not active"):
            await admin_alarms.request_page(stores, alarm.id, by="web:otto")
        with pytest.raises(StoreError, match="unknown alarm"):
            await admin_alarms.request_page(stores, 999_999, by="web:otto")
        assert heard.empty()
        kinds = [e.kind for e in await stores.history.timeline(alarm.id)]
        assert kinds.count("page_requested") == 1
    finally:
        await listener.close()


async def test_the_board_reads_cycles_emergency_and_lamps_and_is_notified(db_pool):
    stores = Stores.over(db_pool)
    notified: asyncio.Queue[str] = asyncio.Queue()
    listener = ChannelListener(db_pool, {BOARD_CHANNEL: notified.put_nowait})
    await listener.start()
    try:
        trigger = HistoryEvent(
            EventKind.TRIGGERED, None, "107", "Ward", {"uniqueid": "u7", "channel": "PJSIP/107-1"}
        )
        await stores.history.append_event(trigger)
        confirmed = HistoryEvent(EventKind.CONFIRMED, None, "107", "Ward", {"uniqueid": "u7"})
        await stores.history.append_event(confirmed)
        activated = HistoryEvent(EventKind.ACTIVATED, None, "107", "Ward", {"uniqueid": "u7"})
        alarm, _ = await stores.alarms.activate("extension:107", None, "Ward", "107", [activated])
        async with asyncio.timeout(5):
            await notified.get()
        started = datetime.now(UTC)
        cycle = HistoryEvent(
            EventKind.PAGE_CYCLE,
            alarm.id,
            "107",
            "Ward",
            {
                "cycle": 1,
                "dialled": 3,
                "answered": 2,
                "interval": 30,
                "started_at": started.isoformat(),
            },
        )
        await stores.alarms.record_cycle(alarm.id, cycle)
        for kind, details in [
            (EventKind.LAMP_CHANGED, {"device": "Custom:PANIC", "state": "BUSY"}),
            (EventKind.EMERGENCY_DIALLING, {"destination": "PJSIP/150", "attempt": "e1"}),
        ]:
            await stores.history.append_event(HistoryEvent(kind, alarm.id, "107", "Ward", details))
        board = await BoardStore(db_pool).board(
            lamp_device="Custom:PANIC", department_lamp_prefix="Custom:PANIC_"
        )
        [shown] = board.alarms
        assert shown.trigger == "confirmed by the caller"
        assert shown.trigger_channel == "PJSIP/107-1"
        assert shown.cycles == 1
        assert shown.last_cycle is not None
        assert (shown.last_cycle.dialled, shown.last_cycle.answered) == (3, 2)
        assert not shown.paging_now
        assert shown.next_page_at == started + timedelta(seconds=30)
        assert shown.emergency is not None
        assert (shown.emergency.kind, shown.emergency.destination) == (
            "emergency_dialling",
            "PJSIP/150",
        )
        assert shown.lamps == {"Custom:PANIC": "BUSY"}
        assert shown.acknowledged_by is None
        await admin_alarms.deactivate_alarm(stores, alarm.id, reason="x", by="cli:t")
        board = await BoardStore(db_pool).board(
            lamp_device="Custom:PANIC", department_lamp_prefix="Custom:PANIC_"
        )
        assert board.alarms == []
    finally:
        await listener.close()


def test_the_user_commands(database_dsn, capsys, monkeypatch):
    def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = cli.main([*argv, "--dsn", database_dsn])
        out, err = capsys.readouterr()
        return code, out, err

    assert run("user", "add", "jo", "--role", "operator", stdin="jo-password-1\n")[:2] == (
        0,
        "added user jo (operator)\n",
    )
    code, _, err = run("user", "add", "kim", "--role", "viewer", stdin="short\n")
    assert (code, err.strip()) == (2, "fastagi: error: password too short: at least 8 characters")
    code, _, err = run("user", "add", "kim", "--role", "viewer")
    assert (code, err.strip()) == (2, "fastagi: error: no password on standard input")
    assert run("user", "passwd", "jo", stdin="jo-password-2\n")[0] == 0
    assert run("user", "role", "jo", "viewer")[1] == "jo is now viewer\n"
    code, out, _ = run("user", "list", "--json")
    assert [(u["name"], u["role"]) for u in json.loads(out)] == [("jo", "viewer")]
    assert "password" not in out
    assert run("user", "remove", "jo")[1] == "removed user jo\n"
    assert run("user", "remove", "jo")[0] == 2
