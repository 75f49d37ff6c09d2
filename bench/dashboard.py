"""The dashboard: start to first full render, time per refresh tick with 1,000 agents and 10,000
executions in the store, and memory.

    python bench/dashboard.py [--agents 1000] [--executions 10000] [--ticks 20] [--json]

A throwaway project with ``--agents`` built-in agents (each with a heartbeat and call metrics in the
store) and ``--executions`` runs (1% running, with step records; the rest completed or failed).

- **first render**: a whole process, `progressive`'s own interpreter running the dashboard headless
  on that project until its first snapshot is on screen; next to `python -c "import textual.app"` and
  `python -c pass` from the same run (medians of 5). Target <= 600 ms.
- **tick**: in one process, the snapshot read (in the worker thread, as the app does) and the table
  patch (on the app's loop), medians over ``--ticks`` ticks while 5% of the heartbeats move each tick,
  on the overview, agents and executions views; the target (<= 50 ms) is judged on the agents view,
  the heaviest.
- **memory**: VmRSS of the first-render process once it has rendered.

Exits 0: it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_project(root: Path, agents: int) -> None:
    lines = ["version: 1", "agents:"]
    for n in range(agents):
        lines += [f"  - id: agent-{n:04d}", "    kind: builtin", "    builtin: npa",
                  f"    capabilities: [cap-{n % 50}]"]
    (root / "agents.yaml").write_text("\n".join(lines) + "\n")
    (root / "integrations.yaml").write_text("version: 1\nintegrations: []\n")
    (root / "workflows").mkdir()
    (root / "workflows" / "w.yaml").write_text(
        "name: w\nsteps:\n  - {id: a, type: transform, value: 1}\n  - {id: b, type: transform, value: 2}\n")


async def seed(root: Path, agents: int, executions: int) -> None:
    from progressive_cli.store.base import Execution, StepRecord
    from progressive_cli.store.sqlite import SQLiteStore

    store = SQLiteStore(root / ".progressive" / "state.db")
    t = time.time()
    definition = {"name": "w", "steps": [{"id": "a", "type": "transform"}, {"id": "b", "type": "transform"}]}
    for n in range(executions):
        status = "running" if n % 100 == 0 else "failed" if n % 7 == 0 else "completed"
        e = Execution(id=f"e{n:08d}", workflow="w", status=status, inputs={"n": n}, definition=definition,
                      created_at=t - 3600 + n * 0.3, started_at=t - 3600 + n * 0.3,
                      finished_at=None if status == "running" else t - 3600 + n * 0.3 + 0.1,
                      error={"kind": "API_ERROR", "message": "503", "step": "b"} if status == "failed" else None)
        await store.create_execution(e)
        if status == "running":
            await store.save_step(StepRecord(e.id, "a", "a", "transform", "completed", output=1,
                                             started_at=t - 10, finished_at=t - 9))
    for n in range(agents):
        await store.record_heartbeat(f"agent-{n:04d}", f"agent-{n:04d}#0", True, "ok")
    await store.merge_agent_metrics(
        [{"agent": f"agent-{n:04d}", "instance": f"agent-{n:04d}#0", "total": 10, "success": 9, "failure": 1,
          "latency_sum_ms": 50.0, "buckets": {"30": 10}, "last_error": None, "last_call_at": t}
         for n in range(agents)], [])
    await store.close()


CHILD = r"""
import os, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from progressive_cli.config.project import load_project
from tui.app import Dashboard

class Once(Dashboard):
    def show(self, snap):
        super().show(snap)
        if snap.error is None:
            rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
            self.exit(rss)

rss = Once(load_project(Path({project!r}))).run(headless=True, size=(160, 50))
print(rss, flush=True)
"""


def timed(argv: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env={**os.environ, "NO_COLOR": "1"})
    return (time.perf_counter() - started) * 1000, out.stdout.strip()


async def ticks(project_root: Path, count: int, view: str) -> tuple[list[float], list[float]]:
    from progressive_cli.config.project import load_project
    from progressive_cli.store.sqlite import SQLiteStore
    from tui.app import Dashboard

    app = Dashboard(load_project(project_root), refresh=3600)
    reads, patches = [], []
    writer = SQLiteStore(project_root / ".progressive" / "state.db")
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause(0.5)
        app.show_view(view)
        await pilot.pause(0.5)
        for tick in range(count):
            for n in range(tick % 20, 1000, 20):  # 5% of the agents heartbeat between ticks
                await writer.record_heartbeat(f"agent-{n:04d}", f"agent-{n:04d}#0", tick % 2 == 0, "probe")
            started = time.perf_counter()
            snap = await asyncio.to_thread(asyncio.run, app.source.load(frozenset({view})))
            read = time.perf_counter()
            app.show(snap)
            await pilot.pause(0)
            done = time.perf_counter()
            assert snap.error is None, snap.error
            reads.append((read - started) * 1000)
            patches.append((done - read) * 1000)
    await writer.close()
    return reads, patches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--executions", type=int, default=10000)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        make_project(project, args.agents)
        asyncio.run(seed(project, args.agents, args.executions))
        child = CHILD.format(root=str(ROOT), project=str(project))
        runs: dict[str, list[float]] = {"python -c pass": [], "import textual.app": [], "first render": []}
        rss_kib = 0
        for _ in range(5):
            runs["python -c pass"].append(timed([sys.executable, "-c", "pass"])[0])
            runs["import textual.app"].append(timed([sys.executable, "-c", "import textual.app"])[0])
            ms, out = timed([sys.executable, "-c", child])
            runs["first render"].append(ms)
            rss_kib = int(out.splitlines()[-1])
        per_view = {view: asyncio.run(ticks(project, args.ticks, view))
                    for view in ("overview", "agents", "executions")}
    first = statistics.median(runs["first render"])
    reads, patches = per_view["agents"]  # the heaviest view
    tick = [r + p for r, p in zip(reads, patches, strict=True)]
    figures = {
        "agents": args.agents, "executions": args.executions,
        "python_pass_ms": round(statistics.median(runs["python -c pass"]), 1),
        "import_textual_app_ms": round(statistics.median(runs["import textual.app"]), 1),
        "first_render_ms": round(first, 1),
        "first_render_target_ms": 600, "first_render_ratio_to_target": round(first / 600, 2),
        **{f"tick_{view}_ms_median": round(statistics.median([r + p for r, p in zip(*rp, strict=True)]), 2)
           for view, rp in per_view.items()},
        "tick_read_ms_median": round(statistics.median(reads), 2),
        "tick_patch_ms_median": round(statistics.median(patches), 2),
        "tick_ms_median": round(statistics.median(tick), 2), "tick_ms_max": round(max(tick), 2),
        "tick_target_ms": 50, "tick_ratio_to_target": round(statistics.median(tick) / 50, 2),
        "rss_mib": round(rss_kib / 1024, 1),
    }
    if args.json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        print(f"{key:32} {value}")
    print(f"first render: {'PASS' if first <= 600 else 'MISS'} ({first:.0f} ms, target 600 ms; "
          f"importing textual.app alone: {figures['import_textual_app_ms']:.0f} ms)")
    print(f"tick: {'PASS' if figures['tick_ms_median'] <= 50 else 'MISS'} ({figures['tick_ms_median']:.1f} ms "
          f"median, target 50 ms)")


if __name__ == "__main__":
    main()
