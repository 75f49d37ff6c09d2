"""`run workflow` and `executions ...` through CliRunner, on a throwaway project with a python agent."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from progressive_cli.errors import ExitCode

AGENT = '''
import asyncio
import json
import pathlib
import sqlite3

HERE = pathlib.Path(__file__).parent


def _log(method, context):
    with open(HERE / "calls.log", "a") as f:
        f.write(json.dumps({"method": method, "step": context["step"], "key": context["idempotency_key"]}) + "\\n")


async def handler(method, params, context):
    _log(method, context)
    if method == "echo":
        return params
    if method == "wrapped":
        return {"output": params["value"], "confidence": 0.9}
    if method == "fail":
        raise ValueError("nope")
    if method == "flaky":
        if not (HERE / "fixed").exists():
            raise RuntimeError("not yet")
        return "fixed"
    if method == "hang":
        await asyncio.sleep(10)
        return "late"
    if method == "cancel":
        db = sqlite3.connect(HERE / ".progressive" / "state.db")
        db.execute("UPDATE executions SET cancel_requested = 1 WHERE id = ?", (context["execution_id"],))
        db.commit()
        db.close()
        return "asked"
    raise ValueError(f"unknown method {method}")
'''

FILES = {
    "agents.yaml": """
        agents:
          - id: bot
            kind: python
            entrypoint: "engine_cli_agent:handler"
            capabilities: [echoing]
    """,
    "engine_cli_agent.py": AGENT,
    "workflows/greet.yaml": """
        name: greet
        inputs:
          name: {type: string, required: true}
          n: {type: number, default: 2}
        steps:
          - id: hello
            type: transform
            value: "Hello, ${{ inputs.name }}!"
          - id: echo
            type: agent_call
            agent: bot
            method: echo
            params: {n: "${{ inputs.n }}", twice: "${{ inputs.n * 2 }}"}
          - id: wrapped
            type: agent_call
            capability: echoing
            method: wrapped
            params: {value: "${{ inputs.name }}"}
        outputs:
          greeting: ${{ steps.hello.output }}
          twice: ${{ steps.echo.output.twice }}
          wrapped: ${{ steps.wrapped.output }}
    """,
    "workflows/fails.yaml": """
        name: fails
        steps:
          - {id: boom, type: agent_call, agent: bot, method: fail}
    """,
    "workflows/flaky.yaml": """
        name: flaky
        steps:
          - {id: a, type: agent_call, agent: bot, method: echo, params: {x: 1}}
          - {id: b, type: agent_call, agent: bot, method: flaky}
          - {id: c, type: agent_call, agent: bot, method: echo, params: {b: "${{ steps.b.output }}"}}
        outputs:
          c: ${{ steps.c.output }}
    """,
    "workflows/slow.yaml": """
        name: slow
        steps:
          - {id: first, type: transform, value: 1}
          - {id: hang, type: agent_call, agent: bot, method: hang}
    """,
    "workflows/cancel.yaml": """
        name: cancel
        steps:
          - {id: ask, type: agent_call, agent: bot, method: cancel}
          - {id: never, type: agent_call, agent: bot, method: echo}
    """,
    "workflows/nap.yaml": """
        name: nap
        steps:
          - {id: nap, type: wait, duration: 50ms}
          - {id: after, type: transform, value: awake}
        outputs:
          after: ${{ steps.after.output }}
    """,
}

ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def project(make_project: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    root: Path = make_project(FILES)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "engine_cli_agent", raising=False)
    yield root
    sys.modules.pop("engine_cli_agent", None)


@pytest.fixture
def run(cli: Any, project: Path) -> Any:
    def invoke(*args: str) -> Any:
        return cli("-p", str(project), *args)

    return invoke


def calls(project: Path) -> list[dict[str, Any]]:
    log = project / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def as_json(result: Any) -> Any:
    return json.loads(result.stdout)


def store_call(project: Path, fn: Any) -> Any:
    """Run `fn(store)` (a coroutine function) against the project's store."""
    from progressive_cli.store import open_store

    async def go() -> Any:
        store = open_store("sqlite:///.progressive/state.db", project)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def engine_run(project: Path, name: str, **kwargs: Any) -> Any:
    """Start a run in-process the way a daemon would, with engine options the CLI does not expose."""
    from progressive_cli.config.project import load_project
    from progressive_cli.engine.executor import Engine

    loaded = load_project(project)
    return store_call(project, lambda store: Engine(loaded.workflows, store, **kwargs).run_workflow(name, {}))


