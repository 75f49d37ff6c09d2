"""The SQLite backend: file format, schema versions, refusing files that are not ours, several processes."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from progressive_cli.config.secrets import REDACTOR
from progressive_cli.errors import UnavailableError
from progressive_cli.store import open_store
from progressive_cli.store import sqlite as sqlite_store
from progressive_cli.store.base import Event, Execution, StepRecord
from progressive_cli.store.sqlite import APPLICATION_ID, SCHEMA_VERSION, SQLiteStore

run = asyncio.run


def make_execution(id: str = "e1") -> Execution:
    return Execution(id=id, workflow="wf", status="running", inputs={"a": 1}, definition={"id": "wf"},
                     created_at=1.0, updated_at=1.0)


def create_store(path: Path) -> None:
    """Make a store file holding one execution, one step and one event, then close it."""
    store = SQLiteStore(path)
    run(store.create_execution(make_execution(), events=[Event(type="workflow.started", data={})]))
    run(store.save_step(StepRecord("e1", "a", "a", "agent", "completed", output={"x": 1})))
    run(store.close())


def pragma(path: Path, name: str) -> object:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        db.close()


def set_pragma(path: Path, name: str, value: int) -> None:
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA {name} = {value}")
    db.commit()
    db.close()


def tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()


def files_in(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# --- file format -------------------------------------------------------------------------------------
def test_new_file_is_wal_with_our_ids(tmp_path):
    store = open_store("sqlite:///state.db", tmp_path)
    assert store.url == f"sqlite:///{tmp_path / 'state.db'}"
    run(store.close())
    path = tmp_path / "state.db"
    assert pragma(path, "journal_mode") == "wal"
    assert pragma(path, "application_id") == APPLICATION_ID
    assert pragma(path, "user_version") == SCHEMA_VERSION
    assert {"executions", "steps", "events", "queue", "meta"} <= tables(path)


def test_relative_and_absolute_urls(tmp_path):
    run(open_store("sqlite:///sub/dir/state.db", tmp_path).close())
    assert (tmp_path / "sub" / "dir" / "state.db").is_file()
    other = tmp_path / "elsewhere"
    run(open_store(f"sqlite:///{other / 'abs.db'}", Path("/nonexistent-root")).close())
    assert (other / "abs.db").is_file()


def test_reopen_keeps_data(tmp_path):
    path = tmp_path / "state.db"
    create_store(path)
    store = SQLiteStore(path)
    assert run(store.get_execution("e1")) == make_execution()
    assert run(store.load_steps("e1"))["a"].output == {"x": 1}
    assert [e.type for e in run(store.list_events())] == ["workflow.started"]
    run(store.close())


def test_durability_full(tmp_path):
    store = SQLiteStore(tmp_path / "state.db", durability="full")
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    run(store.close())
    store = SQLiteStore(tmp_path / "state.db")
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    run(store.close())


# --- schema versions ---------------------------------------------------------------------------------
def test_version_0_file_with_our_id_is_initialised(tmp_path):
    path = tmp_path / "state.db"
    set_pragma(path, "application_id", APPLICATION_ID)
    assert pragma(path, "user_version") == 0
    store = SQLiteStore(path)
    run(store.create_execution(make_execution()))
    run(store.close())
    assert pragma(path, "user_version") == SCHEMA_VERSION
    assert "executions" in tables(path)


V2 = """
-- a comment; with a semicolon
ALTER TABLE executions ADD COLUMN note TEXT DEFAULT 'n/a;still one statement';
CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT NOT NULL);
CREATE TRIGGER executions_audit AFTER UPDATE ON executions BEGIN
    INSERT INTO audit (what) VALUES ('updated;' || new.id);
