"""The worker loop (progressive_cli/worker.py) on a real SQLite store: claiming, leases, failures,
crashed workers, runs driven elsewhere, and several worker processes on one queue."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from progressive_cli.engine.executor import Engine
from progressive_cli.errors import StepError
from progressive_cli.store.base import Execution, new_id
from progressive_cli.worker import RUN, Worker, WorkerLock, ensure_worker, worker_paths

HOST = socket.gethostname()
DEAD = f"{HOST}:999999"  # no such process
OK = {"name": "ok", "steps": [{"id": "a", "type": "agent_call", "agent": "bot", "method": "echo", "params": {"x": 1}}],
      "outputs": {"x": "${{ steps.a.output.x }}"}}
BAD = {"name": "bad", "steps": [{"id": "a", "type": "agent_call", "agent": "bot", "method": "fail"}]}


@pytest.fixture
def hw(h: Any) -> Any:
    h.add(OK)
    h.add(BAD)

    def fail(_request: Any) -> Any:
        raise StepError("AGENT_ERROR", "nope")

    h.agents.on("fail", fail)
    return h


def _worker(h: Any, **kwargs: Any) -> tuple[Worker, list[str]]:
    lines: list[str] = []
    engine = Engine(h.workflows, h.store, agent_call=h.agents)
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("retry_delay", 0.05)
    worker = Worker(h.store, engine, write=lines.append, **kwargs)
    engine.on_event = worker.on_event
    return worker, lines


def _queue(h: Any, name: str) -> str:
    async def go() -> str:
        execution = await Engine(h.workflows, h.store).start(name, {}, status="queued")
        await h.store.enqueue(RUN, {"execution": execution.id})
        return execution.id

    return asyncio.run(go())


def _serve(worker: Worker, *, timeout: float = 20, **kwargs: Any) -> None:
    asyncio.run(asyncio.wait_for(worker.serve(**kwargs), timeout))


def test_store_lease_methods(h: Any) -> None:
    async def go() -> None:
        store = h.store
        item_id = await store.enqueue(RUN, {"execution": "x"})
        (item,) = await store.list_work()
        assert item.id == item_id and item.leased_by is None and item.attempts == 0
        claimed = await store.claim_work("w1", 30)
        assert claimed.id == item_id and await store.claim_work("w2", 30) is None
        assert not await store.extend_work(item_id, "w2", 30)  # not w2's
        assert await store.extend_work(item_id, "w1", 90)
        (item,) = await store.list_work()
        assert item.leased_by == "w1" and item.lease_until > time.time() + 60
        assert not await store.release_work(item_id, "w2")
        assert await store.release_work(item_id, "w1", time.time() + 60)  # back, but not before a minute
        assert await store.claim_work("w2", 30) is None
        assert await store.release_work(item_id, "w1") is False  # w1 no longer holds it
        (item,) = await store.list_work()
        assert item.leased_by is None and item.available_at > time.time() + 50 and item.attempts == 1

    asyncio.run(go())


def test_a_failing_run_does_not_stop_the_worker(hw: Any) -> None:
    ids = [_queue(hw, name) for name in ("ok", "bad", "ok")]
    worker, lines = _worker(hw)
    _serve(worker, drain=True)
    assert [hw.get(i).status for i in ids] == ["completed", "failed", "completed"]
    assert worker.counts == {"completed": 2, "failed": 1}
    assert asyncio.run(hw.store.queue_depth()) == 0
    assert any("step.failed a" in line and "AGENT_ERROR: nope" in line for line in lines)
    assert lines[-1].endswith("stopped: 2 completed, 1 failed")


def test_item_of_a_dead_worker_is_taken_back_at_once(hw: Any) -> None:
    execution_id = _queue(hw, "ok")
    assert asyncio.run(hw.store.claim_work(DEAD, 600)) is not None  # held for ten minutes by a dead worker
    worker, lines = _worker(hw)
    _serve(worker, drain=True)
    assert hw.get(execution_id).status == "completed"
    assert any(f"from {DEAD}, which is gone" in line for line in lines)


def test_item_of_a_live_worker_is_left_alone(hw: Any) -> None:
    _queue(hw, "ok")
    live = f"{HOST}:{os.getppid()}"
    asyncio.run(hw.store.claim_work(live, 600))
    worker, _ = _worker(hw)
    _serve(worker, drain=True)  # nothing it may run: it exits
    (item,) = asyncio.run(hw.store.list_work())
    assert item.leased_by == live and worker.counts == {}


def _seed(h: Any, workflow: str, status: str, owner: str | None) -> str:
    execution = Execution(id=new_id(), workflow=workflow, status=status, inputs={},
                          definition=h.workflows[workflow].model_dump(mode="json", by_alias=True),
                          owner=owner, lease_until=time.time() + 60 if owner else None)
    asyncio.run(h.store.create_execution(execution))
    return execution.id


def _finish_later(h: Any, execution_id: str, delay: float) -> Any:
    async def finish() -> None:
        await asyncio.sleep(delay)
        await h.store.update_execution(execution_id, status="completed", owner=None, lease_until=None)

    return finish()


def test_a_run_driven_by_another_process_keeps_its_item_until_it_ends(hw: Any) -> None:
    """`executions resume` in a terminal holds the run: the worker waits for it, then drops the item."""
    execution_id = _seed(hw, "ok", "running", f"{HOST}:{os.getppid()}")
    asyncio.run(hw.store.enqueue(RUN, {"execution": execution_id}))
    worker, lines = _worker(hw)

    async def go() -> None:
        await asyncio.gather(worker.serve(drain=True), _finish_later(hw, execution_id, 0.5))

    asyncio.run(asyncio.wait_for(go(), 20))
    assert asyncio.run(hw.store.queue_depth()) == 0
    assert any("is being run by" in line for line in lines)
    assert hw.agents.calls == []  # the worker never ran it


def test_a_queued_run_waits_for_its_workflows_concurrency(hw: Any) -> None:
    hw.add({**OK, "name": "one", "concurrency": 1})
    busy = _seed(hw, "one", "running", f"{HOST}:{os.getppid()}")
    queued = _queue(hw, "one")
    worker, _ = _worker(hw)
    started = time.monotonic()

    async def go() -> None:
        await asyncio.gather(worker.serve(drain=True), _finish_later(hw, busy, 0.5))

    asyncio.run(asyncio.wait_for(go(), 20))
    assert hw.get(queued).status == "completed" and time.monotonic() - started >= 0.5


def test_queued_runs_claimed_together_keep_their_workflows_concurrency(hw: Any) -> None:
    """Runs claimed in one batch start together, and their starts wait for a shared transaction, so the
    store alone does not show the others yet: the worker counts the runs it is starting itself."""
    hw.add({**OK, "name": "two", "concurrency": 2})

    async def slow(_request: Any) -> Any:
        await asyncio.sleep(0.05)
        return {"x": 1}

    hw.agents.on("echo", slow)
    ids = [_queue(hw, "two") for _ in range(6)]
    worker, _ = _worker(hw, concurrency=8, retry_delay=0.02)
    _serve(worker, drain=True)
    assert [hw.get(i).status for i in ids] == ["completed"] * 6
    assert hw.agents.max_active == 2


def test_a_run_that_makes_the_worker_raise_is_failed_after_three_claims(hw: Any) -> None:
    execution_id = _seed(hw, "ok", "queued", None)
    asyncio.run(hw.store.update_execution(execution_id, definition={"name": "broken"}))  # fails validation
    asyncio.run(hw.store.enqueue(RUN, {"execution": execution_id}))
    ok = _queue(hw, "ok")
    worker, lines = _worker(hw, retry_delay=0.01)
    _serve(worker, drain=True)
    execution = hw.get(execution_id)
    assert execution.status == "failed" and execution.error["kind"] == "INTERNAL"
    assert hw.get(ok).status == "completed"
    assert sum("ValidationError" in line for line in lines) == 3
    assert asyncio.run(hw.store.queue_depth()) == 0


def test_items_for_missing_runs_and_other_kinds(hw: Any) -> None:
    asyncio.run(hw.store.enqueue(RUN, {"execution": "0" * 32}))
    other = asyncio.run(hw.store.enqueue("deliver", {"message": "m"}))
    worker, lines = _worker(hw)
    _serve(worker, drain=True)
    (item,) = asyncio.run(hw.store.list_work())  # the run item was dropped; the other kind left for the daemon
    assert item.id == other and item.leased_by is None and item.available_at > time.time() + 30
    assert any("no execution" in line for line in lines)


def test_stopping_gives_runs_in_flight_back(hw: Any) -> None:
    gate = asyncio.Event()

    async def hang(_request: Any) -> Any:
        await gate.wait()

    hw.agents.on("echo", hang)
    execution_id = _queue(hw, "ok")
    worker, _ = _worker(hw)

    async def go() -> None:
        stop = asyncio.Event()
        serving = asyncio.create_task(worker.serve(stop=stop))
        while not hw.agents.calls:
            await asyncio.sleep(0.01)
        stop.set()
        await serving

    asyncio.run(asyncio.wait_for(go(), 20))
    (item,) = asyncio.run(hw.store.list_work())
    assert item.leased_by is None  # claimable at once by the next worker
    assert hw.get(execution_id).status == "running"


def test_lock_and_ensure_worker(tmp_path: Path) -> None:
    lock_path, log = worker_paths(type("S", (), {"path": tmp_path / "state.db"})(), tmp_path)
    assert (lock_path, log) == (tmp_path / "worker.lock", tmp_path / "worker.log")
    assert worker_paths(type("S", (), {"path": tmp_path / "b.db"})(), tmp_path)[0] == tmp_path / "b.worker.lock"
    mine, theirs = WorkerLock(lock_path), WorkerLock(lock_path)
    assert not theirs.taken()
    assert mine.acquire() and mine.held
    assert theirs.taken() and not theirs.acquire(wait=0.1) and theirs.holder() == os.getpid()
    assert ensure_worker(theirs, tmp_path, log, []) == (None, os.getpid())  # alive: nothing started
    mine.release()
    assert not theirs.taken() and theirs.acquire()
    theirs.release()


WORKER_SCRIPT = """
import asyncio, os, sys, time
from pathlib import Path
from progressive_cli.config.project import load_project
from progressive_cli.engine.executor import Engine
from progressive_cli.store import project_store
from progressive_cli.worker import Worker

