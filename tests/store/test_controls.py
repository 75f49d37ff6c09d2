"""Operator controls on the SQLite store: each action applied, who applies it (a live daemon, or the asking
process when there is none or it does not take it in time), failures carried back with their exit code."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from progressive_cli import controls
from progressive_cli.errors import ExitCode, ProgressiveError, UnavailableError
from progressive_cli.store.base import Event, Execution
from progressive_cli.store.sqlite import SQLiteStore


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "state.db")
    yield s
    run(s.close())


def execution(id: str, status: str, **extra) -> Execution:
    return Execution(id=id, workflow="wf", status=status, inputs={}, definition={"id": "wf", "steps": []},
                     created_at=1.0, updated_at=1.0, **extra)


async def ask(store, kind: str, target: str, payload=None, *, wait: float = 0.0):
    control_id = await controls.request(store, kind, target, payload, by="cli:test")
    return await controls.settle(store, control_id, kind, wait=wait, by="cli:test")


def test_breaker_open_and_reset_are_applied_here_without_a_daemon(store) -> None:
    row = run(ask(store, "breaker.open", "integration:api", {"hold": None, "reset_timeout": 30.0}))
    assert row["status"] == "applied" and row["applied_by"] == "cli:test"
    assert row["result"]["state"] == "open" and row["result"]["previous"] == "closed"
    assert run(store.breakers())[0]["state"] == "open"
    row = run(ask(store, "breaker.reset", "integration:api"))
    assert row["result"]["previous"] == "open" and run(store.breakers())[0]["state"] == "closed"
    types = [e.type for e in run(store.list_events(limit=100))]
    assert types == ["control.requested", "breaker.state", "control.applied"] * 2
    assert [r["status"] for r in run(store.controls())] == ["applied", "applied"]


def test_cancel_marks_a_stopped_run_and_asks_a_live_owner(store) -> None:
    run(store.create_execution(execution("queued1", "queued")))
    row = run(ask(store, "execution.cancel", "queued1"))
    assert row["result"]["status"] == "cancelled"
    assert run(store.get_execution("queued1")).status == "cancelled"
    me = f"{socket.gethostname()}:{os.getpid()}"
    run(store.create_execution(execution("live1", "running", owner=me, lease_until=time.time() + 60)))
    row = run(ask(store, "execution.cancel", "live1"))
    assert row["result"]["cancel_requested"] is True and row["result"]["status"] == "running"
    assert run(store.cancel_requested("live1"))
    with pytest.raises(ProgressiveError, match="already cancelled") as caught:
        run(ask(store, "execution.cancel", "queued1"))
    assert caught.value.exit_code == ExitCode.INVALID
    with pytest.raises(ProgressiveError, match="no execution nope") as caught:
        run(ask(store, "execution.cancel", "nope"))
    assert caught.value.exit_code == ExitCode.NOT_FOUND
    failed = run(store.controls(statuses=["failed"]))
    assert len(failed) == 2 and failed[0]["result"] == {"exit_code": int(ExitCode.NOT_FOUND)}


def test_dlq_replay_and_purge(store) -> None:
    run(store.publish([Event("order.paid", {"n": n}) for n in range(3)]))
    stored = run(store.list_events(limit=10))
    run(store.bus_commit("audit", offset=3, done=[], retries=[],
                         dead=[(e, 3, "boom") for e in stored], counts={"dead_lettered": 3}))
    letters = run(store.dead_letters())
    assert len(letters) == 3
    assert run(ask(store, "dlq.replay", letters[0]["id"], {"ids": [letters[0]["id"]]}))["result"] == {"replayed": 1}
    assert run(ask(store, "dlq.purge", "all", {"before": None}))["result"] == {"purged": 2}
    assert run(store.dead_letters()) == []


def test_a_daemon_only_control_needs_a_daemon(store) -> None:
    with pytest.raises(UnavailableError, match="no daemon is running"):
        run(ask(store, "daemon.reload", "daemon"))
    assert run(store.controls())[0]["status"] == "failed"


def live_daemon_row(store) -> None:
    """A daemon that is alive (this very process, heartbeating) but never applies anything."""
    run(store.save_daemon("d1", socket.gethostname(), os.getpid(), time.time(), {}))


def test_a_live_daemon_gets_the_wait_then_the_asker_applies_it(store) -> None:
    live_daemon_row(store)
    assert run(controls.live_daemon(store))["id"] == "d1"
    started = time.monotonic()
    row = run(ask(store, "breaker.reset", "integration:api", wait=0.3))
    assert time.monotonic() - started >= 0.3
    assert row["applied_by"] == "cli:test"
    with pytest.raises(UnavailableError, match=r"has not applied daemon\.reload"):
        run(ask(store, "daemon.reload", "daemon", wait=0.1))
    assert run(store.controls(statuses=["pending"]))[0]["kind"] == "daemon.reload"


def test_what_a_daemon_applies_is_seen_by_the_asker(store) -> None:
    live_daemon_row(store)
    reloads: list[str] = []

    async def reload() -> str:
        reloads.append("yes")
        return "reloaded: 3 workflow(s)"

    daemon = controls.Applier(store, "daemon:test", reload=reload)

    async def go():
        asker = asyncio.ensure_future(ask(store, "daemon.reload", "daemon", wait=5.0))
        await asyncio.sleep(0.1)
        applied = await daemon.apply()
        return applied, await asker

    applied, row = run(go())
    assert [r["kind"] for r in applied] == ["daemon.reload"] and reloads == ["yes"]
    assert row["applied_by"] == "daemon:test" and row["result"] == "reloaded: 3 workflow(s)"


def test_stale_or_stopped_daemons_are_not_live(store) -> None:
    run(store.save_daemon("old", socket.gethostname(), os.getpid(), 1.0, {}))
    store.db.execute("UPDATE daemons SET seen_at = ?", (time.time() - 60,))
    assert run(controls.live_daemon(store)) is None
    run(store.save_daemon("gone", socket.gethostname(), os.getpid(), 1.0, {}, stopped=True))
    assert run(controls.live_daemon(store)) is None
    dead = 2**22 + 12345  # above pid_max: no such process on this host
    run(store.save_daemon("dead", socket.gethostname(), dead, time.time(), {}))
    assert run(controls.live_daemon(store)) is None


def test_unknown_kind_is_refused(store) -> None:
    with pytest.raises(ProgressiveError, match=r"unknown control 'breaker\.smash'"):
        run(controls.request(store, "breaker.smash", "x", by="cli:test"))


def test_errors_are_stored_redacted(store, monkeypatch) -> None:
    from progressive_cli.config.secrets import REDACTOR

    secret = "s3cr3t-control-token-7741"
    REDACTOR.register(secret)

    async def leaky(self, row):
        raise RuntimeError(f"POST https://ops:hunter2@hooks.example/x with {secret} refused")

    monkeypatch.setattr(controls.Applier, "_breaker_reset", leaky)
    with pytest.raises(ProgressiveError, match="RuntimeError: POST") as caught:
        run(ask(store, "breaker.reset", "integration:api"))
    assert secret not in caught.value.message and "hunter2" not in caught.value.message
    row = run(store.controls())[0]
    assert row["status"] == "failed" and secret not in row["error"] and "hunter2" not in row["error"]
    failed = [e for e in run(store.list_events(limit=10)) if e.type == "control.failed"]
    assert failed and secret not in str(failed[0].data) and "hunter2" not in str(failed[0].data)


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_control_whose_daemon_died_half_way_is_applied_by_the_asker_at_once(store) -> None:
    """The daemon claimed the control, then was killed: the asker does not wait out its wait, then ten
    seconds more, then fail; it sees the daemon gone and applies the control itself."""
    proc = sleeper()
    try:
        run(store.save_daemon("d1", socket.gethostname(), proc.pid, time.time(), {}))

        async def go():
            control_id = await controls.request(store, "breaker.reset", "integration:api", by="cli:test")
            claimed = await store.claim_controls(f"daemon:{socket.gethostname()}:{proc.pid}", ids=[control_id])
            assert [r["id"] for r in claimed] == [control_id]
            asker = asyncio.ensure_future(controls.settle(store, control_id, "breaker.reset", wait=5.0,
                                                          by="cli:test"))
            await asyncio.sleep(0.2)
            assert not asker.done()  # the daemon is alive and working on it: the asker waits
            proc.kill()
            proc.wait()
            started = time.monotonic()
            row = await asker
            return row, time.monotonic() - started

        row, took = run(go())
    finally:
        proc.kill()
        proc.wait()
    assert took < 2.0 and row["status"] == "applied" and row["applied_by"] == "cli:test"
    assert row["result"]["state"] == "closed"


def test_a_claim_left_by_a_dead_daemon_is_taken_over_by_the_asker(store) -> None:
    dead = 2**22 + 12345  # above pid_max: no such process on this host
    control_id = run(store.add_control("dlq.purge", "all", {"before": None}, "cli:test"))
    run(store.claim_controls(f"daemon:{socket.gethostname()}:{dead}", ids=[control_id]))
    started = time.monotonic()
    row = run(controls.settle(store, control_id, "dlq.purge", wait=5.0, by="cli:test"))
    assert time.monotonic() - started < 2.0
    assert row["applied_by"] == "cli:test" and row["result"] == {"purged": 0}


def test_a_reload_whose_daemon_died_half_way_fails_at_once(store) -> None:
    proc = sleeper()
    try:
        run(store.save_daemon("d1", socket.gethostname(), proc.pid, time.time(), {}))

        async def go():
            control_id = await controls.request(store, "daemon.reload", "daemon", by="cli:test")
            await store.claim_controls(f"daemon:{socket.gethostname()}:{proc.pid}", ids=[control_id])
            asker = asyncio.ensure_future(controls.settle(store, control_id, "daemon.reload", wait=5.0,
                                                          by="cli:test"))
            await asyncio.sleep(0.2)
            proc.kill()
            proc.wait()
            started = time.monotonic()
            try:
                await asker
            finally:
                assert time.monotonic() - started < 2.0

        with pytest.raises(UnavailableError, match=r"stopped while applying daemon\.reload") as caught:
            run(go())
    finally:
        proc.kill()
        proc.wait()
    assert caught.value.exit_code == ExitCode.UNAVAILABLE
    assert run(store.controls())[0]["status"] == "failed"  # not left for a daemon to apply a minute later


def test_a_killed_daemon_not_yet_reaped_is_not_live(store) -> None:
    """A zombie still answers kill(pid, 0): it must count as dead, as `daemon status` already had it."""
    from progressive_cli.engine.executor import _owner_is_dead

    proc = sleeper()
    try:
        run(store.save_daemon("d1", socket.gethostname(), proc.pid, time.time(), {}))
        assert run(controls.live_daemon(store))["id"] == "d1"
        proc.kill()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # it has exited; nobody reaped it yet
        assert not _owner_is_dead(f"{socket.gethostname()}:{os.getpid()}")
        assert _owner_is_dead(f"{socket.gethostname()}:{proc.pid}")
        assert run(controls.live_daemon(store)) is None
    finally:
        proc.kill()
        proc.wait()


def test_ctrl_c_while_a_control_is_settled_exits_130_not_0(cli, make_project, monkeypatch) -> None:
    root = make_project({})

    async def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(controls, "settle", interrupted)
    r = cli("-p", str(root), "breakers", "reset", "api")
    assert r.exit_code == ExitCode.INTERRUPTED
    assert "control " in r.stderr and "not seen applied" in r.stderr and r.stderr.rstrip().endswith("interrupted")


def test_daemon_status_shows_every_time_as_iso(cli, make_project) -> None:
    root = make_project({})
    store = SQLiteStore(root / ".progressive" / "state.db")
    job = {"runs": 3, "errors": 0, "missed": 1, "last_run": 1.0e9, "last_ms": 2.0, "last_error": None,
           "last_missed": 1.0e9, "next_run": 1.0e9}
    run(store.save_daemon("d1", socket.gethostname(), os.getpid(), time.time(), {"jobs": {"health": job}}))
    run(store.close())
    r = cli("-p", str(root), "daemon", "status", "-o", "json")
    jobs = json.loads(r.stdout)["jobs"]
    assert jobs[0]["last_missed"] == jobs[0]["last_run"] == jobs[0]["next_run"] == "2001-09-09T01:46:40+00:00"


def test_the_scheduler_check_after_a_daemon_crash(cli, make_project) -> None:
    root = make_project({"workflows/hourly.yaml": """
        name: hourly
        triggers: [{type: interval, every: 1h}]
        steps: [{id: t, type: transform, value: 1}]
    """})
    store = SQLiteStore(root / ".progressive" / "state.db")
    run(store.save_daemon("d1", socket.gethostname(), 2**22 + 12345, time.time() - 30, {}))  # killed: no pid
    run(store.close())
    r = cli("-p", str(root), "health", "--check", "scheduler", "-o", "json")
    check = json.loads(r.stdout)["checks"][0]
    assert r.exit_code == 2 and check["status"] == "unhealthy"
    assert check["detail"].endswith("without a clean shutdown; 1 cron/interval trigger(s) do not fire")
    (root / "workflows" / "hourly.yaml").unlink()
    check = json.loads(cli("-p", str(root), "health", "--check", "scheduler", "-o", "json").stdout)["checks"][0]
    assert check["status"] == "degraded" and check["detail"].endswith("; no cron/interval triggers")