# --- run workflow -------------------------------------------------------------------------------------------
def test_run_completed_table(run: Any, project: Path) -> None:
    r = run("run", "workflow", "greet", "-i", "name=Ada", "-i", "n=3")
    assert r.exit_code == 0, r.stderr
    assert "Hello, Ada!" in r.stdout and "twice" in r.stdout
    assert "step.completed hello" in r.stderr and "step.completed echo" in r.stderr
    assert re.search(r"completed greet [0-9a-f]{32}", r.stderr)
    assert [c["method"] for c in calls(project)] == ["echo", "wrapped"]


def test_run_json_result(run: Any) -> None:
    r = run("run", "workflow", "greet", "-i", "name=Ada", "-i", "n=2.5", "-o", "json")
    assert r.exit_code == 0, r.stderr
    data = as_json(r)
    assert set(data) == {"execution", "workflow", "status", "duration_ms", "outputs", "error"}
    assert ID.match(data["execution"]) and data["workflow"] == "greet" and data["status"] == "completed"
    assert data["outputs"] == {"greeting": "Hello, Ada!", "twice": 5.0, "wrapped": "Ada"}
    assert data["error"] is None and data["duration_ms"] >= 0
    assert r.stderr == ""  # -o json and no terminal: no progress lines


def test_run_quiet(run: Any) -> None:
    r = run("run", "workflow", "greet", "-i", "name=Ada", "-q")
    assert r.exit_code == 0 and "step." not in r.stderr


def test_run_failed_exit_1(run: Any) -> None:
    r = run("run", "workflow", "fails")
    assert r.exit_code == ExitCode.FAILED
    assert "step.failed boom" in r.stderr
    assert "AGENT_ERROR: agent 'bot' failed: ValueError: nope" in r.stderr
    data = as_json(run("run", "workflow", "fails", "-o", "json"))
    assert data["status"] == "failed" and data["error"]["kind"] == "AGENT_ERROR" and data["error"]["step"] == "boom"


@pytest.mark.parametrize(("args", "message"), [
    ((), "needs input 'name'"),
    (("-i", "name=Ada", "-i", "n=abc"), "input 'n': expected a number, got 'abc'"),
    (("-i", "name=Ada", "-i", "nope=1"), "has no input 'nope'"),
    (("-i", "name"), "-i/--input 'name': expected KEY=VALUE"),
    (("-i", "name=Ada", "--timeout", "soon"), "--timeout"),
])
def test_run_bad_usage_exit_2_writes_nothing(run: Any, project: Path, args: tuple[str, ...], message: str) -> None:
    r = run("run", "workflow", "greet", *args)
    assert r.exit_code == ExitCode.INVALID, (r.stdout, r.stderr)
    assert message in r.stderr and r.stdout == ""
    assert as_json(run("executions", "list", "-o", "json")) == []


def test_run_unknown_workflow_exit_4(run: Any) -> None:
    r = run("run", "workflow", "gret")
    assert r.exit_code == ExitCode.NOT_FOUND
    assert "no workflow 'gret' (did you mean 'greet'?)" in r.stderr


def test_run_timed_out_exit_6(run: Any) -> None:
    began = time.monotonic()
    r = run("run", "workflow", "slow", "--timeout", "100ms", "-o", "json")
    assert time.monotonic() - began < 5
    assert r.exit_code == ExitCode.TIMED_OUT
    data = as_json(r)
    assert data["status"] == "timed_out" and data["error"]["kind"] == "TIMEOUT"


def test_run_cancelled_exit_7(run: Any, project: Path) -> None:
    r = run("run", "workflow", "cancel")
    assert r.exit_code == ExitCode.CANCELLED
    assert [c["method"] for c in calls(project)] == ["cancel"]


