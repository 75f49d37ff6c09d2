"""End to end: a real daemon runs a workflow against a stopped local server until the integration's breaker
opens; the real `progressive dashboard`, driven in tmux, resets it; the daemon applies the reset."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from procs import PROGRESSIVE, cli, start_daemon, wait_for

from progressive_cli.store.sqlite import SQLiteStore

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once it is closed


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True, timeout=30).stdout


def controls(root: Path) -> list[dict]:
    store = SQLiteStore(root / ".progressive" / "state.db")
    try:
        return asyncio.run(store.controls())
    finally:
        asyncio.run(store.close())


def test_reset_a_breaker_from_the_dashboard(make_project, tmp_path) -> None:
    port = closed_port()
    project = make_project({
        "progressive.yaml": "daemon: {poll_interval: 0.2, grace: 2s}\nhealth: {interval: 1h}\n",
        "integrations.yaml": f"""
            integrations:
              - id: api
                type: http
                base_url: http://127.0.0.1:{port}
                timeout: 2s
                retry: {{max_attempts: 1}}
                circuit_breaker: {{fail_max: 2, reset_timeout: 1h}}
        """,
        "workflows/fetch.yaml": """
            name: fetch
            steps:
              - {id: get, type: api_call, integration: api, path: /things}
        """,
    })
    log = tmp_path / "daemon.log"
    daemon = start_daemon(project, log)
    session = f"progressive-e2e-{port}"
    try:
        wait_for(lambda: "daemon started" in log.read_text())
        for _ in range(2):
            assert cli(project, "run", "workflow", "fetch", "--detach").returncode == 0
        wait_for(lambda: [b for b in json.loads(cli(project, "breakers", "list", "-o", "json").stdout)
                          if b["breaker"] == "integration:api" and b["state"] == "open"])

        tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "50",
             f"env -u NO_COLOR {PROGRESSIVE} -p {project} dashboard --refresh 0.5")
        screen = lambda: tmux("capture-pane", "-p", "-t", session)  # noqa: E731
        wait_for(lambda: "health" in screen() and "executions:" in screen(), timeout=30)
        tmux("send-keys", "-t", session, "5")
        wait_for(lambda: "integration:api" in screen() and "open" in screen())
        tmux("send-keys", "-t", session, "r")
        wait_for(lambda: "Reset breaker integration:api?" in screen())
        tmux("send-keys", "-t", session, "y")
        wait_for(lambda: "applied by the daemon" in screen(), timeout=20)
        [control] = controls(project)
        assert (control["kind"], control["target"], control["status"]) == (
            "breaker.reset", "integration:api", "applied")
        assert control["requested_by"].startswith("dashboard:") and control["applied_by"].startswith("daemon:")
        breakers = json.loads(cli(project, "breakers", "list", "-o", "json").stdout)
        assert [(b["breaker"], b["state"]) for b in breakers] == [("integration:api", "closed")]
        try:
            wait_for(lambda: "● closed" in screen())
        except AssertionError:
            raise AssertionError(screen()) from None
        tmux("send-keys", "-t", session, "q")
        wait_for(lambda: subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode != 0)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    assert "control breaker.reset integration:api from dashboard:" in log.read_text()
