"""`progressive health` and `health history` against real servers: Nagios exit codes, history, trends, and
a database check that follows its server down and up."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        status = 200 if self.server.up else 503  # type: ignore[attr-defined]
        raw = json.dumps({"status": "UP" if status == 200 else "DOWN"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def api() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.up = True  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def project(make_project, api, postgres_dsn):
    port = api.server_address[1]
    return make_project({
        "integrations.yaml": f"""
            integrations:
              - id: status-api
                type: http
                base_url: http://127.0.0.1:{port}
                health: {{path: /health, conditions: ["status == 200", "body.status == 'UP'"]}}
              - id: quiet-api
                type: http
                base_url: http://127.0.0.1:9
              - id: pg
                type: postgres
                dsn: {postgres_dsn}
                connect_timeout: 1s
              - id: needs-secret
                type: redis
                url: ${{env:HEALTH_TEST_UNSET}}
                enabled: false
        """,
    })


def checks(result) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_health_exit_codes_follow_the_servers(cli, project, api, postgres_server) -> None:
    p = str(project)
    r = cli("-p", p, "health", "-o", "json")
    assert r.exit_code == 0, r.stdout
    got = checks(r)
    assert set(got) == {"state-store", "mca-coordination", "agent-communication", "event-bus", "scheduler",
                        "external-apis/status-api", "external-apis/quiet-api", "database-connectivity/pg"}
    assert got["external-apis/status-api"]["detail"].startswith("GET /health -> 200")
    assert got["external-apis/quiet-api"]["detail"] == "breaker closed"  # no health request: not called
    assert got["database-connectivity/pg"]["detail"].startswith("PostgreSQL")

    api.up = False  # the API answers 503 DOWN: its conditions fail
    r = cli("-p", p, "health", "-o", "json", "--check", "external-apis")
    assert r.exit_code == 2 and json.loads(r.stdout)["status"] == "unhealthy"
    assert "status == 200" in checks(r)["external-apis/status-api"]["detail"]
    api.up = True

    with postgres_server.stopped():
        r = cli("-p", p, "health", "-c", "database-connectivity/pg")
        assert r.exit_code == 2 and "✗ unhealthy" in r.stdout and "overall: ✗ unhealthy" in r.stderr
    assert cli("-p", p, "health", "-c", "database-connectivity").exit_code == 0

    assert cli("-p", p, "health", "-c", "nope").exit_code == 4
    assert cli("-p", p, "health", "--fail-on", "sometimes").exit_code == 2


def test_history_cached_and_trends(cli, project, api) -> None:
    p = str(project)
    for up in (True, False, True, True):
        api.up = up
        cli("-p", p, "health", "-c", "external-apis/status-api")
    r = cli("-p", p, "health", "--cached", "-o", "json")
    assert r.exit_code == 0
    row = checks(r)["external-apis/status-api"]
    assert row["status"] == "healthy" and row["age_s"] >= 0
    r = cli("-p", p, "health", "history", "--hours", "1", "-o", "json")
    [trend] = [t for t in json.loads(r.stdout) if t["name"] == "external-apis/status-api"]
    assert trend["runs"] == 4 and trend["availability_pct"] == 75.0 and trend["last"] == "healthy"
    table = cli("-p", p, "health", "history").stdout
    assert "AVAIL_%" in table and "external-apis/status-api" in table


def test_sparkline_and_trends_units() -> None:
    from progressive_cli.health.history import sparkline, trends

    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, 5, 5]) == "▁▁▁" and sparkline([]) == ""
    assert len(sparkline(list(range(1000)))) == 40
    rows = trends([{"name": "a", "status": "healthy", "response_ms": 10.0, "at": 1},
                   {"name": "a", "status": "unhealthy", "response_ms": 30.0, "at": 2},
                   {"name": "a", "status": "degraded", "response_ms": 20.0, "at": 3}])
    assert rows == [{"name": "a", "runs": 3, "availability_pct": 66.67, "avg_ms": 20.0, "max_ms": 30.0,
                     "last": "degraded", "response_series": [10.0, 30.0, 20.0]}]


def test_an_alert_fires_once_then_resolves(cli, project, api, tmp_path) -> None:
    p = str(project)
    log = tmp_path / "notices.jsonl"
    (project / "progressive.yaml").write_text(
        "alerts:\n  failure_threshold: 2\n  success_threshold: 2\n  reminder_interval: 1h\n  sinks:\n"
        "    - {type: log}\n    - {type: event}\n"
        f"    - {{type: command, command: [sh, -c, 'cat >> {log}; echo >> {log}']}}\n")
    states = [False, False, False, False, True, True, True]
    errs = []
    for up in states:
        api.up = up
        errs.append(cli("-p", p, "health", "-c", "external-apis/status-api").stderr)
    alerts = [line for e in errs for line in e.splitlines() if line.startswith("[")]
    assert alerts[0].startswith("[ALERT] external-apis/status-api: unhealthy:") and len(alerts) == 2
    assert alerts[1].startswith("[RESOLVED] external-apis/status-api: healthy")
    assert "[ALERT]" in errs[1] and "[RESOLVED]" in errs[5]  # after 2 failures, after 2 successes
    notices = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert [n["state"] for n in notices] == ["firing", "resolved"]
    events = [json.loads(line) for line in
              cli("-p", p, "events", "tail", "--type", "integration.alert", "-o", "json").stdout.splitlines()]
    assert [(e["subject"], e["data"]["state"]) for e in events] == [
        ("external-apis/status-api", "firing"), ("external-apis/status-api", "resolved")]
