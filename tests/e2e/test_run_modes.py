"""`run workflow --mode sync|detach|hybrid` and the worker, with the installed `progressive` in subprocesses.

The project's agents log every call (execution, step, idempotency key); `gated` steps wait for a file,
so a test decides when a run may finish instead of guessing at timings.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from progressive_cli.worker import WorkerLock

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent / "progressive"
ID = re.compile(r"^[0-9a-f]{32}$")

AGENT = '''
import json, os, pathlib, time

def handle(method, params, context):
    with open(os.environ["CALL_LOG"], "a") as log:
        log.write(json.dumps({"execution": context["execution_id"], "step": context["step"],
                              "key": context["idempotency_key"]}) + "\\n")
    if method == "gated":  # wait for the test to open the gate
        gate = pathlib.Path(os.environ["GATE"])
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    if method == "fail":
        raise ValueError("nope")
    return {"output": params.get("value")}
'''

# two agents (+3) and two APIs (+4): complexity 7, complex, so event-driven; `realtime` makes it hybrid.
# The API steps are skipped unless `online`, so the workflow runs offline.
BIG = """
name: {name}
realtime: {realtime}
inputs:
  online: {{type: boolean, default: false}}
steps:
  - {{id: a, type: agent_call, agent: alpha, method: {method}, params: {{value: 1}}}}
  - {{id: b, type: agent_call, agent: beta, method: echo, params: {{value: 2}}}}
  - {{id: x, type: api_call, integration: api1, if: "${{{{ inputs.online }}}}"}}
  - {{id: y, type: api_call, integration: api2, if: "${{{{ inputs.online }}}}"}}
outputs:
  sum: ${{{{ steps.a.output + steps.b.output }}}}
