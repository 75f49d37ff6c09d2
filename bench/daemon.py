"""The daemon: idle memory, and detached 1-step workflows through it, in runs/s.

    python bench/daemon.py [--runs 500] [--json]

A throwaway project with one 1-step workflow. The daemon (`progressive daemon run`, a real process)
starts and idles for 3 s; its resident memory (VmRSS from /proc) is read then. Then ``--runs`` runs
are queued at once through the store (as `run --detach` queues each), and the time from the first
enqueue to the last completion gives runs/s. Targets: idle RSS <= 80 MiB, >= 1,000 runs/s
(Celery + Redis did ~550 no-op tasks/s on this kind of machine). Exits 0: it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PROGRESSIVE = str(Path(sys.executable).parent / "progressive")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _queue(project: Path, runs: int) -> float:
    from progressive_cli.config.project import load_project
    from progressive_cli.engine.executor import Engine
    from progressive_cli.store import project_store
    from progressive_cli.worker import RUN

    loaded = load_project(project)
    store = project_store(loaded)
    engine = Engine(loaded.workflows, store)
    start = time.perf_counter()
    for n in range(runs):  # each as `run --detach` queues it: the queued run and its item in one commit
        await engine.start("one", {"n": n}, status="queued", queue=RUN)
    await store.close()
    return start


async def _wait_done(project: Path, runs: int, deadline: float) -> None:
    """Poll, every 10 ms, how many runs have completed (one COUNT on one open store: the poll must not
    take the CPU the daemon needs, which re-reading the project and every run each time did)."""
    from progressive_cli.config.project import load_project
    from progressive_cli.store import project_store

    store: Any = project_store(load_project(project))
    try:
        while time.monotonic() < deadline:
            done = store.db.execute("SELECT count(*) FROM executions WHERE status = 'completed'").fetchone()[0]
            if done >= runs:
                return
            await asyncio.sleep(0.01)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "workflows").mkdir()
        (project / "agents.yaml").write_text("agents: []\n")
        (project / "progressive.yaml").write_text(
            "daemon: {workers: 16, poll_interval: 0.05}\nhealth: {interval: 1h}\n")
        (project / "workflows" / "one.yaml").write_text(
            "name: one\ninputs:\n  n: {type: integer}\n"
            "steps:\n  - {id: t, type: transform, value: '${{ inputs.n }}'}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESSIVE_")}
        with open(project / "daemon.log", "wb") as log:
            daemon = subprocess.Popen([PROGRESSIVE, "-p", str(project), "daemon", "run"], stdout=log, stderr=log,
                                      env=env)
        try:
            deadline = time.monotonic() + 30
            while "daemon started" not in (project / "daemon.log").read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(3.0)
            idle = _rss_mib(daemon.pid)
            start = asyncio.run(_queue(project, args.runs))
            queued = time.perf_counter() - start
            asyncio.run(_wait_done(project, args.runs, deadline + 600))
            elapsed = time.perf_counter() - start
            busy = _rss_mib(daemon.pid)
        finally:
            daemon.terminate()
            daemon.wait(60)
    result = {"date": time.strftime("%Y-%m-%d"), "runs": args.runs, "idle_rss_mib": round(idle, 1),
              "rss_after_mib": round(busy, 1), "queue_s": round(queued, 3), "elapsed_s": round(elapsed, 3),
              "runs_per_s": round(args.runs / elapsed, 1), "load": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"progressive daemon — {result['date']}  {os.cpu_count()} cores  load {result['load']:.2f}")
    print(f"idle RSS: {idle:.1f} MiB (target <= 80 MiB, {'PASS' if idle <= 80 else 'MISS'}); after the runs: "
          f"{busy:.1f} MiB")
    print(f"{args.runs} detached 1-step runs: {elapsed:.2f} s from the first enqueue to the last completion "
          f"(queueing took {queued:.2f} s) = {args.runs / elapsed:.0f} runs/s "
          f"(target >= 1,000, {'PASS' if args.runs / elapsed >= 1000 else 'MISS'}; Celery + Redis ~550 no-op/s)")


if __name__ == "__main__":
    main()