END;
"""


def test_older_file_is_migrated_in_place(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    create_store(path)
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", [*sqlite_store.MIGRATIONS, V2])
    monkeypatch.setattr(sqlite_store, "SCHEMA_VERSION", SCHEMA_VERSION + 1)

    store = SQLiteStore(path)
    assert run(store.get_execution("e1")) == make_execution()
    assert list(run(store.load_steps("e1"))) == ["a"]
    assert len(run(store.list_events())) == 1
    run(store.update_execution("e1", status="completed"))
    assert store.db.execute("SELECT note FROM executions").fetchone()[0] == "n/a;still one statement"
    assert store.db.execute("SELECT what FROM audit").fetchall() == [("updated;e1",)]
    assert store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION + 1)
    run(store.close())
    assert pragma(path, "user_version") == SCHEMA_VERSION + 1
    assert pragma(path, "application_id") == APPLICATION_ID

    # opening again at the new version migrates nothing twice
    store = SQLiteStore(path)
    assert run(store.get_execution("e1")).status == "completed"
    run(store.close())


def test_failed_migration_leaves_the_file_at_its_version(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    create_store(path)
    broken = "CREATE TABLE half_done (x TEXT);\nALTER TABLE no_such_table ADD COLUMN y TEXT;"
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", [*sqlite_store.MIGRATIONS, broken])
    monkeypatch.setattr(sqlite_store, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(UnavailableError, match="no_such_table"):
        SQLiteStore(path)
    assert pragma(path, "user_version") == SCHEMA_VERSION
    assert "half_done" not in tables(path)
    monkeypatch.undo()
    store = SQLiteStore(path)
    assert run(store.get_execution("e1")) == make_execution()
    run(store.close())


def test_newer_file_is_refused_untouched(tmp_path):
    path = tmp_path / "state.db"
    create_store(path)
    set_pragma(path, "user_version", SCHEMA_VERSION + 1)
    before = files_in(tmp_path)
    with pytest.raises(UnavailableError, match="newer") as info:
        open_store("sqlite:///state.db", tmp_path)
    assert str(path) in info.value.message
    assert f"schema version {SCHEMA_VERSION + 1}" in info.value.message
    assert files_in(tmp_path) == before


# --- files that are not ours -------------------------------------------------------------------------
def test_foreign_database_is_refused_untouched(tmp_path):
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO users (name) VALUES ('ada')")
    db.commit()
    db.close()
    assert pragma(path, "application_id") == 0
    before = files_in(tmp_path)
    with pytest.raises(UnavailableError, match="not a progressive state store") as info:
        open_store("sqlite:///app.db", tmp_path)
    assert str(path) in info.value.message
    assert files_in(tmp_path) == before
    assert pragma(path, "journal_mode") == "delete"


def test_foreign_application_id_is_refused_even_when_empty(tmp_path):
    path = tmp_path / "other.db"
    set_pragma(path, "application_id", 0x12345678)
    before = files_in(tmp_path)
    with pytest.raises(UnavailableError, match="not a progressive state store"):
        SQLiteStore(path)
    assert files_in(tmp_path) == before


@pytest.mark.parametrize("size", [1, 50, 100, 4096, 65536])
def test_corrupt_file_is_refused_untouched(tmp_path, size):
    path = tmp_path / "state.db"
    path.write_bytes(random.Random(size).randbytes(size))
    before = files_in(tmp_path)
    with pytest.raises(UnavailableError, match="not a usable progressive state store") as info:
        open_store("sqlite:///state.db", tmp_path)
    assert str(path) in info.value.message
    assert files_in(tmp_path) == before


def test_damaged_store_is_refused(tmp_path):
    path = tmp_path / "state.db"
    create_store(path)
    data = bytearray(path.read_bytes())
    data[100:] = random.Random(1).randbytes(len(data) - 100)  # keep the header, wreck the pages
    path.write_bytes(bytes(data))
    with pytest.raises(UnavailableError, match=str(path)):
        SQLiteStore(path)


def test_empty_file_is_initialised(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"")
    store = open_store("sqlite:///state.db", tmp_path)
    run(store.create_execution(make_execution()))
    assert run(store.get_execution("e1")) == make_execution()
    run(store.close())
    assert pragma(path, "application_id") == APPLICATION_ID


# --- locations that cannot be used -------------------------------------------------------------------
def test_directory_path(tmp_path):
    (tmp_path / "state.db").mkdir()
    with pytest.raises(UnavailableError, match=r"state\.db"):
        open_store("sqlite:///state.db", tmp_path)
    with pytest.raises(UnavailableError):
        open_store("sqlite:///", tmp_path)


def test_parent_is_a_file(tmp_path):
    (tmp_path / "plain").write_text("not a directory")
    with pytest.raises(UnavailableError, match="plain"):
        open_store("sqlite:///plain/state.db", tmp_path)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    create_store(locked / "existing.db")
    locked.chmod(0o555)
    (locked / "existing.db").chmod(0o444)
    try:
        with pytest.raises(UnavailableError, match=r"new\.db"):
            open_store("sqlite:///locked/new.db", tmp_path)
        with pytest.raises(UnavailableError, match="sub"):
            open_store("sqlite:///locked/sub/new.db", tmp_path)
        with pytest.raises(UnavailableError, match=r"existing\.db"):
            open_store("sqlite:///locked/existing.db", tmp_path)
    finally:
        locked.chmod(0o755)


def test_unwritable_location_needs_no_permissions_to_test(tmp_path):
    """Runs as root too: a path under /proc cannot be created by anyone."""
    if not Path("/proc/self").exists():
        pytest.skip("no /proc")
    with pytest.raises(UnavailableError, match="cannot open the state store"):
        open_store("sqlite:////proc/progressive-test/state.db", tmp_path)


# --- open_store URLs and secrets ---------------------------------------------------------------------
@pytest.fixture
def _fresh_redactor():
    REDACTOR.clear()
    yield
    REDACTOR.clear()


@pytest.mark.usefixtures("_fresh_redactor")
def test_url_resolves_env_references(tmp_path, monkeypatch):
    monkeypatch.setenv("PROG_TEST_STATE_DIR", str(tmp_path / "from-env"))
    store = open_store("sqlite:///${env:PROG_TEST_STATE_DIR}/state.db", Path("/nonexistent-root"))
    run(store.close())
    assert (tmp_path / "from-env" / "state.db").is_file()


@pytest.mark.usefixtures("_fresh_redactor")
def test_url_with_unset_variable_names_it(tmp_path, monkeypatch):
    monkeypatch.delenv("PROG_TEST_UNSET_VAR", raising=False)
    with pytest.raises(UnavailableError, match="PROG_TEST_UNSET_VAR") as info:
        open_store("sqlite:///${env:PROG_TEST_UNSET_VAR}/state.db", tmp_path)
    assert "state.url" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_unknown_scheme(tmp_path):
    with pytest.raises(UnavailableError, match="'postgresql' backend"):
        open_store("postgresql://user@localhost/db", tmp_path)


# --- several processes -------------------------------------------------------------------------------
# Each process waits at a few points until the other has caught up (seen through the event
# log), so the two really overlap however slowly either one starts.
RENDEZVOUS = """
    async def caught_up(store, other, i):
        deadline = time.time() + 30
        while time.time() < deadline:
            for event in await store.list_events(type_prefix="test.", limit=100_000):
                if event.data["writer"] == other and event.data["i"] >= i:
                    return
            await asyncio.sleep(0.005)
        raise SystemExit(f"{other} never reached {i}")
