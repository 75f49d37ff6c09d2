"""The daemon's health job against a real server: stopping Valkey turns its check unhealthy and fires one
alert; restarting it turns the check healthy and sends one resolved notice."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from procs import cli, start_daemon, wait_for

pytestmark = pytest.mark.e2e
def notices(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def cached_status(root: Path) -> str:
    checks = json.loads(cli(root, "health", "--cached", "-o", "json").stdout or '{"checks": []}')["checks"]
    return next((c["status"] for c in checks if c["name"] == "database-connectivity/cache"), "none")


def test_the_daemon_alerts_once_when_a_server_stops_and_resolves_when_it_returns(make_project, redis_server,
                                                                                tmp_path) -> None:
    sink = tmp_path / "notices.jsonl"
    project = make_project({
        "progressive.yaml": f"""
            daemon: {{poll_interval: 0.2, grace: 2s}}
            health: {{interval: 1s, timeout: 3s}}
            alerts:
              failure_threshold: 2
              success_threshold: 2
              reminder_interval: 1h
              sinks:
                - {{type: log}}
                - {{type: event}}
                - {{type: command, command: [sh, -c, 'cat >> {sink}; echo >> {sink}']}}
        """,
        "integrations.yaml": f"""
            integrations:
              - {{id: cache, type: redis, url: "{redis_server.url}", connect_timeout: 1s}}
        """,
    })
    log = tmp_path / "daemon.log"
    daemon = start_daemon(project, log)
    try:
        wait_for(lambda: cached_status(project) == "healthy", 45)
        with redis_server.stopped():
            wait_for(lambda: cached_status(project) == "unhealthy", 45)
            wait_for(lambda: [n["state"] for n in notices(sink)] == ["firing"])
            time.sleep(2.5)  # more unhealthy rounds: no second alert (the reminder is an hour away)
            assert [n["state"] for n in notices(sink)] == ["firing"]
        wait_for(lambda: cached_status(project) == "healthy")
        wait_for(lambda: [n["state"] for n in notices(sink)] == ["firing", "resolved"])
        time.sleep(2.5)
        assert [n["state"] for n in notices(sink)] == ["firing", "resolved"]
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    firing, resolved = notices(sink)
    assert firing["check"] == resolved["check"] == "database-connectivity/cache"
    assert firing["status"] == "unhealthy" and resolved["status"] == "healthy"
    text = log.read_text()
    assert text.count("[ALERT] database-connectivity/cache: unhealthy") == 1
    assert text.count("[RESOLVED] database-connectivity/cache: healthy") == 1
    events = [json.loads(line) for line in
              cli(project, "events", "tail", "--type", "integration.alert", "-o", "json").stdout.splitlines()]
    assert [e["data"]["state"] for e in events] == ["firing", "resolved"]
    history = json.loads(cli(project, "health", "history", "--check", "database-connectivity/cache",
                             "-o", "json").stdout)
    assert history[0]["runs"] >= 6 and 0 < history[0]["availability_pct"] < 100
