"""`progressive daemon run` as a real subprocess: triggers, detached runs, SIGTERM, SIGKILL and resume."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from procs import cli, start_daemon, wait_for

pytestmark = pytest.mark.e2e
start = start_daemon


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
    finally:  # killed at once, well inside the 3 s wait (reading the run first could outlast it on a busy machine)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
    first = json.loads(cli(project, "executions", "show", run_id, "-o", "json").stdout)
    assert first["status"] == "running"
    before = {s["key"]: s for s in first["steps"]}["first"]
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
    scheduler = json.loads(cli(project, "health", "--check", "scheduler", "-o", "json").stdout)["checks"][0]
    assert scheduler["status"] == "healthy" and scheduler["detail"].startswith("no daemon is running")
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
        refused = cli(project, "daemon", "reload")  # the command validates first, here, and asks nothing
        assert refused.returncode == 2 and refused.stderr.startswith("workflows/tick.yaml:3:")
        tick.write_text(good)
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded: 2 workflow(s), 1 scheduled trigger(s)" in log.read_text())
        reloaded = cli(project, "daemon", "reload")
        assert reloaded.returncode == 0 and "applied by the daemon" in reloaded.stderr
        assert "reloaded: 2 workflow(s), 1 scheduled trigger(s)" in reloaded.stderr
        wait_for(lambda: [e for e in executions(project) if e["workflow"] == "tick" and e["status"] == "completed"])
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    assert "workflows/tick.yaml:3:" in log.read_text()  # the refusal names the file and line


def test_operator_controls_are_applied_by_the_daemon(make_project, tmp_path) -> None:
    """Breaker open/reset, cancel and DLQ replay go through the store to the daemon, which applies them; its
    log is JSON lines; `daemon status` shows its jobs; the `scheduler` check follows it to its SIGKILL."""
    project = make_project({
        "progressive.yaml": "daemon: {poll_interval: 0.2, grace: 5s}\nhealth: {interval: 1h}\n",
        "integrations.yaml": "integrations:\n  - {id: api, type: http, base_url: 'http://127.0.0.1:9'}\n",
        "workflows/hourly.yaml": """
            name: hourly
            triggers: [{type: interval, every: 1h}]
            steps: [{id: t, type: transform, value: 1}]
        """,
        "workflows/long.yaml": """
            name: long
            steps:
              - {id: first, type: transform, value: one}
              - {id: pause, type: wait, duration: 20s}
              - {id: last, type: transform, value: done}
        """,
    })
    log = tmp_path / "daemon.log"
    daemon = start(project, log, "--log-format", "json")
    try:
        wait_for(lambda: "daemon started" in log.read_text())
        opened = cli(project, "breakers", "open", "api", "-o", "json")
        assert opened.returncode == 0, opened.stderr
        assert "applied by the daemon (daemon:" in opened.stderr and json.loads(opened.stdout)["state"] == "open"
        reset = cli(project, "breakers", "reset", "api", "-o", "json")
        assert "applied by the daemon" in reset.stderr and json.loads(reset.stdout)["previous"] == "open"
        breakers = json.loads(cli(project, "breakers", "list", "-o", "json").stdout)
        assert [(b["breaker"], b["state"]) for b in breakers] == [("integration:api", "closed")]

        run_id = cli(project, "run", "workflow", "long", "--detach").stdout.strip()
        wait_for(lambda: "step.completed" in log.read_text() and run_id[:12] in log.read_text())
        cancelled = cli(project, "executions", "cancel", run_id, "-o", "json")
        assert cancelled.returncode == 0 and "applied by the daemon" in cancelled.stderr
        assert json.loads(cancelled.stdout)["cancel_requested"] is True
        wait_for(lambda: json.loads(cli(project, "executions", "show", run_id, "-o", "json").stdout)["status"]
                 == "cancelled")

        replay = cli(project, "dlq", "replay", "--all", "-o", "json")
        assert replay.returncode == 0 and json.loads(replay.stdout) == {"replayed": 0}
        assert "applied by the daemon" in replay.stderr

        status = json.loads(cli(project, "daemon", "status", "-o", "json").stdout)
        assert status["running"] and status["heartbeat_age_s"] < 10
        jobs = {j["job"]: j for j in status["jobs"]}
        assert {"heartbeat", "controls", "health", "event-bus", "retention", "hourly#0:interval"} <= set(jobs)
        assert jobs["controls"]["runs"] > 0 and jobs["controls"]["errors"] == 0
        check = json.loads(cli(project, "health", "--check", "scheduler", "-o", "json").stdout)["checks"][0]
        assert check["status"] == "healthy" and f"daemon pid {daemon.pid}" in check["detail"]
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line is a JSON object
    assert {"time", "level", "component", "pid", "message"} <= set(lines[0])
    applied = [entry for entry in lines if entry.get("kind") == "breaker.open"]
    assert applied and applied[0]["target"] == "integration:api"
    assert any(entry.get("event") == "workflow.cancelled" for entry in lines)
    check = cli(project, "health", "--check", "scheduler", "-o", "json")
    assert check.returncode == 2  # unhealthy: the daemon died and an interval trigger no longer fires
    assert "without a clean shutdown" in json.loads(check.stdout)["checks"][0]["detail"]
    reset = cli(project, "breakers", "reset", "api")  # no daemon: this command applies it
    assert reset.returncode == 0 and "applied by this command" in reset.stderr
