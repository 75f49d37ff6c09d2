"""The daemon in this process: its log stays in its format whatever libraries log, a job cut short by
the shutdown leaves no traceback, job errors are kept redacted, and its heartbeat row ends stopped."""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from progressive_cli.config.project import load_project
from progressive_cli.config.secrets import REDACTOR
from progressive_cli.daemon import Daemon
from progressive_cli.engine.executor import Engine
from progressive_cli.store import project_store
from progressive_cli.worker import Worker

SECRET = "s3cr3t-daemon-token-0451"


@pytest.fixture
def project(make_project) -> Path:
    return make_project({"progressive.yaml": "daemon: {poll_interval: 0.05, grace: 1s}\nhealth: {interval: 1h}\n"},
                        base=False)


def no_log_handlers(monkeypatch) -> None:
    """As in `progressive daemon run`: no logging handler (the one pytest adds for the test would take the
    records that Python otherwise prints bare on stderr)."""
    monkeypatch.setattr(logging.root, "handlers", [])


def make_daemon(root: Path, lines: list[str]) -> tuple[Daemon, object]:
    project = load_project(root)
    store = project_store(project)
    engine = Engine(project.workflows, store)
    worker = Worker(store, engine, poll_interval=0.05, write=lines.append, log_format="json")
    engine.on_event = worker.on_event
    return Daemon(project, store, engine, worker), store


async def run_until(daemon: Daemon, lines: list[str], done, timeout: float = 10.0) -> None:
    task = asyncio.ensure_future(daemon.run())
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.05)
    daemon.stop.set()
    await task


def test_what_libraries_log_stays_in_the_daemons_json_log(project, capsys, monkeypatch) -> None:
    no_log_handlers(monkeypatch)
    lines: list[str] = []
    daemon, store = make_daemon(project, lines)

    async def slow_controls() -> None:  # longer than its 0.5 s interval: APScheduler skips runs
        await asyncio.sleep(1.2)

    daemon.controls_job = slow_controls  # type: ignore[method-assign]

    async def go() -> None:
        def logged() -> bool:
            return any("a run was skipped" in line for line in lines)

        task = asyncio.ensure_future(run_until(daemon, lines, logged))
        await asyncio.sleep(0.3)
        logging.getLogger("asyncio").warning("Executing %s took %.3f seconds", "<Task>", 0.25)
        warnings.warn("an old API", UserWarning, stacklevel=1)
        await task
        await store.close()

    asyncio.run(go())
    assert capsys.readouterr().err == ""  # nothing bare on stderr, in the middle of the log
    records = [json.loads(line) for line in lines]  # every line a JSON object
    assert any(r.get("logger") == "asyncio" and r["level"] == "warning" and "took 0.250" in r["message"]
               for r in records)
    assert any(r.get("logger") == "py.warnings" and "an old API" in r["message"] for r in records)
    skipped = [r for r in records if r.get("job") == "controls" and "skipped" in r["message"]]
    assert skipped and all(r["level"] == "warning" for r in skipped)
    assert type(logging.lastResort).__name__ != "_LogBridge"  # put back when the daemon stops


def test_a_job_cut_short_by_the_shutdown_leaves_no_traceback(project, capsys, monkeypatch) -> None:
    no_log_handlers(monkeypatch)
    lines: list[str] = []
    daemon, store = make_daemon(project, lines)
    started = asyncio.Event()

    async def long_health() -> None:
        started.set()
        await asyncio.sleep(30)

    daemon.health_job = long_health  # type: ignore[method-assign]

    async def go() -> None:
        await run_until(daemon, lines, started.is_set)

    asyncio.run(go())  # ends the health job still in flight
    err = capsys.readouterr().err
    assert "Traceback" not in err and "raised an exception" not in err
    assert not any("failed" in line for line in lines)
    rows = asyncio.run(store.daemons())
    assert rows[0]["stopped_at"] is not None  # a clean shutdown says so
    asyncio.run(store.close())


def test_a_failing_jobs_error_is_kept_redacted(project) -> None:
    REDACTOR.register(SECRET)
    lines: list[str] = []
    daemon, store = make_daemon(project, lines)

    async def failing_retention() -> None:
        raise RuntimeError(f"cannot reach https://user:pw@db.example/x with {SECRET}")

    daemon.retention_job = failing_retention  # type: ignore[method-assign]

    async def go() -> dict:
        await run_until(daemon, lines, lambda: daemon.jobs.get("retention", {}).get("errors"))
        rows = await store.daemons()
        await store.close()
        return rows[0]

    row = asyncio.run(go())
    error = row["info"]["jobs"]["retention"]["last_error"]
    assert error.startswith("RuntimeError: cannot reach") and SECRET not in error and ":pw@" not in error
    assert SECRET not in json.dumps(row) and not any(SECRET in line for line in lines)


def test_an_alert_sink_failure_is_a_json_line_in_a_json_log(capsys) -> None:
    from progressive_cli.health.alerts import _send

    sink = SimpleNamespace(type="command", command=["/nonexistent/alert-hook"], timeout=1.0)
    notice = {"check": "state-store", "state": "firing", "status": "unhealthy", "detail": "x", "fired_at": 1.0,
              "failures": 3, "at": 1.0}
    asyncio.run(_send(sink, notice, "json"))
    record = json.loads(capsys.readouterr().err)
    assert record["level"] == "error" and record["sink"] == "command" and record["check"] == "state-store"
    assert record["message"].startswith("alert sink command failed: FileNotFoundError")