@pytest.mark.parametrize(("name", "text"), [
    ("in.json", '{"name": "Json", "n": 4}'),
    ("in.yaml", "name: Yaml\nn: 4\n"),
])
def test_run_input_file(run: Any, project: Path, name: str, text: str) -> None:
    path = project / name
    path.write_text(text)
    data = as_json(run("run", "workflow", "greet", "--input-file", str(path), "-o", "json"))
    assert data["outputs"]["twice"] == 8 and data["outputs"]["greeting"].startswith("Hello, ")
    override = as_json(run("run", "workflow", "greet", "--input-file", str(path), "-i", "n=1", "-o", "json"))
    assert override["outputs"]["twice"] == 2  # -i wins over the file


@pytest.mark.parametrize(("text", "message"), [("[1, 2]", "expected a mapping"), ("{bad: [", "not JSON or YAML")])
def test_run_bad_input_file(run: Any, project: Path, text: str, message: str) -> None:
    (project / "bad.yaml").write_text(text)
    r = run("run", "workflow", "greet", "--input-file", str(project / "bad.yaml"))
    assert r.exit_code == ExitCode.INVALID and message in r.stderr
    missing = run("run", "workflow", "greet", "--input-file", str(project / "nope.yaml"))
    assert missing.exit_code == ExitCode.INVALID and "--input-file" in missing.stderr


def worker_alive(root: Path) -> Any:
    """Hold the worker lock as a live worker would, so detached runs stay queued for it (and no real worker
    is started from these in-process tests; tests/e2e/test_run_modes.py runs real ones)."""
    from progressive_cli.worker import WorkerLock

    lock = WorkerLock(root / ".progressive" / "worker.lock")
    assert lock.acquire()
    return lock


def test_run_detach_queues_and_resume_runs_it(run: Any, project: Path) -> None:
    lock = worker_alive(project)
    r = run("run", "workflow", "greet", "-i", "name=Later", "--detach")
    assert r.exit_code == 0
    execution_id = r.stdout.strip()
    assert ID.match(execution_id)
    assert f"worker pid {os.getpid()} runs it" in r.stderr and f"executions show {execution_id}" in r.stderr
    assert calls(project) == []
    (row,) = as_json(run("executions", "list", "-o", "json"))
    assert row["id"] == execution_id and row["status"] == "queued"
    assert store_call(project, lambda s: s.queue_depth()) == 1

    done = run("executions", "resume", execution_id[:8], "-o", "json")
    assert done.exit_code == 0, done.stderr
    assert as_json(done)["outputs"]["greeting"] == "Hello, Later!"
    types = [e["type"] for e in as_json(run("executions", "logs", execution_id, "-o", "json"))]
    assert types[:2] == ["workflow.queued", "workflow.started"] and types[-1] == "workflow.completed"
    lock.release()


def test_run_detach_json(run: Any, project: Path) -> None:
    lock = worker_alive(project)
    r = run("run", "workflow", "greet", "-i", "name=Later", "--detach", "-o", "json")
    data = as_json(r)
    assert data["status"] == "queued" and ID.match(data["execution"])
    assert r.stderr == ""  # -o json off a terminal: data only
    lock.release()


# --- executions list / show / logs ---------------------------------------------------------------------------
def test_executions_list(run: Any) -> None:
    assert run("run", "workflow", "greet", "-i", "name=A").exit_code == 0
    assert run("run", "workflow", "fails").exit_code == 1
    rows = as_json(run("executions", "list", "-o", "json"))
    assert [r["workflow"] for r in rows] == ["fails", "greet"]  # newest first
    assert rows[0]["status"] == "failed" and rows[0]["failed_step"] == "boom"
    assert rows[1]["status"] == "completed" and rows[1]["failed_step"] is None
    assert [r["workflow"] for r in as_json(run("executions", "list", "-w", "greet", "-o", "json"))] == ["greet"]
    assert [r["workflow"] for r in as_json(run("executions", "list", "-s", "failed", "-o", "json"))] == ["fails"]
    assert len(as_json(run("executions", "list", "-n", "1", "-o", "json"))) == 1
    table = run("executions", "list")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "WORKFLOW", "STATUS", "STARTED", "DURATION", "S", "FAILED", "STEP"]
    assert lines[1].split()[0] == rows[0]["id"][:12]


