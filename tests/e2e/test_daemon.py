"""`progressive daemon run` as a real subprocess: triggers, detached runs, SIGTERM, SIGKILL and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
PROGRESSIVE = str(Path(sys.executable).parent / "progressive")


def cli(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROGRESSIVE, "-p", str(root), *args], capture_output=True, text=True, timeout=timeout,
                          env={k: v for k, v in os.environ.items() if not k.startswith("PROGRESSIVE_")})


def start(root: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([PROGRESSIVE, "-p", str(root), "daemon", "run"], stdout=out, stderr=out,
                                env={k: v for k, v in os.environ.items() if not k.startswith("PROGRESSIVE_")})


def wait_for(predicate, timeout: float = 30.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def finished(root: Path, run_id: str) -> dict | None:
    execution = json.loads(cli(root, "executions", "show", run_id, "-o", "json").stdout)
    return execution if execution["status"] == "completed" else None


def executions(root: Path) -> list[dict]:
    return json.loads(cli(root, "executions", "list", "-o", "json").stdout or "[]")


@pytest.fixture
def project(make_project) -> Path:
    return make_project({
        "progressive.yaml": "daemon: {poll_interval: 0.2, grace: 5s}\nhealth: {interval: 1h}\n",
        "workflows/tick.yaml": """
            name: tick
            triggers:
              - {type: interval, every: 1s, inputs: {n: 1}}
              - {type: event, event: "order.*", filter: "event.data.qty > 1", inputs: {n: 2}}
            inputs:
              n: {type: integer, default: 0}
            steps:
              - {id: t, type: transform, value: "${{ inputs.n }}"}
            outputs:
              n: ${{ steps.t.output }}
        """,
        "workflows/slow.yaml": """
            name: slow
            steps:
              - {id: first, type: transform, value: one}
              - {id: pause, type: wait, duration: 3s}
              - {id: last, type: transform, value: done}
            outputs:
              first: ${{ steps.first.output }}
              last: ${{ steps.last.output }}
        """,
    })


def test_triggers_detached_runs_and_a_graceful_sigterm(project, tmp_path) -> None:
    log = tmp_path / "daemon.log"
    daemon = start(project, log)
    try:
        wait_for(lambda: "daemon started" in log.read_text())
        assert cli(project, "daemon", "run").returncode == 5  # one daemon per store
        ran = wait_for(lambda: [e for e in executions(project) if e["workflow"] == "tick"
                                and e["status"] == "completed"])
        assert ran  # the interval trigger fired and its run completed
        queued = cli(project, "run", "workflow", "slow", "--detach")
        assert queued.returncode == 0
        run_id = queued.stdout.strip()
        cli(project, "events", "publish", "order.created", "-d", '{"qty": 1}')  # filtered out
        cli(project, "events", "publish", "order.created", "-d", '{"qty": 5}')
        wait_for(lambda: log.read_text().count("on order.created") == 1)
        done = wait_for(lambda: finished(project, run_id))
        assert done["outputs"]["last"] == "done"
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
    assert code == 0
    text = log.read_text()
    assert "SIGTERM: no new work" in text and text.rstrip().endswith("daemon stopped")
    assert "Traceback" not in text
    cached = json.loads(cli(project, "health", "--cached", "-o", "json").stdout)
    assert {c["name"] for c in cached["checks"]} >= {"state-store", "event-bus"}  # the daemon's health job ran


def test_sigkill_mid_run_then_restart_resumes_without_losing_steps(project, tmp_path) -> None:
    (project / "workflows" / "tick.yaml").unlink()  # only the slow run here
    log = tmp_path / "daemon.log"
    daemon = start(project, log)
    try:
        wait_for(lambda: "daemon started" in log.read_text())
        run_id = cli(project, "run", "workflow", "slow", "--detach").stdout.strip()
        wait_for(lambda: "step.completed first" in log.read_text())
        first = json.loads(cli(project, "executions", "show", run_id, "-o", "json").stdout)
        before = {s["key"]: s for s in first["steps"]}["first"]
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
    assert json.loads(cli(project, "executions", "show", run_id, "-o", "json").stdout)["status"] == "running"
    daemon = start(project, log)
    try:
        done = wait_for(lambda: finished(project, run_id), timeout=45)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    after = {s["key"]: s for s in done["steps"]}["first"]
    assert after["output"] == before["output"] == "one"
    events = json.loads(cli(project, "executions", "logs", run_id, "-o", "json").stdout)
    completed = [e["data"]["key"] for e in events if e["type"] == "step.completed"]
    assert completed == ["first", "pause", "last"]  # `first` ran once: the restart resumed after it
    assert done["outputs"] == {"first": "one", "last": "done"}


def test_background_start_status_stop(project) -> None:
    (project / "workflows" / "tick.yaml").unlink()
    assert cli(project, "daemon", "status").returncode == 5
    started = cli(project, "daemon", "start")
    try:
        assert started.returncode == 0 and "daemon started: pid" in started.stderr
        again = cli(project, "daemon", "start")
        assert again.returncode == 5 and "already running" in again.stderr
        status = json.loads(cli(project, "daemon", "status", "-o", "json").stdout)
        assert status["running"] and status["pid"] and status["queue_depth"] == 0
        run = cli(project, "run", "workflow", "slow", "--detach")
        assert f"worker pid {status['pid']} runs it" in run.stderr  # the daemon is the worker
    finally:
        stopped = cli(project, "daemon", "stop")
    assert stopped.returncode == 0 and "daemon stopped" in stopped.stderr
    assert cli(project, "daemon", "status").returncode == 5
    assert not (project / ".progressive" / "daemon.pid").exists()
    assert "daemon stopped" in (project / ".progressive" / "daemon.log").read_text()


def test_sighup_reloads_a_valid_config_and_refuses_an_invalid_one(project, tmp_path) -> None:
    tick = project / "workflows" / "tick.yaml"
    good = tick.read_text()
    tick.unlink()
    log = tmp_path / "daemon.log"
    daemon = start(project, log)
    try:
        wait_for(lambda: "daemon started" in log.read_text())
        tick.write_text("name: tick\nsteps:\n  - {id: t, type: transform, value: ${{ nope( }}\n")
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in log.read_text())
        assert daemon.poll() is None  # it goes on with the old config
        tick.write_text(good)
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded: 2 workflow(s), 1 scheduled trigger(s)" in log.read_text())
        wait_for(lambda: [e for e in executions(project) if e["workflow"] == "tick" and e["status"] == "completed"])
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    assert "workflows/tick.yaml:3:" in log.read_text()  # the refusal names the file and line
