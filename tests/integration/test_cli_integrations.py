"""`integrations call|test|status`, `breakers list|reset|open`, and api_call steps in a workflow, against a
real local HTTP server, through the CLI as an operator types it."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

CANARY = "CANARY-cli-5e1d"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, data: object) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.seen.append({"method": self.command, "path": self.path,
                                 "auth": self.headers.get("Authorization"),
                                 "key": self.headers.get("Idempotency-Key"), "body": body})
        if "/fail" in self.path:
            self._answer(500, {"error": "boom"})
        elif "/missing" in self.path:
            self._answer(404, {"error": "no such thing"})
        else:
            self._answer(200, {"path": self.path, "echo": body})

    do_GET = do_POST = _handle


class _Server(ThreadingHTTPServer):
    seen: list[dict]


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.seen = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def project(make_project, server, monkeypatch):
    monkeypatch.setenv("API_TOKEN", CANARY)
    port = server.server_address[1]
    return make_project({
        "integrations.yaml": f"""
            integrations:
              - id: api
                type: http
                base_url: http://127.0.0.1:{port}/v1
                auth: {{type: bearer, token: "${{env:API_TOKEN}}"}}
                circuit_breaker: {{fail_max: 2, reset_timeout: 60s}}
                retry: {{max_attempts: 2, initial_delay: 10ms, max_delay: 20ms}}
                health: {{path: /health, conditions: ["status == 200", "body.path == '/v1/health'"]}}
              - id: closed-port
                type: http
                base_url: http://127.0.0.1:9
                retry: {{max_attempts: 1}}
        """,
        "workflows/fetch.yaml": """
            name: fetch
            inputs:
              food: {type: string}
            steps:
              - id: lookup
                type: api_call
                integration: api
                method: GET
                path: /foods
                query: {q: "${{ inputs.food }}"}
              - id: save
                type: api_call
                integration: api
                method: POST
                path: /saved
                json: {name: "${{ steps.lookup.output.body.path }}"}
                idempotency_key: true
            outputs:
              path: "${{ steps.lookup.output.body.path }}"
              saved: "${{ steps.save.output.status }}"
        """,
    })


def _store_text(root) -> str:
    db = sqlite3.connect(root / ".progressive" / "state.db")
    try:
        rows = []
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            rows.extend(str(r) for r in db.execute(f"SELECT * FROM {table}"))
        return "\n".join(rows)
    finally:
        db.close()


def test_call_prints_the_body_and_sends_the_auth(cli, project, server) -> None:
    r = cli("-p", str(project), "integrations", "call", "api", "GET", "/foods", "--params", '{"q": "oats"}')
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == {"path": "/v1/foods?q=oats", "echo": None}
    assert r.stderr.startswith("200 in ")
    assert server.seen[-1]["auth"] == f"Bearer {CANARY}"
    r = cli("-p", str(project), "integrations", "call", "api", "POST", "/items", "--data", '{"a": 1}',
            "--idempotency-key", "k-1", "-o", "json")
    answer = json.loads(r.stdout)
    assert answer["status"] == 200 and answer["body"]["echo"] == {"a": 1} and answer["attempts"] == 1
    assert server.seen[-1]["key"] == "k-1"
    assert CANARY not in r.stdout + r.stderr


def test_call_errors_have_one_line_and_exit_codes(cli, project, server) -> None:
    r = cli("-p", str(project), "integrations", "call", "api", "GET", "/missing")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.strip() == "error: API_ERROR: integration 'api': GET /missing answered 404 Not Found"
    r = cli("-p", str(project), "integrations", "call", "closed-port", "GET", "/x")
    assert r.exit_code == 5 and r.stderr.startswith("error: NETWORK_ERROR: integration 'closed-port': GET /x failed")
    r = cli("-p", str(project), "integrations", "call", "api", "FETCH", "/x")
    assert r.exit_code == 2 and "METHOD 'FETCH'" in r.stderr
    r = cli("-p", str(project), "integrations", "call", "api", "GET", "/x", "--params", "[1]")
    assert r.exit_code == 2 and "--params: expected a JSON object" in r.stderr
    r = cli("-p", str(project), "integrations", "call", "nope", "GET", "/x")
    assert r.exit_code == 4 and "no integration 'nope'" in r.stderr


def test_breaker_opens_is_listed_reset_and_forced_open(cli, project, server) -> None:
    p = str(project)
    for _ in range(2):  # 2 attempts per call: the first call's two 500s open it (fail_max 2)
        r = cli("-p", p, "integrations", "call", "api", "GET", "/fail")
    assert r.exit_code == 5 and "CIRCUIT_BREAKER_OPEN" in r.stderr and "half-open in" in r.stderr
    assert len([s for s in server.seen if s["path"] == "/v1/fail"]) == 2  # nothing sent while open
    rows = {b["breaker"]: b for b in json.loads(cli("-p", p, "breakers", "list", "-o", "json").stdout)}
    assert rows["integration:api"]["state"] == "open" and rows["integration:api"]["failures"] == 2
    assert 0 < rows["integration:api"]["half_open_in_s"] <= 60
    assert "API_ERROR" in rows["integration:api"]["last_error"]
    table = cli("-p", p, "breakers", "list").stdout
    assert "○ open" in table  # a symbol and a word, not colour alone

    r = cli("-p", p, "breakers", "reset", "api")
    assert r.exit_code == 0 and "integration:api: open -> closed" in r.stderr
    assert cli("-p", p, "integrations", "call", "api", "GET", "/ok").exit_code == 0

    r = cli("-p", p, "breakers", "open", "integration:api")
    assert r.exit_code == 0
    before = len(server.seen)
    r = cli("-p", p, "integrations", "call", "api", "GET", "/ok")
    assert r.exit_code == 5 and "held open by an operator until reset" in r.stderr
    assert len(server.seen) == before
    row = {b["breaker"]: b for b in json.loads(cli("-p", p, "breakers", "list", "-o", "json").stdout)}
    assert row["integration:api"]["half_open_in_s"] is None and row["integration:api"]["held_open"] is True
    assert cli("-p", p, "breakers", "open", "api", "--for", "soon").exit_code == 2
    assert cli("-p", p, "breakers", "reset", "closed-port").exit_code == 0
    assert cli("-p", p, "breakers", "reset", "agent:npa@npa#0").exit_code == 2

    text = _store_text(project)
    assert text.count("breaker.state") >= 3 and CANARY not in text


def test_test_and_status(cli, project, server) -> None:
    p = str(project)
    r = cli("-p", p, "integrations", "test", "api", "-o", "json")
    assert r.exit_code == 0, r.stdout
    [row] = json.loads(r.stdout)
    assert row["ok"] and row["detail"] == "GET /health -> 200" and row["latency_ms"] < 1000
    r = cli("-p", p, "integrations", "test", "-o", "json")
    assert r.exit_code == 5
    rows = {x["integration"]: x for x in json.loads(r.stdout)}
    assert rows["api"]["ok"] and not rows["closed-port"]["ok"] and rows["closed-port"]["error"] == "NETWORK_ERROR"

    cli("-p", p, "integrations", "call", "api", "GET", "/ok")
    cli("-p", p, "integrations", "call", "api", "GET", "/missing")
    cli("-p", p, "integrations", "call", "api", "GET", "/fail")  # 500, retried once: 2 requests
    status = {x["integration"]: x for x in json.loads(cli("-p", p, "integrations", "status", "-o", "json").stdout)}
    api = status["api"]
    assert (api["requests"], api["success"], api["failure"], api["retries"]) == (4, 1, 3, 1)
    assert api["breaker"] == "open" and api["breaker_opens"] == 1 and api["p95_ms"] > 0


def test_a_workflow_calls_the_api_with_an_idempotency_key(cli, project, server) -> None:
    r = cli("-p", str(project), "run", "workflow", "fetch", "-i", "food=rolled oats", "-o", "json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["outputs"] == {"path": "/v1/foods?q=rolled+oats", "saved": 200}
    post = server.seen[-1]
    assert post["method"] == "POST" and post["body"] == {"name": "/v1/foods?q=rolled+oats"}
    assert post["key"] == f"{result['execution']}:save"
    assert CANARY not in _store_text(project)


# --- found in review ------------------------------------------------------------------------------------
def test_a_query_in_the_path_is_kept_and_merged(cli, project, server) -> None:
    r = cli("-p", str(project), "integrations", "call", "api", "GET", "/foods?c=1", "--params", '{"d": 2}',
            "-o", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["body"]["path"] == "/v1/foods?c=1&d=2"


def test_bad_headers_are_usage_errors_and_never_trip_the_breaker(cli, project, server) -> None:
    p = str(project)
    assert cli("-p", p, "integrations", "call", "api", "GET", "/x", "-H", "X-Foo: a\nb").exit_code == 2
    assert cli("-p", p, "integrations", "call", "api", "GET", "/x", "-H", "X-Foo: é").exit_code == 2
    rows = {b["breaker"]: b for b in json.loads(cli("-p", p, "breakers", "list", "-o", "json").stdout)}
    assert rows["integration:api"]["state"] == "closed" and rows["integration:api"]["failures"] == 0


def test_a_non_ascii_header_in_a_step_fails_the_step_not_the_process(cli, make_project, server, monkeypatch) -> None:
    monkeypatch.setenv("API_TOKEN", CANARY)
    port = server.server_address[1]
    root = make_project({
        "integrations.yaml": f"""
            integrations:
              - id: api
                type: http
                base_url: http://127.0.0.1:{port}
        """,
        "workflows/w.yaml": """
            name: w
            steps:
              - id: call
                type: api_call
                integration: api
                path: /x
                headers: {X-Name: "José"}
        """,
    })
    r = cli("-p", str(root), "run", "workflow", "w", "-o", "json")
    assert r.exit_code == 1
    error = json.loads(r.stdout)["error"]
    assert error["kind"] == "STEP_ERROR" and "cannot make the request" in error["message"]


def test_echoed_secrets_are_masked_in_output_and_store(cli, project, server) -> None:
    p = str(project)
    r = cli("-p", p, "integrations", "call", "api", "GET", "/echo", "-H", f"X-Echo: {CANARY}")
    assert r.exit_code == 0 and CANARY not in r.stdout
    r = cli("-p", p, "run", "workflow", "fetch", "-i", f"food={CANARY}", "-o", "json")
    assert r.exit_code == 0 and CANARY not in r.stdout  # the server echoed the input (a secret) back
    db = sqlite3.connect(project / ".progressive" / "state.db")
    outputs = " ".join(str(o) for (o,) in db.execute("SELECT output FROM steps"))
    db.close()
    assert "***" in outputs and CANARY not in outputs


def test_a_named_disabled_integration_is_tested(cli, make_project, server) -> None:
    port = server.server_address[1]
    root = make_project({"integrations.yaml": f"""
        integrations:
          - id: spare
            type: http
            base_url: http://127.0.0.1:{port}
            enabled: false
    """})
    r = cli("-p", str(root), "integrations", "test", "spare", "-o", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["ok"]
    r = cli("-p", str(root), "integrations", "test", "-o", "json")
    assert r.exit_code == 0 and json.loads(r.stdout) == []