def test_executions_list_empty(run: Any) -> None:
    r = run("executions", "list", "-o", "json")
    assert r.exit_code == 0 and as_json(r) == []


def test_executions_show(run: Any) -> None:
    execution_id = as_json(run("run", "workflow", "greet", "-i", "name=Ada", "-o", "json"))["execution"]
    data = as_json(run("executions", "show", execution_id[:10], "-o", "json"))
    assert data["execution"] == execution_id and data["status"] == "completed"
    assert data["inputs"] == {"name": "Ada", "n": 2}
    steps = {s["key"]: s for s in data["steps"]}
    assert list(steps) == ["hello", "echo", "wrapped"]
    assert steps["echo"]["output"] == {"n": 2, "twice": 4} and steps["echo"]["attempt"] == 1
    assert steps["hello"]["type"] == "transform" and steps["hello"]["status"] == "completed"
    table = run("executions", "show", execution_id)
    assert table.exit_code == 0 and "STEP" in table.stdout and "Hello, Ada!" in table.stdout


def test_executions_show_failed_step_error(run: Any) -> None:
    execution_id = as_json(run("run", "workflow", "fails", "-o", "json"))["execution"]
    data = as_json(run("executions", "show", execution_id, "-o", "json"))
    (step,) = data["steps"]
    assert step["status"] == "failed" and step["error"]["kind"] == "AGENT_ERROR"
    assert "nope" in run("executions", "show", execution_id).stdout


def test_executions_logs(run: Any) -> None:
    execution_id = as_json(run("run", "workflow", "greet", "-i", "name=Ada", "-o", "json"))["execution"]
    events = as_json(run("executions", "logs", execution_id, "-o", "json"))
    assert [e["type"] for e in events] == ["workflow.started"] + ["step.started", "step.completed"] * 3 + [
        "workflow.completed"]
    for event in events:
        assert event["specversion"] == "1.0" and event["source"] == "progressive/workflows/greet"
        assert ID.match(event["id"]) and isinstance(event["seq"], int)
    assert events[1]["subject"] == "hello" and events[0]["subject"] == execution_id
    table = run("executions", "logs", execution_id)
    assert table.exit_code == 0 and "workflow.completed" in table.stdout and "TYPE" in table.stdout


@pytest.mark.parametrize("command", [("show",), ("logs",), ("cancel",), ("resume",), ("retry",)])
def test_unknown_and_ambiguous_ids(run: Any, project: Path, command: tuple[str, ...]) -> None:
    from progressive_cli.store.base import Execution

    unknown = run("executions", *command, "0123abcd")
    assert unknown.exit_code == ExitCode.NOT_FOUND and "no execution '0123abcd'" in unknown.stderr

    async def two(store: Any) -> None:
        for suffix in ("1", "2"):
            await store.create_execution(Execution(id="abcdef" + suffix * 26, workflow="greet", status="failed",
                                                   inputs={}, definition={}))

    store_call(project, two)
    ambiguous = run("executions", *command, "abcdef")
    assert ambiguous.exit_code == ExitCode.INVALID and "is ambiguous" in ambiguous.stderr


# --- cancel ------------------------------------------------------------------------------------------------
def test_cancel_a_waiting_run(run: Any, project: Path) -> None:
    waiting = engine_run(project, "nap", wait_inline=False)
    assert waiting.status == "waiting"
    r = run("executions", "cancel", waiting.id[:12])
    assert r.exit_code == 0 and f"cancelled {waiting.id[:12]}" in r.stderr
    shown = as_json(run("executions", "show", waiting.id, "-o", "json"))
    assert shown["status"] == "cancelled" and shown["error"]["kind"] == "CANCELLED"
    types = [e["type"] for e in as_json(run("executions", "logs", waiting.id, "-o", "json"))]
    assert types[-1] == "workflow.cancelled"
    again = run("executions", "cancel", waiting.id)
    assert again.exit_code == ExitCode.INVALID and "already cancelled" in again.stderr
    resumed = run("executions", "resume", waiting.id)
    assert resumed.exit_code == ExitCode.INVALID and "executions retry" in resumed.stderr