project = load_project(Path(sys.argv[1]))
store = project_store(project)
engine = Engine(project.workflows, store)
worker = Worker(store, engine, concurrency=2, poll_interval=0.05)
engine.on_event = worker.on_event
go = Path(sys.argv[2])
Path(f"{go}.{os.getpid()}").touch()  # ready
while not go.exists():  # all start together
    time.sleep(0.01)
asyncio.run(worker.serve(drain=True))  # no lock: these workers compete for the queue
"""


@pytest.mark.e2e
def test_worker_processes_competing_for_one_queue_run_each_execution_once(make_project: Any) -> None:
    root = make_project({"workflows/nap.yaml": """
        name: nap
        steps:
          - {id: nap, type: wait, duration: 100ms}
          - {id: after, type: transform, value: 1}
    """})

    async def queue() -> list[str]:
        from progressive_cli.config.project import load_project
        from progressive_cli.store import project_store

        project = load_project(root)
        store = project_store(project)
        engine = Engine(project.workflows, store)
        ids = []
        for _ in range(24):
            execution = await engine.start("nap", {}, status="queued")
            await store.enqueue(RUN, {"execution": execution.id})
            ids.append(execution.id)
        await store.close()
        return ids

    ids = asyncio.run(queue())
    go = root / "go"
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WORKER_SCRIPT), str(root), str(go)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    deadline = time.monotonic() + 60
    while len(list(root.glob("go.*"))) < 3 and time.monotonic() < deadline:  # all loaded
        time.sleep(0.02)
    go.touch()
    logs = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs

    async def check() -> None:
        from progressive_cli.store import open_store

        store = open_store("sqlite:///.progressive/state.db", root)
        for execution_id in ids:
            execution = await store.get_execution(execution_id)
            assert execution.status == "completed"
            types = [e.type for e in await store.list_events(execution_id=execution_id, limit=100)]
            assert types.count("workflow.started") == 1 and types.count("step.started") == 2, types
            assert all(r.attempt == 1 for r in (await store.load_steps(execution_id)).values())
        assert await store.queue_depth() == 0
        await store.close()

    asyncio.run(check())
    ran = [[line.split()[3] for line in log.splitlines() if line.endswith("running it (claim 1)")] for log in logs]
    assert sorted(x for r in ran for x in r) == sorted(i[:12] for i in ids), json.dumps(logs)
    assert sum(1 for r in ran if r) >= 2, ran  # they really competed