"""
FILES = {
    "agents.yaml": """
        agents:
          - {id: alpha, kind: python, entrypoint: "mode_agent:handle", timeout: 90s}
          - {id: beta, kind: python, entrypoint: "mode_agent:handle", timeout: 90s}
    """,
    "integrations.yaml": """
        integrations:
          - {id: api1, type: http, base_url: "http://127.0.0.1:9"}
          - {id: api2, type: http, base_url: "http://127.0.0.1:9"}
    """,
    "mode_agent.py": AGENT,
    "workflows/big.yaml": BIG.format(name="big", realtime="false", method="echo"),
    "workflows/gated.yaml": BIG.format(name="gated", realtime="false", method="gated"),
    "workflows/live.yaml": BIG.format(name="live", realtime="true", method="echo"),
    "workflows/fails.yaml": """
        name: fails
        steps:
          - {id: boom, type: agent_call, agent: alpha, method: fail}
    """,
}


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    for rel, text in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(textwrap.dedent(text).lstrip("\n"))
    yield tmp_path
    # no worker outlives its test: drained ones exit by themselves; one that does not is killed
    lock = WorkerLock(tmp_path / ".progressive" / "worker.lock")
    deadline = time.monotonic() + 15
    while lock.path.exists() and lock.taken() and time.monotonic() < deadline:
        time.sleep(0.1)
    if lock.path.exists() and lock.taken() and (pid := lock.holder()):
        os.kill(pid, signal.SIGKILL)
        pytest.fail(f"worker {pid} was still running after the test")


def _env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESSIVE_") and k != "NO_COLOR"}
    env.update({"CALL_LOG": str(project / "calls.log"), "GATE": str(project / "gate"),
                "PROGRESSIVE_PROJECT": str(project)})
    return env


def cli(project: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], cwd=project, env=_env(project), capture_output=True, text=True,
                          timeout=120, **kwargs)  # type: ignore[call-overload]


def show(project: Path, execution_id: str) -> dict:
    r = cli(project, "executions", "show", execution_id, "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def wait_finished(project: Path, execution_id: str, deadline_s: float = 60) -> dict:
    deadline = time.monotonic() + deadline_s
    while True:
        data = show(project, execution_id)
        if data["status"] in ("completed", "failed", "timed_out", "cancelled") or time.monotonic() > deadline:
            return data
        time.sleep(0.2)


def calls(project: Path) -> list[dict]:
    log = project / "calls.log"
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def worker_log(project: Path) -> str:
    log = project / ".progressive" / "worker.log"
    return log.read_text() if log.exists() else ""


def test_event_driven_strategy_detaches_and_a_worker_runs_it(project: Path) -> None:
    r = cli(project, "run", "workflow", "gated")
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("mode: detach (strategy event-driven, complexity 7 complex)\n")
    execution_id = r.stdout.strip()
    assert ID.match(execution_id), r.stdout
    assert re.search(r"queued; started worker pid \d+ \(log .*worker\.log\)", r.stderr)
    assert show(project, execution_id)["status"] in ("queued", "running")  # it cannot finish before the gate
    (project / "gate").touch()
    data = wait_finished(project, execution_id)
    assert data["status"] == "completed" and data["outputs"] == {"sum": 3}
    assert [c["step"] for c in calls(project)] == ["a", "b"]
    assert f"{execution_id[:12]} workflow.completed gated" in worker_log(project)


def test_detach_json_is_the_queued_summary(project: Path) -> None:
    r = cli(project, "run", "workflow", "big", "--detach", "-o", "json")
    assert r.returncode == 0 and r.stderr == ""  # data only
    data = json.loads(r.stdout)
    assert data["status"] == "queued" and data["workflow"] == "big"
    assert wait_finished(project, data["execution"])["status"] == "completed"


def test_two_detached_runs_at_once_each_run_exactly_once(project: Path) -> None:
    procs = [subprocess.Popen([str(BIN), "run", "workflow", "big", "--mode", "detach", "-q"], cwd=project,
                              env=_env(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        ids.append(out.strip())
    assert all(ID.match(i) for i in ids) and ids[0] != ids[1]
    for execution_id in ids:
        assert wait_finished(project, execution_id)["status"] == "completed"
        r = cli(project, "executions", "logs", execution_id, "-o", "json")
        types = Counter(e["type"] for e in json.loads(r.stdout))
        assert types["workflow.started"] == 1 and types["step.started"] == 2 and types["workflow.completed"] == 1
    per_run = Counter((c["execution"], c["step"]) for c in calls(project))
    assert per_run == {(i, s): 1 for i in ids for s in ("a", "b")}
    assert worker_log(project).count("running it") == 2


def test_sync_mode_overrides_the_strategy(project: Path) -> None:
    r = cli(project, "run", "workflow", "big", "--mode", "sync")
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("mode: sync (--mode; strategy event-driven, complexity 7 complex)\n")
    assert "step.completed a" in r.stderr and "sum" in r.stdout
    assert not (project / ".progressive" / "worker.log").exists()  # no worker: it ran here
    r = cli(project, "run", "workflow", "big", "--mode", "SYNC", "-o", "json")
    assert r.returncode == 0 and r.stderr == "" and json.loads(r.stdout)["status"] == "completed"


def _hybrid(project: Path, *args: str) -> tuple[int, list[str]]:
    """Run `run workflow … ` with stdout and stderr in one pipe, so their order shows."""
    r = subprocess.run([str(BIN), "run", "workflow", *args], cwd=project, env=_env(project),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    return r.returncode, r.stdout.splitlines()


def test_hybrid_acknowledges_then_streams_then_reports(project: Path) -> None:
    code, lines = _hybrid(project, "live")  # realtime and complex: the strategy is hybrid
    assert code == 0, lines
    assert lines[0] == "mode: hybrid (strategy hybrid, complexity 8 complex)"
    (ack,) = [i for i, line in enumerate(lines) if ID.match(line)]
    execution_id = lines[ack]
    first_step = next(i for i, line in enumerate(lines) if line.startswith("step.completed a "))
    result = lines.index(f"completed live {execution_id}")
    assert ack < first_step < result
    assert f"workflow.started live {execution_id}" in lines and "sum    3" in lines


def test_hybrid_failure_exits_1(project: Path) -> None:
    code, lines = _hybrid(project, "fails", "--mode", "hybrid")
    assert code == 1, lines
    assert lines[0] == "mode: hybrid (--mode; strategy direct, complexity 0 simple)"
    assert ID.match(lines[1]) and re.match(rf"accepted {lines[1]}; (started )?worker pid \d+", lines[2])
    assert any(line.startswith("step.failed boom") and "nope" in line for line in lines)
    assert lines[-1] == f"failed fails {lines[1]}: AGENT_ERROR: agent 'alpha' failed: ValueError: nope"


def test_hybrid_json_prints_one_document(project: Path) -> None:
    r = cli(project, "run", "workflow", "live", "-o", "json")
    assert r.returncode == 0 and r.stderr == ""
    data = json.loads(r.stdout)
    assert data["status"] == "completed" and data["outputs"] == {"sum": 3}


def test_ctrl_c_stops_following_not_the_run(project: Path) -> None:
    proc = subprocess.Popen([str(BIN), "run", "workflow", "gated", "--mode", "hybrid"], cwd=project,
                            env=_env(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    execution_id = proc.stdout.readline().strip()  # acknowledged before the run ends
    assert ID.match(execution_id)
    deadline = time.monotonic() + 60
    while not calls(project) and time.monotonic() < deadline:  # the worker is in step `a`
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"stopped following; the run goes on in the background: progressive executions show {execution_id}" \
        in err
    (project / "gate").touch()
    assert wait_finished(project, execution_id)["status"] == "completed"


def test_bad_mode_is_a_usage_error(project: Path) -> None:
    r = cli(project, "run", "workflow", "big", "--mode", "later")
    assert r.returncode == 2 and "Invalid value for '--mode'" in r.stderr and "'later'" in r.stderr
    r = cli(project, "run", "workflow", "big", "--mode", "sync", "--detach")
    assert r.returncode == 2 and r.stderr == "error: --detach and --mode sync disagree; give one of them\n"
    assert calls(project) == []


def test_a_killed_worker_is_replaced_and_the_run_completes(project: Path) -> None:
    r = cli(project, "run", "workflow", "gated")
    assert r.returncode == 0, r.stderr
    execution_id = r.stdout.strip()
    pid = int(re.search(r"started worker pid (\d+)", r.stderr).group(1))  # type: ignore[union-attr]
    deadline = time.monotonic() + 60
    while not calls(project) and time.monotonic() < deadline:  # mid-run: inside step `a`
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert show(project, execution_id)["status"] == "running"  # its owner is gone
    (project / "gate").touch()
    r = cli(project, "worker", "--drain")  # a new worker: takes the item back without waiting for its lease
    assert r.returncode == 0, r.stderr
    assert f"from {socket.gethostname()}:{pid}, which is gone" in r.stderr
    data = show(project, execution_id)
    assert data["status"] == "completed" and data["outputs"] == {"sum": 3}
    steps = [c["step"] for c in calls(project)]
    assert steps == ["a", "a", "b"]  # `a` was in flight when the worker died: at-least-once
    assert len({c["key"] for c in calls(project) if c["step"] == "a"}) == 1  # with one idempotency key


def test_hybrid_replaces_a_worker_that_dies_under_it(project: Path) -> None:
    """The follower reaps its dead worker (a zombie would look alive) and starts another, which takes the
    run over at once."""
    proc = subprocess.Popen([str(BIN), "run", "workflow", "gated", "--mode", "hybrid"], cwd=project,
                            env=_env(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not calls(project) and time.monotonic() < deadline:  # the worker is in step `a`
        time.sleep(0.05)
    pid = WorkerLock(project / ".progressive" / "worker.lock").holder()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    (project / "gate").touch()
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert f"completed gated {out.splitlines()[0]}" in err and "sum    3" in out
    assert f"from {socket.gethostname()}:{pid}, which is gone" in worker_log(project)
    assert [c["step"] for c in calls(project)] == ["a", "a", "b"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_worker_refuses_to_run_twice(project: Path) -> None:
    lock = WorkerLock(project / ".progressive" / "worker.lock")
    assert lock.acquire()
    try:
        started = time.monotonic()
        r = cli(project, "worker", "--drain")
        assert r.returncode == 0 and f"a worker (pid {os.getpid()}) already runs the queue" in r.stderr
        assert time.monotonic() - started < 30
    finally:
        lock.release()