def test_cancel_a_live_run_only_requests_it(run: Any, project: Path) -> None:
    waiting = engine_run(project, "nap", wait_inline=False)

    async def adopt(store: Any) -> None:  # another host holds the lease
        await store.update_execution(waiting.id, status="running", owner="elsewhere:1", lease_until=time.time() + 60)

    store_call(project, adopt)
    r = run("executions", "cancel", waiting.id)
    assert r.exit_code == 0 and "cancel requested" in r.stderr and "elsewhere:1" in r.stderr
    execution = store_call(project, lambda s: s.get_execution(waiting.id))
    assert execution.status == "running" and execution.cancel_requested


def test_cancel_a_run_whose_owner_died(run: Any, project: Path) -> None:
    import socket
    import subprocess

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = f"{socket.gethostname()}:{dead.stdout.strip()}"
    waiting = engine_run(project, "nap", wait_inline=False)

    async def adopt(store: Any) -> None:  # a crashed run: its lease has not run out, its process is gone
        await store.update_execution(waiting.id, status="running", owner=owner, lease_until=time.time() + 60)

    store_call(project, adopt)
    r = run("executions", "cancel", waiting.id)
    assert r.exit_code == 0 and f"cancelled {waiting.id[:12]}" in r.stderr
    assert store_call(project, lambda s: s.get_execution(waiting.id)).status == "cancelled"


def test_resume_a_live_run_is_unavailable(run: Any, project: Path) -> None:
    waiting = engine_run(project, "nap", wait_inline=False)

    async def adopt(store: Any) -> None:
        await store.update_execution(waiting.id, status="running", owner="elsewhere:1", lease_until=time.time() + 60)

    store_call(project, adopt)
    r = run("executions", "resume", waiting.id)
    assert r.exit_code == ExitCode.UNAVAILABLE and "being run by elsewhere:1" in r.stderr