"""

WRITER = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from progressive_cli.store.base import Event, StepRecord
    from progressive_cli.store.sqlite import SQLiteStore

    path, name, other, start = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
    store = SQLiteStore(path)
    while time.time() < start:
        time.sleep(0.001)
""") + textwrap.dedent(RENDEZVOUS) + textwrap.dedent("""
    async def main():
        for i in range(200):
            await store.append_events([Event(type="test.tick", data={"writer": name, "i": i})])
            await store.save_step(StepRecord(name, f"s{i}", f"s{i}", "agent", "completed", output=i),
                                  events=[Event(type="step.completed", data={"writer": name, "i": i})])
            if i in (0, 50, 100):
                await caught_up(store, other, i)
        await store.close()

    asyncio.run(main())
    print("ok")
""")

CLAIMER = textwrap.dedent("""
    import asyncio, json, sys, time
    from pathlib import Path
    from progressive_cli.store.base import Event
    from progressive_cli.store.sqlite import SQLiteStore

    path, name, other, start = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
    store = SQLiteStore(path)
    while time.time() < start:
        time.sleep(0.001)
""") + textwrap.dedent(RENDEZVOUS) + textwrap.dedent("""
    async def main():
        claimed = []
        while (item := await store.claim_work(name, 60)) is not None:
            claimed.append(item.payload["i"])
            if len(claimed) in (1, 20):
                await store.append_events([Event(type="test.claimed", data={"writer": name, "i": len(claimed)})])
                await caught_up(store, other, len(claimed))
            await store.finish_work(item.id)
        await store.close()
        return claimed

    print(json.dumps(asyncio.run(main())))
""")

OPENER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from progressive_cli.store.sqlite import SQLiteStore

    start = float(sys.argv[2])
    while time.time() < start:
        pass
    SQLiteStore(Path(sys.argv[1])).db.close()
    print("ok")
