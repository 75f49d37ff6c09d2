"""The embedded state store: one SQLite file in WAL mode, safe for several processes at once.

Durability: WAL with ``synchronous=NORMAL`` survives any process crash (SIGKILL included);
``state.durability: full`` in progressive.yaml adds an fsync per commit for power loss.
The schema is versioned with ``PRAGMA user_version``; an older file is migrated in place in
one transaction, a newer or foreign one is refused with a message, never touched.

Writers: every process has one connection. A write transaction that finds another process's in
progress tries again in short steps (:meth:`SQLiteStore._begin`). A worker turns on group commit
(:meth:`SQLiteStore.group_commit`): the writes of its concurrent runs made in one turn of the event
loop share one transaction, each write committed before its call returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from progressive_cli.errors import UnavailableError
from progressive_cli.store.base import Event, Execution, Message, StepRecord, WorkItem, new_id, now

_T = TypeVar("_T")
_SQLITE_MAGIC = b"SQLite format 3\x00"
APPLICATION_ID = 0x50524F47  # "PROG": tells our files from other SQLite databases
SCHEMA_VERSION = 6

# Each entry upgrades from version i to i + 1. Later issues append; nothing is ever edited.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        status TEXT NOT NULL,
        inputs TEXT NOT NULL,
        definition TEXT NOT NULL,
        outputs TEXT,
        error TEXT,
        parent_id TEXT,
        parent_step TEXT,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        updated_at REAL NOT NULL,
        wake_at REAL,
        deadline REAL,
        owner TEXT,
        lease_until REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX executions_status ON executions (status, updated_at);
    CREATE INDEX executions_workflow ON executions (workflow, created_at);
    CREATE INDEX executions_parent ON executions (parent_id);
    CREATE TABLE steps (
        execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        step_id TEXT NOT NULL,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        input TEXT,
        output TEXT,
        error TEXT,
        started_at REAL,
        finished_at REAL,
        wake_at REAL,
        PRIMARY KEY (execution_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        type TEXT NOT NULL,
        source TEXT NOT NULL,
        subject TEXT,
        execution_id TEXT,
        time REAL NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_execution ON events (execution_id, seq);  -- `seq` orders; ids are uuid4, not indexed
    CREATE TABLE queue (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        available_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        leased_by TEXT,
        lease_until REAL,
        created_at REAL NOT NULL
    );
    CREATE INDEX queue_ready ON queue (available_at);
    -- filled by later issues: operator actions, breakers, heartbeats, health history
    CREATE TABLE controls (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, payload TEXT NOT NULL,
        created_at REAL NOT NULL, applied_at REAL, result TEXT
    );
    CREATE TABLE breakers (
        name TEXT PRIMARY KEY, state TEXT NOT NULL, failures INTEGER NOT NULL DEFAULT 0,
        successes INTEGER NOT NULL DEFAULT 0, opened_at REAL, last_error TEXT, updated_at REAL NOT NULL
    );
    CREATE TABLE heartbeats (
        agent TEXT NOT NULL, instance TEXT NOT NULL, at REAL NOT NULL, status TEXT NOT NULL, detail TEXT,
        PRIMARY KEY (agent, instance)
    );
    CREATE TABLE health_results (
        id INTEGER PRIMARY KEY AUTOINCREMENT, check_name TEXT NOT NULL, status TEXT NOT NULL,
        response_ms REAL, detail TEXT, at REAL NOT NULL
    );
    CREATE INDEX health_results_check ON health_results (check_name, at);
    """,
    # 2: the MCA. Agent metrics (cumulative, merged by every process that calls agents), calls in
    # flight per calling process, heartbeat probes, agent messages, EMA incidents.
    """
    CREATE TABLE agent_metrics (
        agent TEXT NOT NULL, instance TEXT NOT NULL,
        total INTEGER NOT NULL DEFAULT 0, success INTEGER NOT NULL DEFAULT 0, failure INTEGER NOT NULL DEFAULT 0,
        latency_sum_ms REAL NOT NULL DEFAULT 0, buckets TEXT NOT NULL DEFAULT '{}',
        last_error TEXT, last_call_at REAL, updated_at REAL NOT NULL,
        PRIMARY KEY (agent, instance)
    ) WITHOUT ROWID;
    CREATE TABLE agent_inflight (
        agent TEXT NOT NULL, instance TEXT NOT NULL, owner TEXT NOT NULL,
        count INTEGER NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (agent, instance, owner)
    ) WITHOUT ROWID;
    ALTER TABLE heartbeats ADD COLUMN checked_at REAL;
    ALTER TABLE heartbeats ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        channel TEXT,
        body TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        delivered_at REAL,
        error TEXT,
        reply TEXT
    );
    CREATE INDEX messages_recipient ON messages (recipient, created_at);
    CREATE INDEX messages_pending ON messages (status, recipient, created_at);
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY, status TEXT NOT NULL, record TEXT NOT NULL, updated_at REAL NOT NULL
    );
    """,
    # 3: integrations. Request metrics per integration (external APIs and databases), merged from every
    # process like the agents'; breaker states live in `breakers` as `integration:<id>`.
    """
    CREATE TABLE integration_metrics (
        integration TEXT PRIMARY KEY,
        total INTEGER NOT NULL DEFAULT 0, success INTEGER NOT NULL DEFAULT 0, failure INTEGER NOT NULL DEFAULT 0,
        latency_sum_ms REAL NOT NULL DEFAULT 0, buckets TEXT NOT NULL DEFAULT '{}',
        rate_limited INTEGER NOT NULL DEFAULT 0, breaker_opens INTEGER NOT NULL DEFAULT 0,
        retries INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0,
        last_error TEXT, last_call_at REAL, updated_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 4: the event bus. Each subscription's position in `events`, its retry queue, the dead-letter queue
    # and its counters. A batch's handler outcomes and the position move in one transaction.
    """
    CREATE TABLE bus_offsets (
        subscription TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE bus_retries (
        subscription TEXT NOT NULL, event_seq INTEGER NOT NULL, attempts INTEGER NOT NULL,
        next_at REAL NOT NULL, error TEXT, PRIMARY KEY (subscription, event_seq)
    ) WITHOUT ROWID;
    CREATE INDEX bus_retries_due ON bus_retries (subscription, next_at);
    CREATE TABLE dead_letters (
        id TEXT PRIMARY KEY, subscription TEXT NOT NULL, event_seq INTEGER NOT NULL, event_id TEXT NOT NULL,
        type TEXT NOT NULL, error TEXT, attempts INTEGER NOT NULL, created_at REAL NOT NULL
    );
    CREATE INDEX dead_letters_created ON dead_letters (created_at);
    CREATE TABLE bus_metrics (
        subscription TEXT PRIMARY KEY, processed INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0, retried INTEGER NOT NULL DEFAULT 0,
        dead_lettered INTEGER NOT NULL DEFAULT 0, skipped INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 5: health alerts. One row per check: consecutive failures and successes, and whether its alert fires.
    """
    CREATE TABLE alerts (
        check_name TEXT PRIMARY KEY, firing INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
        successes INTEGER NOT NULL DEFAULT 0, fired_at REAL, notified_at REAL, resolved_at REAL,
        status TEXT, detail TEXT, updated_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 6: operator actions (written by the CLI and dashboard, applied by the daemon or in process), and
    # the daemons' presence (a heartbeat row each, with their scheduler's job figures)
    """
    DROP TABLE controls;
    CREATE TABLE controls (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending', requested_by TEXT NOT NULL, created_at REAL NOT NULL,
        applied_by TEXT, claimed_at REAL, applied_at REAL, result TEXT, error TEXT
    );
    CREATE INDEX controls_status ON controls (status, created_at);
    CREATE TABLE daemons (
        id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, started_at REAL NOT NULL,
        seen_at REAL NOT NULL, stopped_at REAL, info TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
]

_EXECUTION_FIELDS = [f.name for f in fields(Execution)]
_STEP_FIELDS = [f.name for f in fields(StepRecord)]
# save_step writes these positionally, for speed: keep the two in step
assert _STEP_FIELDS == ["execution_id", "key", "step_id", "type", "status", "attempt", "input", "output", "error",
                        "started_at", "finished_at", "wake_at"]
_JSON_EXECUTION = {"inputs", "definition", "outputs", "error"}
_JSON_STEP = {"input", "output", "error"}


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)  # json.dumps would build one per call


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _column(name: str, value: Any, json_fields: set[str]) -> Any:
    return _dumps(value) if name in json_fields and value is not None else value


def _execution_sets(changes: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """``field = ?, ...`` and its parameters for an UPDATE of ``executions`` (JSON fields encoded)."""
    unknown = set(changes) - set(_EXECUTION_FIELDS)
    if unknown:
        raise ValueError(f"unknown execution fields: {sorted(unknown)}")
    sets = ", ".join(f"{k} = ?" for k in changes)
    return sets, tuple(_dumps(v) if k in _JSON_EXECUTION and v is not None else v for k, v in changes.items())


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _statements(script: str) -> list[str]:
    """Split a migration into statements; unlike ``split(";")`` this keeps trigger bodies, string
    literals and comments containing ``;`` intact."""
    out: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending)
            pending = ""
    if pending.strip():
        out.append(pending)
    return out


class _WriteFailed(Exception):
    """A write of a group commit failed: the batch is done again, each write in a savepoint."""


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open (SQLite rolls back by itself after some errors, and
    a failing ROLLBACK would hide the original error)."""
    if db.in_transaction:
        db.execute("ROLLBACK")


def _insert_events(db: sqlite3.Connection, events: list[Event] | None) -> None:
    if events:
        db.executemany(
            "INSERT INTO events (id, type, source, subject, execution_id, time, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(e.id, e.type, e.source, e.subject, e.execution_id, e.time, _dumps(e.data)) for e in events],
        )


INTEGRATION_COUNTERS = ("rate_limited", "breaker_opens", "retries", "rejected")


def _merge_tally(db: sqlite3.Connection, table: str, key: dict[str, str], d: dict[str, Any],
                 counters: tuple[str, ...], t: float) -> None:
    """Add one metrics delta (a ``Tally`` as a dict, plus extra ``counters``) to its row of ``table``."""
    where = " AND ".join(f"{k} = ?" for k in key)
    row = db.execute(f"SELECT buckets FROM {table} WHERE {where}", tuple(key.values())).fetchone()
    buckets: dict[str, int] = json.loads(row[0]) if row else {}
    for index, count in d["buckets"].items():
        buckets[str(index)] = buckets.get(str(index), 0) + count
    summed = ("total", "success", "failure", "latency_sum_ms", *counters)
    columns = (*key, *summed, "buckets", "last_error", "last_call_at", "updated_at")
    values = (*key.values(), *(d.get(c, 0) for c in summed), _dumps(buckets), d.get("last_error"),
              d.get("last_call_at"), t)
    db.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + "".join(f"{c} = {c} + excluded.{c}, " for c in summed)
        + "buckets = excluded.buckets, last_error = coalesce(excluded.last_error, last_error), "
        "last_call_at = max(coalesce(last_call_at, 0), coalesce(excluded.last_call_at, 0)), "
        "updated_at = excluded.updated_at", values)


def path_from_url(url: str, root: Path) -> Path:
    """``sqlite:///rel/path.db`` is relative to the project; ``sqlite:////abs/path.db`` is absolute."""
    if not url.startswith("sqlite:///"):
        raise UnavailableError(f"state.url {url!r}: expected sqlite:///PATH")
    raw = url.removeprefix("sqlite:///")
    path = Path(raw)
    return path if path.is_absolute() else root / path


class SQLiteStore:
    """:class:`~progressive_cli.store.base.StateStore` on one SQLite file."""

    def __init__(self, path: Path, *, durability: str = "normal", busy_timeout: float = 10.0) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.busy_timeout = busy_timeout
        self._grouping = False
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._pending_loop: asyncio.AbstractEventLoop | None = None
        self._busy_ms = f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_file():
                with path.open("rb") as file:
                    head = file.read(len(_SQLITE_MAGIC))
                # SQLite itself takes a 1-byte file for an empty one and would write over it
                if head and head != _SQLITE_MAGIC:
                    raise UnavailableError(f"{path} is not a usable progressive state store (not an SQLite file)")
            self.db = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None,
                                      check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise UnavailableError(f"cannot open the state store {path}: {exc}") from None
        try:
            self._prepare_patiently(durability, busy_timeout)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            if getattr(exc, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
                raise UnavailableError(f"{path} is not a usable progressive state store ({exc})") from None
            raise UnavailableError(f"cannot use the state store {path}: {exc}") from None
        except BaseException:
            self.db.close()
            raise

    # --- setup ---------------------------------------------------------------------------------------
    def _check(self) -> int:
        """Refuse a foreign or newer file; return its schema version.

        The three values are read in one statement, so one snapshot: read one by one, a process
        could see another process's migration half-way (application_id 0 but user_version 1) and
        call a brand-new store foreign."""
        app_id, version, tables = self.db.execute(  # raises on a non-SQLite file
            "SELECT (SELECT application_id FROM pragma_application_id), "
            "(SELECT user_version FROM pragma_user_version), "
            "(SELECT count(*) FROM sqlite_master WHERE type = 'table')"
        ).fetchone()
        if app_id != APPLICATION_ID and (tables or version or app_id):
            raise UnavailableError(
                f"{self.path} is an SQLite database but not a progressive state store; "
                "point state.url at another file"
            )
        if version > SCHEMA_VERSION:
            raise UnavailableError(
                f"{self.path} has schema version {version}, newer than this progressive ({SCHEMA_VERSION}); "
                "upgrade progressive, or point state.url at another file"
            )
        return int(version)

    def _prepare_patiently(self, durability: str, busy_timeout: float) -> None:
        """``_prepare``, tried again while another process holds the lock: switching a new file to WAL
        fails at once with "database is locked" (SQLite's busy handler does not cover it) when several
        processes open a new store together, e.g. two `run --detach` at the same moment."""
        deadline = time.monotonic() + busy_timeout
        delay = 0.01
        while True:
            try:
                self._prepare(durability)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def _prepare(self, durability: str) -> None:
        db = self.db
        version = self._check()
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
        db.execute("PRAGMA foreign_keys = ON")
        # checkpoint every ~40 MB of WAL instead of 4 MB: a durable step writes 3-4 pages, and each
        # checkpoint copies and syncs the pages, so the default makes checkpoints a large share of a step
        db.execute("PRAGMA wal_autocheckpoint = 10000")
        if version < SCHEMA_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            current = self._check()  # another process may have migrated (or replaced the file) meanwhile
            for index in range(current, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[index]):
                    db.execute(statement)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    async def close(self) -> None:
        self._flush()  # writes still waiting for their transaction (none once their callers have returned)
        self.db.close()

    # --- group commit ----------------------------------------------------------------------------------
    def group_commit(self, on: bool = True) -> bool:
        """Let the writes of concurrent tasks share transactions (a worker running many runs at once);
        returns the previous setting.

        While on, a write waits for the end of the current turn of the event loop, and every write
        submitted by then goes into one transaction, each in a savepoint of its own: each call still
        returns only once its change is committed, a call that fails is rolled back alone and raises,
        and a call cancelled before the transaction began is not written at all. What changes is only
        the number of commits (and of WAL pages, and of checkpoints): one per turn, not one per write."""
        previous, self._grouping = self._grouping, on
        if not on:
            self._flush()
        return previous

    async def _submit(self, write: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``write(db)`` in a write transaction, alone or with the other writes of this turn."""
        if not self._grouping:
            with self._transaction() as db:
                return write(db)
        loop = asyncio.get_running_loop()
        if self._pending and self._pending_loop is not loop:
            self._flush()  # left over from a loop that has ended: its callers are gone
        future: asyncio.Future[_T] = loop.create_future()
        self._pending.append((write, future))
        if len(self._pending) == 1:
            self._pending_loop = loop
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch = [(write, future) for write, future in self._pending if not future.cancelled()]
        self._pending = []
        if not batch:
            return
        try:
            # Writes rarely fail: first all of them in one go; if one does, the whole transaction is undone
            # and the batch is done again with a savepoint around each, so only that one fails.
            try:
                outcomes = self._commit(batch, isolate=False)
            except _WriteFailed:
                outcomes = self._commit(batch, isolate=True)
        except Exception as exc:  # nothing of the batch was committed: every caller gets the error
            outcomes = [(future, False, exc) for _, future in batch]
        for future, ok, value in outcomes:
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            elif isinstance(value, sqlite3.OperationalError):  # as _transaction raises it
                future.set_exception(UnavailableError(f"state store {self.path}: {value}"))
            else:
                future.set_exception(value)

    def _commit(self, batch: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]],
                isolate: bool) -> list[tuple[asyncio.Future[Any], bool, Any]]:
        """One transaction for ``batch``: each write's (future, ok, result or exception). Without
        ``isolate``, a failing write of several raises _WriteFailed after rolling everything back."""
        db = self.db
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        self._begin(db)
        try:
            for write, future in batch:
                if isolate:
                    db.execute("SAVEPOINT w")
                try:
                    outcomes.append((future, True, write(db)))
                except Exception as exc:
                    if not isolate and len(batch) > 1:
                        raise _WriteFailed from exc
                    if isolate:
                        db.execute("ROLLBACK TO w")
                    else:  # alone in its transaction: undo it all
                        _rollback(db)
                        return [(future, False, exc)]
                    outcomes.append((future, False, exc))
                if isolate:
                    db.execute("RELEASE w")
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        return outcomes

    def _begin(self, db: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, waiting for another process's write transaction in short steps.

        SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ms... between tries, so a process that
        finds the lock taken a few times in a row by a busy neighbour (``run --detach`` queueing while the
        daemon works, each holding it for a fraction of a millisecond) sleeps far longer than the lock is
        held. Here the handler is off while we try, and we try again after 0.1 ms, doubling up to 2 ms,
        for up to ``busy_timeout`` seconds; reads keep SQLite's handler."""
        db.execute("PRAGMA busy_timeout = 0")
        try:
            delay, deadline = 0.0001, 0.0
            while True:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                        raise
                    t = time.monotonic()
                    deadline = deadline or t + self.busy_timeout
                    if t >= deadline:
                        raise
                    time.sleep(delay)
                    delay = min(delay * 2, 0.002)
        finally:
            db.execute(self._busy_ms)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed whole or rolled back; lock errors become UnavailableError."""
        db = self.db
        try:
            self._begin(db)
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        except sqlite3.OperationalError as exc:
            raise UnavailableError(f"state store {self.path}: {exc}") from None

    async def _write(self, statements: Iterable[tuple[str, tuple[Any, ...]]], events: list[Event] | None) -> None:
        statements = list(statements)

        def write(db: sqlite3.Connection) -> None:
            for sql, params in statements:
                db.execute(sql, params)
            _insert_events(db, events)

        await self._submit(write)

    # --- executions ----------------------------------------------------------------------------------
    def _row_to_execution(self, row: sqlite3.Row | tuple[Any, ...]) -> Execution:
        values = dict(zip(_EXECUTION_FIELDS, row, strict=True))
        for name in _JSON_EXECUTION:
            values[name] = _loads(values[name])
        values["cancel_requested"] = bool(values["cancel_requested"])
        return Execution(**values)

    async def create_execution(self, execution: Execution, events: list[Event] | None = None, *,
                               work: tuple[str, dict[str, Any]] | None = None) -> str | None:
        params = tuple(_column(f, getattr(execution, f), _JSON_EXECUTION) for f in _EXECUTION_FIELDS)
        placeholders = ", ".join("?" * len(_EXECUTION_FIELDS))
        statements = [(f"INSERT INTO executions ({', '.join(_EXECUTION_FIELDS)}) VALUES ({placeholders})", params)]
        item_id = None
        if work is not None:
            item_id, t = new_id(), now()
            statements.append(("INSERT INTO queue (id, kind, payload, available_at, created_at) VALUES (?, ?, ?, ?, ?)",
                               (item_id, work[0], _dumps(work[1]), t, t)))
        await self._write(statements, events)
        return item_id

    async def get_execution(self, execution_id: str) -> Execution | None:
        row = self.db.execute(
            f"SELECT {', '.join(_EXECUTION_FIELDS)} FROM executions WHERE id = ?", (execution_id,)
        ).fetchone()
        return self._row_to_execution(row) if row else None

    async def find_execution(self, prefix: str) -> list[Execution]:
        # substr, not LIKE: LIKE is case-insensitive in SQLite (and not in PostgreSQL)
        rows = self.db.execute(
            f"SELECT {', '.join(_EXECUTION_FIELDS)} FROM executions WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT 5",
            (len(prefix), prefix),
        ).fetchall()
        return [self._row_to_execution(r) for r in rows]

    async def list_executions(
        self, *, workflow: str | None = None, statuses: list[str] | None = None, limit: int = 50
    ) -> list[Execution]:
        where: list[str] = []
        params: list[Any] = []
        if workflow:
            where.append("workflow = ?")
            params.append(workflow)
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        # the newest rows picked first by rowid, then read: the sort carries two numbers a row, not the JSON
        # columns of every match (200 of 10,000 finished runs: 18 ms -> under 1 ms)
        rows = self.db.execute(
            f"SELECT {', '.join(_EXECUTION_FIELDS)} FROM executions WHERE rowid IN (SELECT rowid FROM executions "
            f"{clause} ORDER BY created_at DESC LIMIT ?) ORDER BY created_at DESC",
            (*params, limit),
        ).fetchall()
        return [self._row_to_execution(r) for r in rows]

    async def update_execution(self, execution_id: str, events: list[Event] | None = None, *,
                               finish_work: str | None = None, **changes: Any) -> None:
        changes.setdefault("updated_at", now())
        sets, params = _execution_sets(changes)
        statements = [(f"UPDATE executions SET {sets} WHERE id = ?", (*params, execution_id))]
        if finish_work is not None:
            statements.append(("DELETE FROM queue WHERE id = ?", (finish_work,)))
        await self._write(statements, events)

    async def cancel_requested(self, execution_id: str) -> bool:
        row = self.db.execute("SELECT cancel_requested FROM executions WHERE id = ?", (execution_id,)).fetchone()
        return bool(row and row[0])

    async def claim_execution(self, execution_id: str, owner: str, lease_seconds: float,
                              events: list[Event] | None = None, **changes: Any) -> bool:
        return await self._lease(execution_id, owner, lease_seconds,
                                 "owner IS NULL OR owner = ? OR lease_until IS NULL OR lease_until < ?", (owner,),
                                 events, changes)

    async def take_over_execution(self, execution_id: str, dead_owner: str, owner: str,
                                  lease_seconds: float, events: list[Event] | None = None, **changes: Any) -> bool:
        return await self._lease(execution_id, owner, lease_seconds, "owner = ?", (dead_owner,), events, changes)

    async def _lease(self, execution_id: str, owner: str, lease_seconds: float, condition: str,
                     params: tuple[Any, ...], events: list[Event] | None, changes: dict[str, Any]) -> bool:
        """Take the lease when ``condition`` holds and, only then, apply ``changes`` and write ``events``
        in the same transaction. The clock is read in the transaction (``now`` goes last in the
        condition's parameters when it names ``lease_until < ?``)."""
        if {"owner", "lease_until", "updated_at"} & set(changes):
            raise ValueError("the lease sets owner, lease_until and updated_at itself")
        extra, extra_params = _execution_sets(changes) if changes else ("", ())
        sql = (f"UPDATE executions SET owner = ?, lease_until = ?, updated_at = ?{', ' if extra else ''}{extra} "
               f"WHERE id = ? AND ({condition})")
        timed = "lease_until < ?" in condition

        def write(db: sqlite3.Connection) -> bool:
            t = now()
            values = (owner, t + lease_seconds, t, *extra_params, execution_id, *params, *((t,) if timed else ()))
            taken = db.execute(sql, values).rowcount == 1
            if taken:
                _insert_events(db, events)
            return taken

        return await self._submit(write)

    # --- steps ---------------------------------------------------------------------------------------
    async def load_steps(self, execution_id: str) -> dict[str, StepRecord]:
        rows = self.db.execute(
            f"SELECT {', '.join(_STEP_FIELDS)} FROM steps WHERE execution_id = ?", (execution_id,)
        ).fetchall()
        out = {}
        for row in rows:
            values = dict(zip(_STEP_FIELDS, row, strict=True))
            for name in _JSON_STEP:
                values[name] = _loads(values[name])
            out[values["key"]] = StepRecord(**values)
        return out

    async def completed_steps(self, execution_ids: list[str]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {e: set() for e in execution_ids}
        for start in range(0, len(execution_ids), 500):
            chunk = execution_ids[start:start + 500]
            for execution_id, key in self.db.execute(
                    f"SELECT execution_id, key FROM steps WHERE execution_id IN ({', '.join('?' * len(chunk))}) "
                    "AND status = 'completed'", chunk):
                out[execution_id].add(key)
        return out

    async def save_step(self, record: StepRecord, events: list[Event] | None = None) -> None:
        r = record
        params = (r.execution_id, r.key, r.step_id, r.type, r.status, r.attempt,
                  None if r.input is None else _dumps(r.input), None if r.output is None else _dumps(r.output),
                  None if r.error is None else _dumps(r.error), r.started_at, r.finished_at, r.wake_at)
        placeholders = ", ".join("?" * len(_STEP_FIELDS))
        await self._write([(f"INSERT OR REPLACE INTO steps ({', '.join(_STEP_FIELDS)}) VALUES ({placeholders})",
                      params)], events)

    async def delete_steps(self, execution_id: str, keys: list[str]) -> None:
        await self._write([("DELETE FROM steps WHERE execution_id = ? AND key = ?", (execution_id, k)) for k in keys],
                    None)

    # --- events --------------------------------------------------------------------------------------
    async def append_events(self, events: list[Event]) -> None:
        await self._write([], events)

    async def list_events(
        self, *, after_seq: int = 0, execution_id: str | None = None, type_prefix: str | None = None,
        limit: int = 100,
    ) -> list[Event]:
        where: list[str] = ["seq > ?"]
        params: list[Any] = [after_seq]
        if execution_id:
            where.append("execution_id = ?")
            params.append(execution_id)
        prefix = (type_prefix or "").rstrip("*")
        if prefix:
            # substr, not LIKE: "_" is a LIKE wildcard and LIKE ignores case in SQLite
            where.append("substr(type, 1, ?) = ?")
            params.extend((len(prefix), prefix))
        rows = self.db.execute(
            "SELECT seq, id, type, source, subject, execution_id, time, data FROM events "
            f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [Event(seq=r[0], id=r[1], type=r[2], source=r[3], subject=r[4], execution_id=r[5], time=r[6],
                      data=json.loads(r[7])) for r in rows]

    async def event_stats(self) -> tuple[int, int]:
        """(events kept, newest ``seq``)."""
        count, newest = self.db.execute("SELECT count(*), coalesce(max(seq), 0) FROM events").fetchone()
        return int(count), int(newest)

    async def publish(self, events: list[Event]) -> int:
        """Append events in one transaction; the highest ``seq`` now in the table."""
        with self._transaction() as db:
            _insert_events(db, events)
            return int(db.execute("SELECT max(seq) FROM events").fetchone()[0] or 0)

    async def get_events(self, seqs: list[int]) -> dict[int, Event]:
        out: dict[int, Event] = {}
        for start in range(0, len(seqs), 500):
            chunk = seqs[start:start + 500]
            rows = self.db.execute(
                "SELECT seq, id, type, source, subject, execution_id, time, data FROM events "
                f"WHERE seq IN ({', '.join('?' * len(chunk))})", chunk).fetchall()
            for r in rows:
                out[r[0]] = Event(seq=r[0], id=r[1], type=r[2], source=r[3], subject=r[4], execution_id=r[5],
                                  time=r[6], data=json.loads(r[7]))
        return out

    async def counts(self) -> dict[str, Any]:
        """Totals for monitoring: executions by workflow and status, steps by type and status, queue depth."""
        return {
            "executions": [dict(zip(("workflow", "status", "count"), r, strict=True)) for r in self.db.execute(
                "SELECT workflow, status, count(*) FROM executions GROUP BY workflow, status ORDER BY 1, 2")],
            "steps": [dict(zip(("type", "status", "count"), r, strict=True)) for r in self.db.execute(
                "SELECT type, status, count(*) FROM steps GROUP BY type, status ORDER BY 1, 2")],
            "queue": int(self.db.execute("SELECT count(*) FROM queue").fetchone()[0]),
        }

    async def execution_counts(self) -> dict[str, int]:
        return {status: int(n) for status, n in self.db.execute(
            "SELECT status, count(*) FROM executions GROUP BY status")}

    # --- health history -----------------------------------------------------------------------------
    async def save_health(self, results: list[dict[str, Any]], before: float | None = None) -> None:
        """Append check results ({name, status, response_ms, detail, at}); with ``before``, drop the
        history older than that in the same transaction (retention)."""
        with self._transaction() as db:
            db.executemany("INSERT INTO health_results (check_name, status, response_ms, detail, at) "
                           "VALUES (?, ?, ?, ?, ?)",
                           [(r["name"], r["status"], r["response_ms"], r["detail"], r["at"]) for r in results])
            if before is not None:
                db.execute("DELETE FROM health_results WHERE at < ?", (before,))

    async def health_history(self, since: float, names: list[str] | None = None) -> list[dict[str, Any]]:
        """Check results since ``since``, oldest first."""
        where = "at >= ?"
        params: list[Any] = [since]
        if names:
            where += f" AND check_name IN ({', '.join('?' * len(names))})"
            params.extend(names)
        rows = self.db.execute(f"SELECT check_name, status, response_ms, detail, at FROM health_results "
                               f"WHERE {where} ORDER BY at, id", params).fetchall()
        return [dict(zip(("name", "status", "response_ms", "detail", "at"), r, strict=True)) for r in rows]

    async def latest_health(self) -> list[dict[str, Any]]:
        """The newest result of every check."""
        rows = self.db.execute(
            "SELECT h.check_name, h.status, h.response_ms, h.detail, h.at FROM health_results h JOIN "
            "(SELECT check_name, max(id) AS id FROM health_results GROUP BY check_name) m ON m.id = h.id "
            "ORDER BY h.check_name").fetchall()
        return [dict(zip(("name", "status", "response_ms", "detail", "at"), r, strict=True)) for r in rows]

    async def load_alerts(self) -> dict[str, dict[str, Any]]:
        names = ("check_name", "firing", "failures", "successes", "fired_at", "notified_at", "resolved_at", "status",
                 "detail")
        rows = self.db.execute(f"SELECT {', '.join(names)} FROM alerts").fetchall()
        return {r[0]: dict(zip(names, r, strict=True)) for r in rows}

    async def save_alerts(self, rows: list[dict[str, Any]], events: list[Event] | None = None) -> None:
        t = now()
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(r["check_name"], int(r["firing"]), r["failures"], r["successes"], r["fired_at"],
                             r["notified_at"], r["resolved_at"], r["status"], r["detail"], t) for r in rows])
            _insert_events(db, events)

    # --- operator controls and daemons ----------------------------------------------------------------
    _CONTROL_FIELDS = ("id", "kind", "target", "payload", "status", "requested_by", "created_at", "applied_by",
                       "claimed_at", "applied_at", "result", "error")

    def _control_rows(self, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        out = [dict(zip(self._CONTROL_FIELDS, r, strict=True)) for r in rows]
        for row in out:
            row["payload"], row["result"] = _loads(row["payload"]), _loads(row["result"])
        return out

    async def add_control(self, kind: str, target: str, payload: dict[str, Any], requested_by: str,
                          events: list[Event] | None = None) -> str:
        control_id = new_id()
        await self._write([("INSERT INTO controls (id, kind, target, payload, requested_by, created_at) "
                      "VALUES (?, ?, ?, ?, ?, ?)", (control_id, kind, target, _dumps(payload), requested_by, now()))],
                    events)
        return control_id

    async def claim_controls(self, applier: str, *, ids: list[str] | None = None, kinds: list[str] | None = None,
                             stale_after: float = 60.0, limit: int = 100) -> list[dict[str, Any]]:
        """Take pending controls (oldest first), or ones an applier took more than ``stale_after`` seconds
        ago without finishing (it died), for ``applier``: each is handed to one applier at a time."""
        t = now()
        where = ["(status = 'pending' OR (status = 'applying' AND claimed_at < ?))"]
        params: list[Any] = [t - stale_after]
        for column, values in (("id", ids), ("kind", kinds)):
            if values is not None:
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        with self._transaction() as db:
            rows = db.execute(
                f"UPDATE controls SET status = 'applying', applied_by = ?, claimed_at = ? WHERE id IN "
                f"(SELECT id FROM controls WHERE {' AND '.join(where)} ORDER BY created_at LIMIT ?) "
                f"RETURNING {', '.join(self._CONTROL_FIELDS)}", (applier, t, *params, limit)).fetchall()
        return sorted(self._control_rows(rows), key=lambda r: r["created_at"])

    async def finish_control(self, control_id: str, applier: str, *, result: Any = None, error: str | None = None,
                             events: list[Event] | None = None) -> bool:
        """Record the outcome of a control ``applier`` took (False, and nothing written, if it is no longer
        theirs)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE controls SET status = ?, applied_at = ?, result = ?, error = ? "
                "WHERE id = ? AND applied_by = ? AND status = 'applying'",
                ("failed" if error is not None else "applied", now(), None if result is None else _dumps(result),
                 error, control_id, applier))
            if cursor.rowcount:
                _insert_events(db, events)
        return bool(cursor.rowcount)

    async def controls(self, *, ids: list[str] | None = None, statuses: list[str] | None = None,
                       limit: int = 100) -> list[dict[str, Any]]:
        """Controls, newest first."""
        where: list[str] = []
        params: list[Any] = []
        for column, values in (("id", ids), ("status", statuses)):
            if values is not None:
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.execute(f"SELECT {', '.join(self._CONTROL_FIELDS)} FROM controls{clause} "
                               "ORDER BY created_at DESC LIMIT ?", (*params, limit)).fetchall()
        return self._control_rows(rows)

    async def save_daemon(self, daemon_id: str, host: str, pid: int, started_at: float, info: dict[str, Any], *,
                          stopped: bool = False) -> None:
        t = now()
        await self._write([("INSERT OR REPLACE INTO daemons VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (daemon_id, host, pid, started_at, t, t if stopped else None, _dumps(info)))], None)

    async def daemons(self) -> list[dict[str, Any]]:
        """Every daemon that has run on this store, newest first."""
        names = ("id", "host", "pid", "started_at", "seen_at", "stopped_at", "info")
        rows = self.db.execute(f"SELECT {', '.join(names)} FROM daemons ORDER BY started_at DESC").fetchall()
        out = [dict(zip(names, r, strict=True)) for r in rows]
        for row in out:
            row["info"] = _loads(row["info"])
        return out

    # --- event bus: offsets, retry queue, dead letters -----------------------------------------------
    async def prune_events(self, before: float) -> int:
        """Delete events older than ``before`` (retention), except those a retry queue or the DLQ still
        needs; the number deleted."""
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM events WHERE time < ? AND seq NOT IN (SELECT event_seq FROM bus_retries) "
                "AND seq NOT IN (SELECT event_seq FROM dead_letters)", (before,))
            return int(cursor.rowcount)

    async def bus_offset(self, subscription: str) -> int | None:
        row = self.db.execute("SELECT seq FROM bus_offsets WHERE subscription = ?", (subscription,)).fetchone()
        return None if row is None else int(row[0])

    async def bus_commit(self, subscription: str, *, offset: int | None, done: list[int],
                         retries: list[tuple[int, int, float, str]], dead: list[tuple[Event, int, str]],
                         counts: dict[str, int]) -> None:
        """One batch's outcome in one transaction: the new offset (None: unchanged), retry-queue rows done
        (deleted) or (re)scheduled ((seq, attempts, next_at, error)), dead letters ((event, attempts, error);
        their retry rows go), and counter deltas."""
        t = now()
        with self._transaction() as db:
            if offset is not None:
                db.execute("INSERT INTO bus_offsets VALUES (?, ?, ?) ON CONFLICT (subscription) DO UPDATE SET "
                           "seq = max(seq, excluded.seq), updated_at = excluded.updated_at", (subscription, offset, t))
            gone = done + [e.seq for e, _, _ in dead if e.seq is not None]
            if gone:
                db.executemany("DELETE FROM bus_retries WHERE subscription = ? AND event_seq = ?",
                               [(subscription, seq) for seq in gone])
            if retries:
                db.executemany("INSERT OR REPLACE INTO bus_retries VALUES (?, ?, ?, ?, ?)",
                               [(subscription, seq, attempts, at, error) for seq, attempts, at, error in retries])
            if dead:
                db.executemany("INSERT INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               [(new_id(), subscription, e.seq, e.id, e.type, error, attempts, t)
                                for e, attempts, error in dead])
            if any(counts.values()):
                names = ("processed", "failed", "retried", "dead_lettered", "skipped")
                sums = ", ".join(f"{n} = {n} + excluded.{n}" for n in names)
                db.execute(f"INSERT INTO bus_metrics (subscription, {', '.join(names)}, updated_at) "
                           f"VALUES (?, {', '.join('?' * len(names))}, ?) ON CONFLICT (subscription) DO UPDATE SET "
                           f"{sums}, updated_at = excluded.updated_at",
                           (subscription, *(counts.get(n, 0) for n in names), t))

    async def due_retries(self, subscription: str, at: float, limit: int) -> list[tuple[int, int]]:
        """(event seq, attempts so far) of retry-queue rows due by ``at``, oldest first."""
        rows = self.db.execute("SELECT event_seq, attempts FROM bus_retries WHERE subscription = ? AND next_at <= ? "
                               "ORDER BY next_at, event_seq LIMIT ?", (subscription, at, limit)).fetchall()
        return [(int(r[0]), int(r[1])) for r in rows]

    async def bus_status(self) -> list[dict[str, Any]]:
        """Per subscription: offset, lag behind the newest event, retry-queue and DLQ depth, counters."""
        newest = int(self.db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
        names = [r[0] for r in self.db.execute(
            "SELECT subscription FROM bus_offsets UNION SELECT subscription FROM bus_retries "
            "UNION SELECT subscription FROM dead_letters UNION SELECT subscription FROM bus_metrics ORDER BY 1")]
        out = []
        for name in names:
            offset = self.db.execute("SELECT seq FROM bus_offsets WHERE subscription = ?", (name,)).fetchone()
            m = self.db.execute("SELECT processed, failed, retried, dead_lettered, skipped FROM bus_metrics "
                                "WHERE subscription = ?", (name,)).fetchone() or (0, 0, 0, 0, 0)
            out.append({
                "subscription": name, "offset": offset[0] if offset else 0,
                "lag": newest - (offset[0] if offset else 0),
                "retry_queue": self.db.execute("SELECT count(*) FROM bus_retries WHERE subscription = ?",
                                               (name,)).fetchone()[0],
                "dead_letters": self.db.execute("SELECT count(*) FROM dead_letters WHERE subscription = ?",
                                                (name,)).fetchone()[0],
                **dict(zip(("processed", "failed", "retried", "dead_lettered", "skipped"), m, strict=True)),
            })
        return out

    async def dead_letters(self, *, subscription: str | None = None, limit: int = 100,
                           letter_id: str | None = None) -> list[dict[str, Any]]:
        where: list[str] = ["1"]
        params: list[Any] = []
        if subscription:
            where.append("d.subscription = ?")
            params.append(subscription)
        if letter_id:
            where.append("substr(d.id, 1, ?) = ?")
            params.extend((len(letter_id), letter_id))
        rows = self.db.execute(
            "SELECT d.id, d.subscription, d.event_seq, d.event_id, d.type, d.error, d.attempts, d.created_at, e.data, "
            f"e.time FROM dead_letters d LEFT JOIN events e ON e.seq = d.event_seq WHERE {' AND '.join(where)} "
            "ORDER BY d.created_at DESC LIMIT ?", (*params, limit)).fetchall()
        names = ("id", "subscription", "event_seq", "event_id", "type", "error", "attempts", "created_at", "data",
                 "event_time")
        out = [dict(zip(names, r, strict=True)) for r in rows]
        for row in out:
            row["data"] = json.loads(row["data"]) if row["data"] is not None else None
        return out

    async def replay_dead_letters(self, ids: list[str] | None, at: float) -> int:
        """Move dead letters (all of them with ``ids`` None) back to their subscription's retry queue, due
        at ``at`` with a fresh attempt count; the number moved."""
        with self._transaction() as db:
            where, params = ("", ()) if ids is None else (
                f" WHERE id IN ({', '.join('?' * len(ids))})", tuple(ids))
            rows = db.execute(f"SELECT id, subscription, event_seq FROM dead_letters{where}", params).fetchall()
            db.executemany("INSERT OR REPLACE INTO bus_retries VALUES (?, ?, 0, ?, 'replayed')",
                           [(r[1], r[2], at) for r in rows])
            db.executemany("DELETE FROM dead_letters WHERE id = ?", [(r[0],) for r in rows])
        return len(rows)

    async def purge_dead_letters(self, before: float | None, ids: list[str] | None = None) -> int:
        with self._transaction() as db:
            if ids is not None:
                cursor = db.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids])
            else:
                cursor = db.execute("DELETE FROM dead_letters WHERE created_at < ?",
                                    (float("inf") if before is None else before,))
            return int(cursor.rowcount)

    # --- work queue ----------------------------------------------------------------------------------
    async def enqueue(self, kind: str, payload: dict[str, Any], available_at: float | None = None) -> str:
        item_id = new_id()
        t = now()
        await self._write([("INSERT INTO queue (id, kind, payload, available_at, created_at) VALUES (?, ?, ?, ?, ?)",
                      (item_id, kind, _dumps(payload), t if available_at is None else available_at, t))], None)
        return item_id

    async def claim_work(self, worker: str, lease_seconds: float) -> WorkItem | None:
        items = await self.claim_work_batch(worker, lease_seconds, 1)
        return items[0] if items else None

    async def claim_work_batch(self, worker: str, lease_seconds: float, limit: int) -> list[WorkItem]:
        if limit < 1:
            return []

        def claim(db: sqlite3.Connection) -> list[WorkItem]:
            t = now()
            until = t + lease_seconds
            rows = db.execute(
                "SELECT id, kind, payload, available_at, attempts FROM queue "
                "WHERE available_at <= ? AND (lease_until IS NULL OR lease_until < ?) "
                "ORDER BY available_at LIMIT ?",
                (t, t, limit),
            ).fetchall()
            if rows:
                db.executemany("UPDATE queue SET leased_by = ?, lease_until = ?, attempts = attempts + 1 "
                               "WHERE id = ?", [(worker, until, row[0]) for row in rows])
            return [WorkItem(id=row[0], kind=row[1], payload=json.loads(row[2]), available_at=row[3],
                             attempts=row[4] + 1, leased_by=worker, lease_until=until) for row in rows]

        return await self._submit(claim)

    async def finish_work(self, item_id: str) -> None:
        await self._write([("DELETE FROM queue WHERE id = ?", (item_id,))], None)

    async def queue_depth(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM queue").fetchone()[0])

    async def list_work(self, *, limit: int = 1000) -> list[WorkItem]:
        rows = self.db.execute("SELECT id, kind, payload, available_at, attempts, leased_by, lease_until FROM queue "
                               "ORDER BY available_at LIMIT ?", (limit,)).fetchall()
        return [WorkItem(id=r[0], kind=r[1], payload=json.loads(r[2]), available_at=r[3], attempts=r[4],
                         leased_by=r[5], lease_until=r[6]) for r in rows]

    async def extend_work(self, item_id: str, worker: str, lease_seconds: float) -> bool:
        return await self._update_work("lease_until = ?", (now() + lease_seconds,), item_id, worker)

    async def release_work(self, item_id: str, worker: str, available_at: float | None = None) -> bool:
        return await self._update_work(
            "leased_by = NULL, lease_until = NULL, available_at = coalesce(?, available_at)",
            (available_at,), item_id, worker)

    async def _update_work(self, sets: str, params: tuple[Any, ...], item_id: str, worker: str) -> bool:
        """Change an item only while ``worker`` holds its lease."""
        sql = f"UPDATE queue SET {sets} WHERE id = ? AND leased_by = ?"
        return await self._submit(lambda db: db.execute(sql, (*params, item_id, worker)).rowcount == 1)

    # --- agents: metrics, calls in flight, heartbeats, instance breakers -----------------------------------
    async def merge_agent_metrics(self, deltas: list[dict[str, Any]],
                                  in_flight: list[tuple[str, str, str, int]]) -> None:
        """Add each process's metric deltas to the totals; set its in-flight counts ((agent, instance,
        owner, count); a zero count removes the row)."""
        t = now()
        with self._transaction() as db:
            for d in deltas:
                _merge_tally(db, "agent_metrics", {"agent": d["agent"], "instance": d["instance"]}, d, (), t)
            for agent, instance, owner, count in in_flight:
                if count:
                    db.execute("INSERT OR REPLACE INTO agent_inflight VALUES (?, ?, ?, ?, ?)",
                               (agent, instance, owner, count, t))
                else:
                    db.execute("DELETE FROM agent_inflight WHERE agent = ? AND instance = ? AND owner = ?",
                               (agent, instance, owner))

    async def agent_metrics(self, *, fresh_within: float = 300.0) -> list[dict[str, Any]]:
        """Totals per (agent, instance), with the calls in flight reported in the last ``fresh_within`` s
        (a process that died mid-call stops counting once its report is that old)."""
        cutoff = now() - fresh_within
        rows = self.db.execute(
            "SELECT m.agent, m.instance, m.total, m.success, m.failure, m.latency_sum_ms, m.buckets, m.last_error, "
            "m.last_call_at, (SELECT coalesce(sum(f.count), 0) FROM agent_inflight f WHERE f.agent = m.agent "
            "AND f.instance = m.instance AND f.updated_at >= ?) FROM agent_metrics m ORDER BY m.agent, m.instance",
            (cutoff,)).fetchall()
        names = ("agent", "instance", "total", "success", "failure", "latency_sum_ms", "buckets", "last_error",
                 "last_call_at", "in_flight")
        out = [dict(zip(names, r, strict=True)) for r in rows]
        for row in out:
            row["buckets"] = json.loads(row["buckets"])
        return out

    async def record_heartbeat(self, agent: str, instance: str, ok: bool, detail: str | None = None) -> None:
        """A probe of one instance: success moves its heartbeat on; failure keeps the last good one and
        counts consecutive failures."""
        t = now()
        if ok:
            await self._write([("INSERT INTO heartbeats (agent, instance, at, status, detail, checked_at, failures) "
                          "VALUES (?, ?, ?, 'ok', ?, ?, 0) ON CONFLICT (agent, instance) DO UPDATE SET "
                          "at = excluded.at, status = 'ok', detail = excluded.detail, checked_at = excluded.at, "
                          "failures = 0", (agent, instance, t, detail, t))], None)
        else:
            await self._write([("INSERT INTO heartbeats (agent, instance, at, status, detail, checked_at, failures) "
                          "VALUES (?, ?, 0, 'failed', ?, ?, 1) ON CONFLICT (agent, instance) DO UPDATE SET "
                          "status = 'failed', detail = excluded.detail, checked_at = excluded.checked_at, "
                          "failures = failures + 1", (agent, instance, detail, t))], None)

    async def heartbeats(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT agent, instance, at, status, detail, checked_at, failures FROM heartbeats "
                               "ORDER BY agent, instance").fetchall()
        names = ("agent", "instance", "at", "status", "detail", "checked_at", "failures")
        return [dict(zip(names, r, strict=True)) for r in rows]

    async def merge_integration_metrics(self, deltas: list[dict[str, Any]]) -> None:
        """Add each process's per-integration deltas (the agents' tally fields plus ``rate_limited``,
        ``breaker_opens``, ``retries`` and ``rejected``) to the totals."""
        t = now()
        with self._transaction() as db:
            for d in deltas:
                _merge_tally(db, "integration_metrics", {"integration": d["integration"]}, d, INTEGRATION_COUNTERS, t)

    async def integration_metrics(self) -> list[dict[str, Any]]:
        names = ("integration", "total", "success", "failure", "latency_sum_ms", "buckets", *INTEGRATION_COUNTERS,
                 "last_error", "last_call_at")
        rows = self.db.execute(f"SELECT {', '.join(names)} FROM integration_metrics ORDER BY integration").fetchall()
        out = [dict(zip(names, r, strict=True)) for r in rows]
        for row in out:
            row["buckets"] = json.loads(row["buckets"])
        return out

    async def save_breaker(self, name: str, state: str, failures: int, successes: int, opened_at: float | None,
                           last_error: str | None, events: list[Event] | None = None, *,
                           expected: float | bool | None = True) -> float | None:
        """Write a breaker's row (and its events) and return its new ``updated_at``. With ``expected`` (the
        ``updated_at`` the caller last saw, None for "no row"), the row is written only if it is unchanged
        since; otherwise only the events are, and the result is None."""
        t = now()
        with self._transaction() as db:
            if expected is not True:
                row = db.execute("SELECT updated_at FROM breakers WHERE name = ?", (name,)).fetchone()
                if (row[0] if row else None) != expected:
                    _insert_events(db, events)
                    return None
            db.execute("INSERT OR REPLACE INTO breakers (name, state, failures, successes, opened_at, last_error, "
                       "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (name, state, failures, successes, opened_at, last_error, t))
            _insert_events(db, events)
        return t

    async def breakers(self, prefix: str = "") -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT name, state, failures, successes, opened_at, last_error, updated_at "
                               "FROM breakers WHERE substr(name, 1, ?) = ? ORDER BY name",
                               (len(prefix), prefix)).fetchall()
        names = ("name", "state", "failures", "successes", "opened_at", "last_error", "updated_at")
        return [dict(zip(names, r, strict=True)) for r in rows]

    # --- incidents (opened by EMA) -------------------------------------------------------------------------
    async def load_incidents(self) -> dict[str, dict[str, Any]]:
        return {r[0]: json.loads(r[1]) for r in self.db.execute("SELECT id, record FROM incidents ORDER BY id")}

    async def save_incidents(self, records: list[dict[str, Any]], events: list[Event] | None = None) -> None:
        t = now()
        await self._write([("INSERT OR REPLACE INTO incidents (id, status, record, updated_at) VALUES (?, ?, ?, ?)",
                      (r["id"], r.get("status", "open"), _dumps(r), t)) for r in records], events)

    # --- messages (agent messaging, progressive_cli/mca/messaging.py) ----------------------------------------
    _MESSAGE_COLUMNS = ("id, sender, recipient, channel, body, status, attempts, created_at, delivered_at, error, "
                        "reply")
    # queued, or claimed by a process whose claim has lapsed (it died mid-delivery): ready to (re)deliver
    _PENDING = "(status = 'queued' OR (status = 'delivering' AND delivered_at < ?))"

    @staticmethod
    def _row_to_message(row: tuple[Any, ...]) -> Message:
        return Message(id=row[0], sender=row[1], recipient=row[2], channel=row[3], body=json.loads(row[4]),
                       status=row[5], attempts=row[6], created_at=row[7], delivered_at=row[8], error=row[9],
                       reply=_loads(row[10]))

    def _select_messages(self, where: list[str], params: list[Any], order: str, limit: int) -> list[Message]:
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.execute(f"SELECT {self._MESSAGE_COLUMNS} FROM messages {clause} ORDER BY {order} LIMIT ?",
                               (*params, limit)).fetchall()
        return [self._row_to_message(r) for r in rows]

    async def insert_messages(self, messages: list[Message], events: list[Event] | None = None) -> None:
        await self._write([(f"INSERT INTO messages ({self._MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (m.id, m.sender, m.recipient, m.channel, _dumps(m.body), m.status, m.attempts, m.created_at,
                       m.delivered_at, m.error, None if m.reply is None else _dumps(m.reply)))
                     for m in messages], events)

    async def get_message(self, message_id: str) -> Message | None:
        found = self._select_messages(["id = ?"], [message_id], "id", 1)
        return found[0] if found else None

    async def list_messages(
        self, *, agent: str | None = None, recipient: str | None = None, sender: str | None = None,
        channel: str | None = None, statuses: list[str] | None = None, limit: int = 50,
    ) -> list[Message]:
        where: list[str] = []
        params: list[Any] = []
        if agent is not None:
            where.append("(recipient = ? OR sender = ?)")
            params += [agent, agent]
        for column, value in (("recipient", recipient), ("sender", sender), ("channel", channel)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params += statuses
        return self._select_messages(where, params, "created_at DESC, rowid DESC", limit)

    async def pending_messages(self, recipient: str | None = None, *, limit: int = 100) -> list[Message]:
        where: list[str] = [self._PENDING]
        params: list[Any] = [now()]
        if recipient is not None:
            where.append("recipient = ?")
            params.append(recipient)
        return self._select_messages(where, params, "created_at, rowid", limit)

    async def claim_message(self, message_id: str, claim_until: float) -> Message | None:
        with self._transaction() as db:
            cursor = db.execute(f"UPDATE messages SET status = 'delivering', delivered_at = ? "
                                f"WHERE id = ? AND {self._PENDING}", (claim_until, message_id, now()))
            if cursor.rowcount != 1:
                return None
            row = db.execute(f"SELECT {self._MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
        return self._row_to_message(row)

    async def mark_message_delivered(self, message_id: str, reply: Any, events: list[Event] | None = None) -> None:
        await self._write([("UPDATE messages SET status = 'delivered', delivered_at = ?, attempts = attempts + 1, "
                      "error = NULL, reply = ? WHERE id = ? AND status = 'delivering'",
                      (now(), None if reply is None else _dumps(reply), message_id))], events)

    async def mark_message_failed(self, message_id: str, error: str, *, requeue: bool,
                                  events: list[Event] | None = None) -> None:
        await self._write([("UPDATE messages SET status = ?, delivered_at = NULL, attempts = attempts + 1, error = ? "
                      "WHERE id = ? AND status = 'delivering'",
                      ("queued" if requeue else "failed", error, message_id))], events)

    async def release_message(self, message_id: str) -> None:
        await self._write([("UPDATE messages SET status = 'queued', delivered_at = NULL "
                      "WHERE id = ? AND status = 'delivering'", (message_id,))], None)

    async def prune_messages(self, before: float,
                             expired: Callable[[Message], list[Event]] | None = None) -> int:
        t = now()
        with self._transaction() as db:
            rows = db.execute(f"SELECT {self._MESSAGE_COLUMNS} FROM messages WHERE created_at < ? AND {self._PENDING} "
                              "ORDER BY created_at, rowid", (before, t)).fetchall()
            events = [e for r in rows for e in expired(self._row_to_message(r))] if expired else []
            cursor = db.execute("DELETE FROM messages WHERE created_at < ? AND "
                                "(status != 'delivering' OR delivered_at < ?)", (before, t))
            _insert_events(db, events)
        return cursor.rowcount