# --- resume and retry ----------------------------------------------------------------------------------------
def test_resume_a_waiting_run(run: Any, project: Path) -> None:
    waiting = engine_run(project, "nap", wait_inline=False)
    r = run("executions", "resume", waiting.id, "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert as_json(r)["status"] == "completed" and as_json(r)["outputs"] == {"after": "awake"}
    again = run("executions", "resume", waiting.id)
    assert again.exit_code == 0 and "already completed" in again.stderr


def test_retry_a_failed_run_reuses_completed_steps(run: Any, project: Path) -> None:
    failed = run("run", "workflow", "flaky", "-o", "json")
    assert failed.exit_code == ExitCode.FAILED
    execution_id = as_json(failed)["execution"]
    assert as_json(failed)["error"]["step"] == "b"
    resumed = run("executions", "resume", execution_id)
    assert resumed.exit_code == ExitCode.INVALID and "executions retry" in resumed.stderr
    (project / "fixed").touch()
    r = run("executions", "retry", execution_id, "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert as_json(r)["execution"] == execution_id and as_json(r)["outputs"] == {"c": {"b": "fixed"}}
    assert [c["step"] for c in calls(project)] == ["a", "b", "b", "c"]

    again = run("executions", "retry", execution_id)
    assert again.exit_code == ExitCode.INVALID and "--from-step" in again.stderr
    r = run("executions", "retry", execution_id, "--from-step", "c")
    assert r.exit_code == 0, r.stderr
    assert [c["step"] for c in calls(project)] == ["a", "b", "b", "c", "c"]
    r = run("executions", "retry", execution_id, "--from-step", "b")
    assert r.exit_code == 0
    assert [c["step"] for c in calls(project)][5:] == ["b", "c"]
    missing = run("executions", "retry", execution_id, "--from-step", "zz")
    assert missing.exit_code == ExitCode.NOT_FOUND and "no step 'zz'" in missing.stderr


def test_retry_keeps_a_workflow_timeout(run: Any) -> None:
    first = run("run", "workflow", "slow", "--timeout", "100ms", "-o", "json")
    assert first.exit_code == ExitCode.TIMED_OUT
    began = time.monotonic()
    again = run("executions", "retry", as_json(first)["execution"], "-o", "json")
    assert time.monotonic() - began < 5  # the retried run has a time limit too, not none at all
    assert again.exit_code == ExitCode.TIMED_OUT and as_json(again)["status"] == "timed_out"


def test_retry_refuses_a_run_that_is_not_finished(run: Any, project: Path) -> None:
    waiting = engine_run(project, "nap", wait_inline=False)
    r = run("executions", "retry", waiting.id)
    assert r.exit_code == ExitCode.INVALID and "resume it instead" in r.stderr


def test_retry_from_step_refuses_a_live_run(run: Any, project: Path) -> None:
    waiting = engine_run(project, "nap", wait_inline=False)

    async def adopt(store: Any) -> None:
        await store.update_execution(waiting.id, status="running", owner="elsewhere:1", lease_until=time.time() + 60)

    store_call(project, adopt)
    r = run("executions", "retry", waiting.id, "--from-step", "nap")
    assert r.exit_code == ExitCode.UNAVAILABLE and "elsewhere:1" in r.stderr
    assert store_call(project, lambda s: s.load_steps(waiting.id))  # its records are untouched


def test_retry_a_cancelled_run(run: Any, project: Path) -> None:
    assert run("run", "workflow", "cancel").exit_code == ExitCode.CANCELLED
    (row,) = as_json(run("executions", "list", "-o", "json"))
    r = run("executions", "retry", row["id"], "-o", "json")
    assert r.exit_code == 0, r.stderr  # `ask` completed before the cancel: it is reused, `never` runs now
    assert [c["step"] for c in calls(project)] == ["ask", "never"]



LIMITED = "name: one\nconcurrency: 1\nsteps: [{id: s, type: transform, value: 1}]\n"


def _seed_running(root, owner: str) -> None:
    """Record a run of `one` that `owner` holds a live lease on."""
    import asyncio
    import time

    from progressive_cli.store import open_store
    from progressive_cli.store.base import Execution, new_id

    async def seed() -> None:
        store = open_store("sqlite:///.progressive/state.db", root)
        await store.create_execution(Execution(id=new_id(), workflow="one", status="running", inputs={},
                                               definition={}, owner=owner, lease_until=time.time() + 60))
        await store.close()

    asyncio.run(seed())


def test_workflow_concurrency_limit(cli, make_project) -> None:
    """A run beyond `concurrency` is refused while another is live; queueing is always allowed."""
    import os
    import socket

    root = make_project({"workflows/one.yaml": LIMITED})
    _seed_running(root, f"{socket.gethostname()}:{os.getpid()}")  # a live owner: this test process
    r = cli("-p", str(root), "run", "workflow", "one", "-q")
    assert r.exit_code == 5 and "already has 1 run(s) in progress (concurrency: 1)" in r.stderr
    lock = worker_alive(root)
    r = cli("-p", str(root), "run", "workflow", "one", "-q", "--detach")
    assert r.exit_code == 0
    lock.release()


def test_dead_owner_does_not_hold_a_concurrency_slot(cli, make_project) -> None:
    import socket

    root = make_project({"workflows/one.yaml": LIMITED})
    _seed_running(root, f"{socket.gethostname()}:999999")  # no such process
    r = cli("-p", str(root), "run", "workflow", "one", "-q")
    assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize(("content", "fragment"), [
    (b"this is not a database" * 50, "is not a usable progressive state store"),
])
def test_corrupt_state_file_is_a_clear_error(cli, make_project, content: bytes, fragment: str) -> None:
    root = make_project({"workflows/one.yaml": LIMITED})
    (root / ".progressive").mkdir()
    (root / ".progressive" / "state.db").write_bytes(content)
    for args in (("run", "workflow", "one", "-q"), ("executions", "list")):
        r = cli("-p", str(root), *args)
        assert r.exit_code == 5, (args, r.stderr)
        assert fragment in r.stderr and "Traceback" not in r.stderr
    assert (root / ".progressive" / "state.db").read_bytes() == content  # left as it was


def test_foreign_sqlite_file_is_refused_untouched(cli, make_project) -> None:
    import sqlite3

    root = make_project({"workflows/one.yaml": LIMITED})
    (root / ".progressive").mkdir()
    path = root / ".progressive" / "state.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    db.commit()
    db.close()
    before = path.read_bytes()
    r = cli("-p", str(root), "executions", "list")
    assert r.exit_code == 5 and "not a progressive state store" in r.stderr
    assert path.read_bytes() == before
