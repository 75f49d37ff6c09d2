"""`progressive db`, `integrations test` and database_operation steps against real PostgreSQL and Redis
servers, through the CLI as an operator types it."""

from __future__ import annotations

import json
import sqlite3
import uuid

import pytest

CANARY = "CANARY-db-77aa"
HOSTILE = "x'); DROP TABLE meals; --"


@pytest.fixture
def project(make_project, postgres_dsn, redis_url, monkeypatch):
    # trust auth: the server ignores the password, so the canary travels in the DSN for real
    monkeypatch.setenv("PG_DSN", postgres_dsn.replace("postgresql://postgres@", f"postgresql://postgres:{CANARY}@"))
    monkeypatch.setenv("REDIS_URL", redis_url)
    table = f"meals_{uuid.uuid4().hex[:8]}"
    root = make_project({
        "integrations.yaml": """
            integrations:
              - id: pg
                type: postgres
                dsn: ${env:PG_DSN}
                pool: {min_size: 1, max_size: 4}
                connect_timeout: 2s
              - id: cache
                type: redis
                url: ${env:REDIS_URL}
        """,
        "workflows/log-meal.yaml": f"""
            name: log-meal
            inputs:
              user: {{type: string}}
              meal: {{type: string}}
            steps:
              - id: save
                type: database_operation
                integration: pg
                operation: execute
                params:
                  sql: "INSERT INTO {table} (user_id, meal) VALUES (%s, %s) RETURNING id"
                  params: ["${{{{ inputs.user }}}}", "${{{{ inputs.meal }}}}"]
              - id: remember
                type: database_operation
                integration: cache
                operation: set
                params: {{key: "last-meal:${{{{ inputs.user }}}}", value: "${{{{ inputs.meal }}}}", ttl: 60}}
              - id: count
                type: database_operation
                integration: pg
                operation: query
                params:
                  sql: "SELECT count(*) AS n, max(meal) AS meal FROM {table} WHERE user_id = %s"
                  params: ["${{{{ inputs.user }}}}"]
            outputs:
              id: "${{{{ steps.save.output.rows[0].id }}}}"
              count: "${{{{ steps.count.output[0].n }}}}"
              meal: "${{{{ steps.count.output[0].meal }}}}"
        """,
    })
    return root, table


def _store_text(root) -> str:
    db = sqlite3.connect(root / ".progressive" / "state.db")
    try:
        return "\n".join(str(value) for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                         for row in db.execute(f"SELECT * FROM {t}") for value in row)
    finally:
        db.close()


def test_db_is_read_only_unless_write(cli, project) -> None:
    root, table = project
    p = str(root)
    create = json.dumps({"sql": f"CREATE TABLE {table} (id serial PRIMARY KEY, user_id text, meal text)"})
    r = cli("-p", p, "db", "pg", "execute", "--params", create)
    assert r.exit_code == 2 and "pg.execute writes; it needs --write" in r.stderr
    assert cli("-p", p, "db", "pg", "execute", "--params", create, "--write").exit_code == 0
    insert = json.dumps({"sql": f"INSERT INTO {table} (user_id, meal) VALUES (%s, %s)", "params": ["u1", "oats"]})
    r = cli("-p", p, "db", "pg", "execute", "--params", insert, "--write", "-o", "json")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"rowcount": 1}
    # `query` is allowed without --write, but runs in a READ ONLY transaction
    sneaky = json.dumps({"sql": f"DELETE FROM {table} RETURNING id"})
    r = cli("-p", p, "db", "pg", "query", "--params", sneaky)
    assert r.exit_code == 1 and r.stderr.startswith("error: DATABASE_ERROR: ") and "--write" in r.stderr
    r = cli("-p", p, "db", "pg", "query", "--params", json.dumps({"sql": f"SELECT user_id, meal FROM {table}"}))
    assert r.exit_code == 0 and "oats" in r.stdout and "USER_ID" in r.stdout  # rows as a table
    r = cli("-p", p, "db", "pg", "query", "--params", json.dumps({"sql": f"SELECT meal FROM {table}"}), "-o", "json")
    assert json.loads(r.stdout) == [{"meal": "oats"}]

    assert cli("-p", p, "db", "cache", "set", "--params", '{"key": "k", "value": "v"}').exit_code == 2
    assert cli("-p", p, "db", "cache", "set", "--params", '{"key": "k", "value": "v"}', "--write").exit_code == 0
    r = cli("-p", p, "db", "cache", "get", "--params", '{"key": "k"}')
    assert r.exit_code == 0 and r.stdout == "v\n"

    assert cli("-p", p, "db", "cache", "drop_all").exit_code == 2
    assert cli("-p", p, "db", "pg", "query", "--params", "not json").exit_code == 2
    r = cli("-p", p, "db", "pg", "query", "--params", '{"sql": 5}')
    assert r.exit_code == 2 and "parameter 'sql' must be str" in r.stderr
    assert cli("-p", p, "db", "nope", "query").exit_code == 4
    assert CANARY not in _store_text(root)


def test_a_workflow_writes_hostile_input_as_data(cli, project) -> None:
    root, table = project
    p = str(root)
    cli("-p", p, "db", "pg", "execute", "--write", "--params",
        json.dumps({"sql": f"CREATE TABLE {table} (id serial PRIMARY KEY, user_id text, meal text)"}))
    r = cli("-p", p, "run", "workflow", "log-meal", "-i", "user=ada", "-i", f"meal={HOSTILE}", "-o", "json")
    assert r.exit_code == 0, r.stderr
    outputs = json.loads(r.stdout)["outputs"]
    assert outputs == {"id": 1, "count": 1, "meal": HOSTILE}
    r = cli("-p", p, "db", "cache", "get", "--params", '{"key": "last-meal:ada"}')
    assert r.stdout == HOSTILE + "\n"
    status = {x["integration"]: x for x in json.loads(cli("-p", p, "integrations", "status", "-o", "json").stdout)}
    assert status["pg"]["requests"] >= 3 and status["pg"]["failure"] == 0 and status["cache"]["requests"] >= 2
    text = _store_text(root)
    assert CANARY not in text and HOSTILE in text  # the step outputs are stored; the password is not


def test_integrations_test_follows_the_servers(cli, project, postgres_server) -> None:
    p = str(project[0])
    r = cli("-p", p, "integrations", "test", "-o", "json")
    assert r.exit_code == 0, r.stdout
    rows = {x["integration"]: x for x in json.loads(r.stdout)}
    assert rows["pg"]["detail"].startswith("PostgreSQL 18") and rows["cache"]["ok"]
    with postgres_server.stopped():
        r = cli("-p", p, "integrations", "test", "pg", "-o", "json")
        assert r.exit_code == 5
        [row] = json.loads(r.stdout)
        assert row["error"] == "NETWORK_ERROR" and "cannot connect" in row["detail"] and CANARY not in r.stdout
        r = cli("-p", p, "db", "pg", "query", "--params", '{"sql": "SELECT 1"}')
        assert r.exit_code == 5 and CANARY not in r.stderr
    assert cli("-p", p, "integrations", "test", "pg").exit_code == 0
