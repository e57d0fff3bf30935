"""The administration commands, through ``fastagi.cli.main`` against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest

from fastagi import cli
from fastagi.cli.common import load_settings_or_fail
from fastagi.domain import pins
from fastagi.domain.events import EventKind, HistoryEvent
from fastagi.store import Stores
from fastagi.tts.announcement import AnnouncementMeter
from fastagi_dev.seed import DEMO_PIN, seed_demo

pytestmark = [pytest.mark.db, pytest.mark.timeout(60)]

T = TypeVar("T")


class Cli:
    """Runs ``fastagi ...`` with ``--dsn`` and returns (exit code, stdout, stderr)."""

    def __init__(self, dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.dsn = dsn
        self._capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = cli.main([*argv, "--dsn", self.dsn])
        captured = self._capsys.readouterr()
        return code, captured.out, captured.err

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert (code, err) == (0, ""), f"fastagi {' '.join(argv)}: {err}"
        return out

    def store_query(self, query: str) -> object:
        async def run() -> object:
            connection = await asyncpg.connect(self.dsn)
            try:
                return await connection.fetchval(query)
            finally:
                await connection.close()

        return asyncio.run(run())


@pytest.fixture
def fastagi(database_dsn: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(database_dsn, capsys)


def with_store(dsn: str, work: Callable[[Stores], Awaitable[T]]) -> T:
    async def run() -> T:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            return await work(Stores.over(pool))
        finally:
            await pool.close()

    return asyncio.run(run())


def test_departments_add_list_set_remove(fastagi: Cli) -> None:
    fastagi.ok("paging-group", "add", "ER")
    fastagi.ok("paging-group", "device", "add", "ER", "PJSIP/201")
    fastagi.ok("paging-group", "device", "add", "ER", "PJSIP/202")
    added = fastagi.ok("department", "add", "Emergency Room", "--paging-group", "ER")
    fastagi.ok("department", "add", "Pharmacy", "--interval", "45")
    fastagi.ok("extension", "map", "Emergency Room", "101-119")
    fastagi.ok("extension", "map", "Pharmacy", "_12X")

    table = fastagi.ok("department", "list").splitlines()
    listed = json.loads(fastagi.ok("department", "list", "--json"))
    groups = json.loads(fastagi.ok("paging-group", "list", "--json"))

    assert added == "added department 'Emergency Room'\n"
    header = ["DEPARTMENT", "INTERVAL", "ANNOUNCEMENT", "CYCLE", "PAGING", "GROUP", "MODE"]
    header += ["LANGUAGE", "EXTENSIONS"]
    assert table[0].split() == header
    er_announcement = listed[0]["announcement_seconds"]
    pharmacy_announcement = listed[1]["announcement_seconds"]
    # "Panic alarm. Department ... Extension 1 0 1.", spoken, plus the 1 s lead-in
    assert 3.0 < er_announcement < 15.0
    assert 3.0 < pharmacy_announcement < 15.0
    assert table[1].split() == [
        "Emergency", "Room", "default", "(60s)", f"{er_announcement}s", "60.0s", "ER",
        "default", "(voice)", "default", "(en)", "101-119"
    ]  # fmt: skip
    assert table[2].split() == [
        "Pharmacy",
        "45s",
        f"{pharmacy_announcement}s",
        "45.0s",
        "-",
        "default",
        "(voice)",
        "default",
        "(en)",
        "_12X",
    ]
    # aligned: every column starts at the same offset on each line
    assert len({line.index("ER") for line in table[1:2]} | {table[0].index("PAGING")}) == 1
    assert [(d["name"], d["interval_seconds"], d["paging_group"]) for d in listed] == [
        ("Emergency Room", None, "ER"),
        ("Pharmacy", 45, None),
    ]
    assert groups == [{"id": groups[0]["id"], "name": "ER", "devices": ["PJSIP/201", "PJSIP/202"]}]

    fastagi.ok("department", "set", "pharmacy", "--default-interval", "--paging-group", "ER")
    fastagi.ok("department", "remove", "Emergency Room")
    after = json.loads(fastagi.ok("department", "list", "--json"))

    assert [(d["name"], d["interval_seconds"], d["paging_group"]) for d in after] == [
        ("Pharmacy", None, "ER")
    ]
    audit = fastagi.store_query(
        "SELECT array_agg(details->>'action' ORDER BY id) FROM alarm_events"
        " WHERE kind = 'config_changed'"
    )
    assert audit == [
        "paging-group add",
        "paging-group device add",
        "paging-group device add",
        "department add",
        "department add",
        "extension map",
        "extension map",
        "department set",
        "department remove",
    ]


def test_lookup_says_which_department_and_why(fastagi: Cli) -> None:
    fastagi.ok("department", "add", "Emergency Room")
    fastagi.ok("department", "add", "Reception", "--interval", "20")
    fastagi.ok("extension", "map", "Emergency Room", "101-119")
    fastagi.ok("extension", "map", "Reception", "_1XX")

    in_range = fastagi.ok("extension", "lookup", "105")
    by_pattern = json.loads(fastagi.ok("extension", "lookup", "150", "--json"))
    unknown = fastagi.ok("extension", "lookup", "555")

    assert in_range.splitlines() == [
        "105: Emergency Room (by range '101-119', the most specific of 101-119, _1XX)",
        "pages no devices every 60s",
    ]
    assert by_pattern["department"] == "Reception"
    assert by_pattern["pattern"] == "_1XX"
    assert by_pattern["kind"] == "pattern"
    assert by_pattern["interval_seconds"] == 20
    assert by_pattern["alarm_key"].startswith("department:")
    assert unknown.splitlines() == [
        "555: unknown department (no mapping matches)",
        "an alarm from it is keyed extension:555",
    ]

    fastagi.ok("extension", "unmap", "101-119")
    assert fastagi.ok("extension", "lookup", "105").startswith("105: Reception (by pattern")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["extension", "map", "Emergency Room", "200-100"],
            "malformed extension range '200-100': first is after last",
        ),
        (["extension", "map", "Foo", "101"], "unknown department 'Foo'"),
        (["department", "add", "emergency room"], "department 'emergency room' already exists"),
        (["department", "remove", "Foo"], "unknown department 'Foo'"),
        (["department", "set", "Emergency Room"], "nothing to change"),
        (["department", "set", "Emergency Room", "--interval", "1"], "interval must be between"),
        (["extension", "lookup", "12a"], "malformed extension '12a'"),
        (["alarm", "show", "4242"], "unknown alarm 4242"),
        (["alarm", "deactivate", "4242", "--reason", "x"], "unknown alarm 4242"),
        (["paging-group", "device", "add", "Nope", "PJSIP/1"], "unknown paging group 'Nope'"),
        (["policy", "set"], "nothing to change"),
        (["policy", "set", "--pin-attempts", "11"], "PIN attempts must be between 1 and 10"),
    ],
)
def test_user_errors_are_one_clear_line(fastagi: Cli, argv: list[str], message: str) -> None:
    fastagi.ok("department", "add", "Emergency Room")

    code, out, err = fastagi(*argv)

    assert code == 2
    assert out == ""
    assert err.startswith(f"fastagi: error: {message}")
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_a_department_is_renamed_and_changed_all_or_nothing(fastagi: Cli) -> None:
    fastagi.ok("paging-group", "add", "ER")
    fastagi.ok("department", "add", "Emergency Room", "--interval", "30")
    fastagi.ok("department", "add", "Pharmacy")

    def emergency_room() -> object:
        return fastagi.store_query(
            "SELECT (name, interval_seconds, paging_group_id IS NULL) FROM departments"
            " WHERE name <> 'Pharmacy'"
        )

    before = emergency_room()
    refused = [
        (["--rename", "Trauma", "--interval", "45", "--paging-group", "Nope"], "unknown paging"),
        (["--rename", "pharmacy", "--interval", "45"], "department 'pharmacy' already exists"),
        (["--rename", " ", "--interval", "45"], "a department needs a name"),
        (["--rename", "T" * 201, "--interval", "45"], "at most 200 characters, not 201"),
        (["--rename", "Trauma", "--interval", "4"], "interval must be between 5 and 3600"),
    ]
    for argv, message in refused:
        code, _, err = fastagi("department", "set", "Emergency Room", *argv)
        assert (code, message in err) == (2, True), err
        assert emergency_room() == before

    fastagi.ok(
        "department", "set", "emergency room", "--rename", "Trauma", "--interval", "45",
        "--paging-group", "ER",
    )  # fmt: skip

    assert emergency_room() == ("Trauma", 45, False)
    audit = fastagi.store_query(
        "SELECT details FROM alarm_events WHERE kind = 'config_changed' ORDER BY id DESC LIMIT 1"
    )
    assert isinstance(audit, str)
    assert json.loads(audit) == {
        "action": "department set",
        "by": json.loads(audit)["by"],
        "name": "Trauma",
        "new_name": "Trauma",
        "renamed_from": "emergency room",
        "interval_seconds": 45,
        "paging_group": "ER",
    }


def test_deactivator_pin_from_stdin(fastagi: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("482913\n"))
    added = fastagi.ok("deactivator", "add", "150", "--pin-stdin")
    monkeypatch.setattr("sys.stdin", io.StringIO("123\n"))
    short = fastagi("deactivator", "add", "151", "--pin-stdin")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    empty = fastagi("deactivator", "add", "151", "--pin-stdin")

    table = fastagi.ok("deactivator", "list")
    as_json = fastagi.ok("deactivator", "list", "--json")
    stored = fastagi.store_query("SELECT pin_hash FROM deactivators WHERE extension = '150'")
    history = fastagi.store_query("SELECT string_agg(details::text, ' ') FROM alarm_events")

    assert added == "added deactivator 150\n"
    assert short == (2, "", "fastagi: error: PIN too short: at least 4 digits\n")
    assert empty == (2, "", "fastagi: error: no PIN on standard input\n")
    assert isinstance(stored, str)
    assert pins.verify_pin("482913", stored)
    assert table.splitlines()[0].split() == ["EXTENSION", "PIN", "CHANGED", "LOCKED", "UNTIL"]
    assert table.splitlines()[1].startswith("150 ")
    assert len(table.splitlines()) == 2
    assert [d["extension"] for d in json.loads(as_json)] == ["150"]
    for output in (table, as_json, str(history)):
        assert "482913" not in output
        assert "scrypt" not in output
        assert stored not in output


def test_deactivator_pin_from_a_prompt(fastagi: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["2468", "2468", "1111", "2222"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))

    added = fastagi.ok("deactivator", "add", "150")
    differ = fastagi("deactivator", "add", "150")

    assert added == "added deactivator 150\n"
    assert differ == (2, "", "fastagi: error: the PINs differ\n")


def test_deactivator_remove_and_unlock(fastagi: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("2580\n"))
    fastagi.ok("deactivator", "add", "150", "--pin-stdin")

    async def lock(store: Stores) -> None:
        await store.deactivators.record_pin_failure("150", 1, 300)

    with_store(fastagi.dsn, lock)
    locked = json.loads(fastagi.ok("deactivator", "list", "--json"))
    fastagi.ok("deactivator", "unlock", "150")
    unlocked = json.loads(fastagi.ok("deactivator", "list", "--json"))
    fastagi.ok("deactivator", "remove", "150")

    assert locked[0]["locked_until"] is not None
    assert unlocked[0]["locked_until"] is None
    assert fastagi.ok("deactivator", "list") == "no deactivators\n"
    assert fastagi("deactivator", "remove", "150")[2] == (
        "fastagi: error: extension '150' is not a deactivator\n"
    )


def test_alarm_list_show_and_deactivate(fastagi: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    fastagi.ok("department", "add", "Emergency Room")

    async def trigger(store: Stores) -> int:
        alarm, _ = await store.alarms.activate(
            "department:1",
            1,
            "Emergency Room",
            "105",
            [HistoryEvent(EventKind.ACTIVATED, None, "105", "Emergency Room", {"via": "test"})],
        )
        return alarm.id

    alarm_id = with_store(fastagi.dsn, trigger)
    listed = fastagi.ok("alarm", "list")
    shown = json.loads(fastagi.ok("alarm", "show", str(alarm_id), "--json"))

    stopped = fastagi.ok("alarm", "deactivate", str(alarm_id), "--reason", "drill over")
    again = fastagi("alarm", "deactivate", str(alarm_id), "--reason", "again")
    after = json.loads(fastagi.ok("alarm", "show", str(alarm_id), "--json"))
    table = fastagi.ok("alarm", "show", str(alarm_id))

    assert listed.splitlines()[1].split()[:6] == [
        str(alarm_id),
        "alarm",
        "active",
        "Emergency",
        "Room",
        "105",
    ]
    assert shown["alarm"]["state"] == "active"
    assert [e["kind"] for e in shown["timeline"]] == ["activated"]
    assert stopped == f"deactivated alarm {alarm_id} (Emergency Room)\n"
    assert again == (2, "", f"fastagi: error: alarm {alarm_id} is not active\n")
    assert after["alarm"]["state"] == "deactivated"
    assert after["alarm"]["deactivated_by"] == "cli:alice"
    assert after["alarm"]["deactivation_reason"] == "drill over"
    last = after["timeline"][-1]
    assert last["kind"] == "deactivated"
    assert last["details"] == {"by": "cli:alice", "reason": "drill over", "source": "cli"}
    assert "deactivated" in table
    assert 'reason="drill over"' in table
    assert fastagi.ok("alarm", "list") == "no active alarms\n"
    assert fastagi.ok("alarm", "list", "--all").splitlines()[1].split()[2] == "deactivated"


def test_history_export_csv_and_json(fastagi: Cli, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    async def write(store: Stores) -> None:
        for day, kind in (
            (1, EventKind.ACTIVATED),
            (2, EventKind.PAGE_CYCLE),
            (3, EventKind.DEACTIVATED),
        ):
            await store.history.append_event(
                HistoryEvent(
                    kind,
                    None,
                    "105",
                    "Emergency Room",
                    {"day": day, "note": 'a, "b"'},
                    occurred_at=datetime(2024, 5, day, 12, tzinfo=UTC),
                )
            )

    with_store(fastagi.dsn, write)
    since, until = "2024-05-01T00:00:00+00:00", "2024-05-02T23:00:00+00:00"

    out = fastagi.ok("history", "export", "--since", since, "--until", until)
    rows = list(csv.DictReader(io.StringIO(out)))
    target = tmp_path / "history.json"
    code, printed, err = fastagi(
        "history",
        "export",
        "--since",
        since,
        "--until",
        until,
        "--format",
        "json",
        "--output",
        str(target),
    )
    exported = json.loads(target.read_text())

    assert list(rows[0]) == [
        "id",
        "event_id",
        "occurred_at",
        "alarm_id",
        "kind",
        "extension",
        "department",
        "details",
        "drill",
    ]
    assert [row["kind"] for row in rows] == ["activated", "page_cycle"]
    assert [row["drill"] for row in rows] == ["false", "false"]
    assert rows[0]["occurred_at"] == "2024-05-01T12:00:00+00:00"
    assert rows[0]["alarm_id"] == ""
    assert json.loads(rows[1]["details"]) == {"day": 2, "note": 'a, "b"'}
    assert (code, printed) == (0, "")
    assert err == f"wrote 2 events to {target}\n"
    assert [e["kind"] for e in exported] == ["activated", "page_cycle"]
    assert exported[1]["details"] == {"day": 2, "note": 'a, "b"'}

    code, _, err = fastagi("history", "export", "--since", until, "--until", since)
    assert (code, err) == (2, "fastagi: error: --since must be before --until\n")


def test_history_export_filters_by_department_extension_and_kind(fastagi: Cli) -> None:
    from datetime import UTC, datetime

    async def write(store: Stores) -> None:
        for n, (kind, extension, department) in enumerate(
            [
                (EventKind.ACTIVATED, "105", "Emergency Room"),
                (EventKind.PAGE_CYCLE, "105", "Emergency Room"),
                (EventKind.PAGE_CYCLE, "106", "Emergency Room"),
                (EventKind.PAGE_CYCLE, "105", "Pharmacy"),
            ]
        ):
            await store.history.append_event(
                HistoryEvent(
                    kind, None, extension, department, {"n": n},
                    occurred_at=datetime(2024, 5, 1, 12, n, tzinfo=UTC),
                )
            )  # fmt: skip

    with_store(fastagi.dsn, write)
    period = ["--since", "2024-05-01T00:00:00+00:00", "--until", "2024-05-02T00:00:00+00:00"]

    def exported(*filters: str) -> list[int]:
        out = fastagi.ok("history", "export", *period, *filters, "--format", "json")
        return [event["details"]["n"] for event in json.loads(out)]

    assert exported() == [0, 1, 2, 3]
    assert exported("--department", "Emergency Room") == [0, 1, 2]
    assert exported("--kind", "page_cycle", "--extension", "105") == [1, 3]
    assert exported("--department", "emergency room") == []  # as recorded: exact
    code, _, err = fastagi("history", "export", *period, "--department", "x\0")
    assert (code, "no NUL" in err) == (2, True)
    with pytest.raises(SystemExit):
        fastagi("history", "export", *period, "--kind", "panic")


def test_history_export_refuses_a_bad_date(fastagi: Cli) -> None:
    with pytest.raises(SystemExit) as caught:
        fastagi("history", "export", "--since", "yesterday", "--until", "2024-05-01")

    assert caught.value.code == 2


def test_an_interval_shorter_than_the_announcement_is_named_with_both_lengths(
    fastagi: Cli,
) -> None:
    fastagi.ok("department", "add", "Emergency Room", "--interval", "30")
    fastagi.ok("extension", "map", "Emergency Room", "101-119")
    (announcement,) = [
        d["announcement_seconds"] for d in json.loads(fastagi.ok("department", "list", "--json"))
    ]

    code, out, err = fastagi("department", "set", "Emergency Room", "--interval", "5")
    listed = json.loads(fastagi.ok("department", "list", "--json"))
    fastagi.ok("department", "add", "Pharmacy")  # default interval, 60 s
    _, _, default_err = fastagi("interval", "set", "5")

    assert (code, out) == (0, "changed department 'Emergency Room'\n")
    assert err == (
        "warning: the interval of 'Emergency Room' (5s) is shorter than its announcement"
        f" ({announcement:.1f}s with the lead-in): pages will run back to back, one every"
        f" {announcement:.1f}s\n"
    )
    assert listed[0]["interval_seconds"] == 5
    assert listed[0]["cycle_seconds"] == announcement > 5
    assert "warning: the interval of 'Pharmacy' (5s) is shorter" in default_err
    assert "'Emergency Room'" not in default_err  # it has an interval of its own
    # a long enough interval: no warning
    assert fastagi("department", "set", "Emergency Room", "--interval", "30")[2] == ""


def test_interval_and_policy(fastagi: Cli) -> None:
    fastagi.ok("interval", "set", "30")  # no department: nothing to warn about
    fastagi.ok("policy", "set", "--no-answer", "cancel", "--pin-attempts", "5")

    shown = json.loads(fastagi.ok("policy", "show", "--json"))
    table = fastagi.ok("policy", "show")

    assert shown["default_interval_seconds"] == 30
    assert shown["no_answer_policy"] == "cancel"
    assert shown["pin_attempts"] == 5
    assert table.splitlines()[1].split() == ["no-answer", "cancel"]
    assert fastagi.ok("interval", "show") == "default interval: 30s\n"
    code, _, err = fastagi("interval", "set", "2")
    assert code == 2
    assert err.startswith("fastagi: error: interval must be between 5 and 3600 seconds")


def test_an_unmigrated_database_is_a_clear_error(
    empty_database_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["department", "list", "--dsn", empty_database_dsn])

    assert code == 2
    assert capsys.readouterr().err == (
        "fastagi: error: the database has no alarm tables yet: run `fastagi db migrate`\n"
    )


def test_seed_demo_is_idempotent(fastagi: Cli) -> None:
    first = with_store(fastagi.dsn, seed_demo)
    second = with_store(fastagi.dsn, seed_demo)

    departments = json.loads(fastagi.ok("department", "list", "--json"))
    groups = json.loads(fastagi.ok("paging-group", "list", "--json"))
    stored = fastagi.store_query("SELECT pin_hash FROM deactivators WHERE extension = '150'")
    lookups = [
        json.loads(fastagi.ok("extension", "lookup", ext, "--json"))["department"]
        for ext in ("101", "125", "143", "150")
    ]

    assert first == second
    assert first.pin == DEMO_PIN
    assert first.deactivator == "150"
    assert [(d["name"], d["patterns"]) for d in departments] == [
        ("Emergency Room", ["101-119"]),
        ("Pharmacy", ["120-139"]),
        ("Reception", ["_14X"]),
    ]
    er = next(g for g in groups if g["name"] == "ER")
    assert er["devices"] == ["PJSIP/201", "PJSIP/202", "PJSIP/203", "PJSIP/204"]
    assert isinstance(stored, str)
    assert pins.verify_pin(DEMO_PIN, stored)
    assert lookups == ["Emergency Room", "Pharmacy", "Reception", "unknown department"]


def test_history_summary_counts_real_alarms_and_lists_drills_apart(fastagi: Cli) -> None:
    from datetime import UTC, datetime, timedelta

    from fastagi.admin.drills import start_drill

    fastagi.ok("paging-group", "add", "ER")
    fastagi.ok("paging-group", "device", "add", "ER", "PJSIP/201")
    fastagi.ok("department", "add", "Emergency Room", "--paging-group", "ER")

    async def alarms(store: Stores) -> tuple[int, int]:
        stop = HistoryEvent(EventKind.DEACTIVATED, None, None, None)
        alarm, _ = await store.alarms.activate("department:1", 1, "Emergency Room", "105")
        await store.alarms.deactivate(alarm.id, "150", "PIN", stop)
        drill = await start_drill(store, "Emergency Room", cycles=2, by="cli:alice")
        return alarm.id, drill.id

    alarm_id, drill_id = with_store(fastagi.dsn, alarms)
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    out = fastagi.ok("history", "summary", "--since", since, "--until", until)
    data = json.loads(
        fastagi.ok("history", "summary", "--since", since, "--until", until, "--json")
    )

    lines = out.splitlines()
    assert lines[0].endswith(": 1 (drills apart)")
    assert lines[2].split()[:4] == ["Emergency", "Room", "1", "0"]
    assert "drills: 1" in lines
    assert lines[-1].split()[:3] == [str(drill_id), "Emergency", "Room"]
    assert lines[-1].split()[-3:] == ["cli:alice", "running", "-"]
    assert [(t["department_name"], t["alarms"], t["drill"]) for t in data["alarms"]] == [
        ("Emergency Room", 1, False)
    ]
    assert [d["alarm"]["id"] for d in data["drills"]] == [drill_id]
    assert alarm_id not in [d["alarm"]["id"] for d in data["drills"]]
    listed = fastagi.ok("alarm", "list").splitlines()
    assert listed[1].split()[:3] == [str(drill_id), "DRILL", "active"]
    assert listed[1].split()[-2] == "0/2"


def test_drill_without_waiting_and_its_refusals(fastagi: Cli) -> None:
    fastagi.ok("paging-group", "add", "ER")
    fastagi.ok("paging-group", "device", "add", "ER", "PJSIP/201")
    fastagi.ok("department", "add", "Emergency Room", "--paging-group", "ER")
    fastagi.ok("department", "add", "Pharmacy")

    started = json.loads(
        fastagi.ok("drill", "emergency room", "--no-wait", "--json", "--devices", "PJSIP/290")
    )
    again = fastagi("drill", "Emergency Room", "--no-wait")
    silent = fastagi("drill", "Pharmacy", "--no-wait")

    assert started["alarm"]["drill"]["devices"] == ["PJSIP/290"]
    assert started["alarm"]["drill"]["requested_by"].startswith("cli:")
    assert again == (
        2,
        "",
        "fastagi: error: no drill of 'Emergency Room': a drill of the department runs"
        f" already (alarm {started['alarm']['id']})\n",
    )
    assert silent[0] == 2
    assert "has no paging devices" in silent[2]


def test_the_listed_cycle_is_the_page_in_the_language_the_department_speaks(
    fastagi: Cli,
) -> None:
    name, patterns = "Oddział 3", ("201-209",)
    fastagi.ok("department", "add", name)
    fastagi.ok("extension", "map", name, *patterns)

    def listed_seconds() -> float:
        [department] = json.loads(fastagi.ok("department", "list", "--json"))
        seconds = department["announcement_seconds"]
        assert isinstance(seconds, float)
        return seconds

    async def measured(language: str | None) -> float:
        meter = AnnouncementMeter(load_settings_or_fail())
        try:
            announcement = await meter.measure(name, patterns, language)
        finally:
            await meter.close()
        assert announcement is not None
        return round(announcement.seconds, 1)

    english = listed_seconds()
    fastagi.ok("department", "set", name, "--language", "pl")
    own = listed_seconds()
    fastagi.ok("department", "set", name, "--default-language")
    fastagi.ok("policy", "set", "--language", "pl")
    site = listed_seconds()

    polish = asyncio.run(measured("pl"))
    assert english == asyncio.run(measured(None)) != polish
    assert own == site == polish