""")


def run_together(script: str, argv: list[list[str]], cwd: Path) -> list[str]:
    """Start one process per argument list, released together ~0.4 s later; return their stdouts."""
    start = str(time.time() + 0.4)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, *args, start], cwd=cwd, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for args in argv
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert err == ""
        outputs.append(out)
    return outputs


def test_two_processes_write_concurrently(tmp_path):
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    run(store.create_execution(make_execution("one")))
    run(store.create_execution(make_execution("two")))
    outputs = run_together(WRITER, [[str(path), "one", "two"], [str(path), "two", "one"]], tmp_path)
    assert [o.strip() for o in outputs] == ["ok", "ok"]

    events = run(store.list_events(limit=10_000))
    assert len(events) == 800
    for kind in ("test.tick", "step.completed"):
        for writer in ("one", "two"):
            got = [e.data["i"] for e in events if e.type == kind and e.data["writer"] == writer]
            assert got == list(range(200))  # each process's events in its own order
    writers = [e.data["writer"] for e in events]
    assert writers != sorted(writers)  # they did overlap
    for writer in ("one", "two"):
        steps = run(store.load_steps(writer))
        assert len(steps) == 200
        assert steps["s199"].output == 199
    run(store.close())


def test_two_processes_claim_each_item_once(tmp_path):
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    for i in range(300):
        run(store.enqueue("job", {"i": i}))
    outputs = run_together(CLAIMER, [[str(path), "w1", "w2"], [str(path), "w2", "w1"]], tmp_path)
    claimed = [json.loads(o) for o in outputs]
    assert sorted(claimed[0] + claimed[1]) == list(range(300))
    assert len(claimed[0]) >= 20 and len(claimed[1]) >= 20  # both really worked the queue
    assert run(store.queue_depth()) == 0
    run(store.close())


def test_processes_creating_one_file_at_once(tmp_path):
    """Several processes opening a brand-new file together: none may see another's migration
    half-way and call the file foreign, none may fail on a lock."""
    argv = [[str(tmp_path / f"race{r}.db")] for r in range(3) for _ in range(6)]
    outputs = run_together(OPENER, argv, tmp_path)
    assert [o.strip() for o in outputs] == ["ok"] * len(argv)
    for r in range(3):
        assert pragma(tmp_path / f"race{r}.db", "user_version") == SCHEMA_VERSION


def test_a_version_1_file_is_migrated_to_the_mca_tables(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    monkeypatch.setattr(sqlite_store, "SCHEMA_VERSION", 1)
    store = SQLiteStore(path)
    store.db.execute("INSERT INTO heartbeats (agent, instance, at, status) VALUES ('npa', 'npa#0', 5.0, 'ok')")
    run(store.close())
    assert pragma(path, "user_version") == 1
    monkeypatch.undo()
    store = SQLiteStore(path)
    assert pragma(path, "user_version") == SCHEMA_VERSION == 6
    beats = run(store.heartbeats())
    assert beats == [{"agent": "npa", "instance": "npa#0", "at": 5.0, "status": "ok", "detail": None,
                      "checked_at": None, "failures": 0}]
    run(store.record_heartbeat("npa", "npa#0", False, "refused"))
    assert run(store.heartbeats())[0]["failures"] == 1 and run(store.heartbeats())[0]["at"] == 5.0
    assert {"agent_metrics", "agent_inflight", "messages", "incidents", "integration_metrics", "bus_offsets",
            "bus_retries", "dead_letters", "bus_metrics", "alerts", "controls", "daemons"} <= tables(path)
    run(store.close())


def test_integration_metrics_merge_from_several_processes(tmp_path):
    store = SQLiteStore(tmp_path / "state.db")
    delta = {"integration": "usda", "total": 3, "success": 2, "failure": 1, "latency_sum_ms": 30.0,
             "buckets": {"50": 3}, "rate_limited": 1, "breaker_opens": 0, "retries": 2, "rejected": 0,
             "last_error": "API_ERROR: 503", "last_call_at": 10.0}
    run(store.merge_integration_metrics([delta]))
    run(store.merge_integration_metrics([{**delta, "last_error": None, "breaker_opens": 1, "last_call_at": 5.0}]))
    [row] = run(store.integration_metrics())
    assert row["total"] == 6 and row["success"] == 4 and row["failure"] == 2 and row["latency_sum_ms"] == 60.0
    assert row["buckets"] == {"50": 6}
    assert (row["rate_limited"], row["breaker_opens"], row["retries"], row["rejected"]) == (2, 1, 4, 0)
    assert row["last_error"] == "API_ERROR: 503" and row["last_call_at"] == 10.0
    run(store.close())


def test_opening_retries_a_locked_file_and_nothing_else(tmp_path, monkeypatch):
    """Switching a new file to WAL fails at once with "database is locked" while another process migrates
    it (SQLite's busy handler does not cover that; seen as a flaky two-`run --detach` e2e): opening tries
    again until the busy timeout, and gives up on any other error at once."""
    import sqlite3

    real = SQLiteStore._prepare
    calls: list[int] = []

    def locked_twice(self, durability):
        calls.append(1)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        return real(self, durability)

    monkeypatch.setattr(SQLiteStore, "_prepare", locked_twice)
    store = SQLiteStore(tmp_path / "a.db")
    assert len(calls) == 3 and pragma(tmp_path / "a.db", "user_version") == SCHEMA_VERSION
    run(store.close())

    def broken(self, durability):
        calls.append(1)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SQLiteStore, "_prepare", broken)
    calls.clear()
    with pytest.raises(UnavailableError, match="disk I/O error"):
        SQLiteStore(tmp_path / "b.db")
    assert len(calls) == 1

    monkeypatch.setattr(SQLiteStore, "_prepare", lambda self, d: (_ for _ in ()).throw(
        sqlite3.OperationalError("database is locked")))
    with pytest.raises(UnavailableError, match="locked"):
        SQLiteStore(tmp_path / "c.db", busy_timeout=0.2)  # gives up once the busy timeout is spent


def test_a_writer_waits_for_another_writer_in_short_steps(tmp_path):
    """A write transaction that finds the lock taken tries again every fraction of a millisecond (not
    SQLite's 1, 2, 5, 10... ms), gets it soon after it is let go, gives up as UnavailableError once the
    busy timeout is spent, and leaves the busy timeout of reads as it was."""
    import threading

    path = tmp_path / "state.db"
    store = SQLiteStore(path, busy_timeout=5.0)
    other = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    released = []

    def release() -> None:
        time.sleep(0.35)  # SQLite's handler would try at 0.328 s, then at 0.428 s
        released.append(time.monotonic())
        other.execute("COMMIT")

    thread = threading.Thread(target=release)
    thread.start()
    run(store.enqueue("run", {}))  # waits for the other writer
    waited = time.monotonic() - released[0]
    thread.join()
    assert run(store.queue_depth()) == 1
    assert waited < 0.04, waited
    assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000

    store.busy_timeout = 0.1
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="locked"):
        run(store.enqueue("run", {}))
    assert 0.1 <= time.monotonic() - started < 1.0
    assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    other.execute("COMMIT")
    other.close()
    assert run(store.queue_depth()) == 1
    run(store.close())


def test_group_commit_shares_transactions_and_keeps_each_write_whole(tmp_path):
    """With group commit on (a worker running runs at once), the writes of one turn of the loop share a
    transaction; each call returns once its change is committed; a failing write is undone alone; a
    write cancelled before the transaction is not made."""
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    commits: list[str] = []
    store.db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    assert store.group_commit(True) is False

    async def go() -> list[Any]:
        reader = sqlite3.connect(str(path))

        async def enqueue_and_look(n: int) -> int:
            item = await store.enqueue("run", {"n": n})
            # committed by the time the call returns: another connection sees it
            return int(reader.execute("SELECT count(*) FROM queue WHERE id = ?", (item,)).fetchone()[0])

        seen = await asyncio.gather(*(enqueue_and_look(n) for n in range(10)))
        assert seen == [1] * 10 and len(commits) == 1

        commits.clear()
        results = await asyncio.gather(
            store.create_execution(make_execution("a")),
            store.create_execution(make_execution("a")),  # the same id again: fails, alone
            store.append_events([Event(type="x.y", data={})]),
            return_exceptions=True)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], sqlite3.IntegrityError)
        assert len(commits) == 1

        cancelled = asyncio.ensure_future(store.enqueue("run", {"n": "cancelled"}))
        await asyncio.sleep(0)  # it is waiting for the turn's transaction...
        cancelled.cancel()  # ...and is cancelled before it
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        reader.close()
        return [await store.queue_depth(), [e.type for e in await store.list_events()]]

    assert run(go()) == [10, ["x.y"]]
    assert run(store.get_execution("a")) is not None
    assert store.group_commit(False) is True
    commits.clear()
    run(store.enqueue("run", {}))  # off again: a transaction of its own, at once
    assert len(commits) == 1
    run(store.close())
