"""Kill a real `progressive run` with SIGKILL at many points, resume it, and check the outcome.

Side effects are counted by idempotency key: each step may run more than once (it is
at-least-once), but every run of a step carries the same key, so a receiver that
deduplicates by key sees each step exactly once, and the final outputs match an
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent / "progressive"

AGENT = '''
import json, os, time

def handle(method, params, context):
    """Records every call (its idempotency key) before answering, so a kill can land mid-step."""
    with open(os.environ["CRASH_LOG"], "a") as log:
        log.write(json.dumps({"key": context["idempotency_key"], "step": context["step"]}) + "\\n")
        log.flush()
        os.fsync(log.fileno())
    time.sleep(float(params.get("sleep", 0.06)))
    return {"output": params["value"] * 2}
'''

WORKFLOW = '''
name: crashy
steps:
  - {id: a, type: agent_call, agent: worker, method: double, params: {value: 1}}
  - {id: b, type: agent_call, agent: worker, method: double, params: {value: "${{ steps.a.output }}"}}
  - id: fan
    type: foreach
    items: [1, 2, 3]
    concurrency: 2
    steps:
      - {id: each, type: agent_call, agent: worker, method: double, params: {value: "${{ item }}"}}
  - id: both
    type: parallel
    branches:
      left: [{id: l, type: agent_call, agent: worker, method: double, params: {value: 10}}]
      right: [{id: r, type: agent_call, agent: worker, method: double, params: {value: 20}}]
  - {id: sum, type: transform, value: "${{ steps.b.output + sum(steps.fan.output) + steps.l.output + steps.r.output }}"}
  - {id: c, type: agent_call, agent: worker, method: double, params: {value: "${{ steps.sum.output }}"}}
outputs:
  total: ${{ steps.c.output }}
  fan: ${{ steps.fan.output }}
'''
KILLED_STATES: list[str] = []  # what each kill left behind, checked by the last test
EXPECTED = {"total": 2 * (4 + 12 + 20 + 40), "fan": [2, 4, 6]}
AGENT_STEPS = {"a", "b", "fan[0]/each", "fan[1]/each", "fan[2]/each", "both/left/l", "both/right/r", "c"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "crash_agent.py").write_text(AGENT)
    (tmp_path / "agents.yaml").write_text(textwrap.dedent("""
        agents:
          - {id: worker, kind: python, entrypoint: "crash_agent:handle", timeout: 10s}
    """))
    (tmp_path / "workflows" / "crashy.yaml").write_text(WORKFLOW)
    return tmp_path


def _env(project: Path, log: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESSIVE_")}
    env.update({"PYTHONPATH": str(project), "CRASH_LOG": str(log), "PROGRESSIVE_PROJECT": str(project)})
    return env


def _cli(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], cwd=project, env=env, capture_output=True, text=True, timeout=120)


def _latest(project: Path, env: dict[str, str]) -> dict | None:
    r = _cli(project, env, "executions", "list", "-o", "json", "-w", "crashy", "-n", "1")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    return rows[0] if rows else None


def test_uninterrupted_run(project: Path) -> None:
    log = project / "calls.log"
    r = _cli(project, _env(project, log), "run", "workflow", "crashy", "-o", "json", "-q")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["outputs"] == EXPECTED
    assert {json.loads(x)["step"] for x in log.read_text().splitlines()} == AGENT_STEPS


def _calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


# Kill points: right at start-up (before the run may even be recorded), then just after the
# agent has been called k times (k = 1..8): mid-step, between steps, inside the foreach and the
# parallel branches. Counting calls, not seconds, keeps the points mid-run on any machine.
KILL_POINTS = ["start", *(f"call{k}" for k in range(1, 9)), "call3-late", "call6-late"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_then_resume(project: Path, point: str) -> None:
    log = project / "calls.log"
    env = _env(project, log)
    proc = subprocess.Popen([str(BIN), "run", "workflow", "crashy", "-q"], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if point == "start":
        time.sleep(0.05)
    else:
        calls = int(point.removeprefix("call").split("-")[0])
        deadline = time.monotonic() + 60
        while _calls(log) < calls and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if point.endswith("-late"):
            time.sleep(0.04)  # into the agent's sleep, or just past the step's commit
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = _latest(project, env)
    KILLED_STATES.append(latest["status"] if latest else "not started")
    if latest is None:  # killed before the run was even recorded: nothing to resume, start again
        r = _cli(project, env, "run", "workflow", "crashy", "-o", "json", "-q")
    else:
        # the dead process's lease must not block the resume for long: it expires, or we take it over
        deadline = time.time() + 90
        while True:
            r = _cli(project, env, "executions", "resume", latest["id"], "-o", "json")
            if r.returncode != 5 or time.time() > deadline:
                break
            time.sleep(0.5)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["status"] == "completed"
    assert result["outputs"] == EXPECTED
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    keys_per_step: dict[str, set[str]] = {}
    for call in calls:
        keys_per_step.setdefault(call["step"], set()).add(call["key"])
    assert set(keys_per_step) == AGENT_STEPS
    # at-least-once, deduplicable: every call of a step carried the same idempotency key
    assert all(len(keys) == 1 for keys in keys_per_step.values()), keys_per_step
    runs = Counter(call["step"] for call in calls)
    assert sum(runs.values()) <= len(AGENT_STEPS) + 2  # at most the steps in flight at the kill run twice


def test_kills_landed_mid_run() -> None:
    """The kill points must really interrupt runs, or the test above proves nothing."""
    if len(KILLED_STATES) < len(KILL_POINTS):
        pytest.skip("run the whole module to check the kill points")
    interrupted = [s for s in KILLED_STATES if s == "running"]
    assert len(interrupted) >= 8, KILLED_STATES
