"""Engine benchmarks: durable step overhead, 1-step latency, `run` cold start, memory.

    python bench/engine.py [--steps 1000] [--latency-runs 200] [--cold-runs 10] [--json]

Every figure is printed next to its floor from the same run:
  * SQLite floor: one INSERT plus COMMIT per row, WAL mode, synchronous=NORMAL (what the
    engine uses), on the same disk;
  * `python -c pass` for the cold start.
Standard library plus the installed package; exits 0 (it measures, it does not judge).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"step_overhead_us": 150.0, "latency_ms": 2.0, "cold_start_overhead_ms": 300.0}


def sqlite_floor(rows: int) -> float:
    """µs per INSERT + COMMIT in WAL mode with synchronous=NORMAL."""
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT)")
        start = time.perf_counter()
        for i in range(rows):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (payload) VALUES (?)", (f'{{"step": {i}}}',))
            db.execute("COMMIT")
        elapsed = time.perf_counter() - start
        db.close()
    return elapsed / rows * 1e6


def _workflow(steps: int) -> object:
    from progressive_cli.config.workflows import WorkflowFile

    return WorkflowFile.model_validate({
        "name": "bench",
        "timeout": "1h",
        "steps": [{"id": f"s{i}", "type": "transform", "value": None} for i in range(steps)],
    })


async def _engine_run(steps: int, store_dir: Path) -> tuple[float, str]:
    from progressive_cli.engine.executor import Engine
    from progressive_cli.store import open_store

    store = open_store("sqlite:///state.db", store_dir)
    engine = Engine({"bench": _workflow(steps)}, store)  # type: ignore[dict-item]
    start = time.perf_counter()
    execution = await engine.run_workflow("bench", {})
    elapsed = time.perf_counter() - start
    await store.close()
    return elapsed, execution.status


def step_overhead(steps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        elapsed, status = asyncio.run(_engine_run(steps, Path(tmp)))
        assert status == "completed", status
    return {"steps": steps, "total_ms": elapsed * 1000, "us_per_step": elapsed / steps * 1e6}


async def _latencies(runs: int, store_dir: Path) -> list[float]:
    from progressive_cli.engine.executor import Engine
    from progressive_cli.store import open_store

    store = open_store("sqlite:///state.db", store_dir)
    engine = Engine({"bench": _workflow(1)}, store)  # type: ignore[dict-item]
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        execution = await engine.run_workflow("bench", {})
        samples.append((time.perf_counter() - start) * 1000)
        assert execution.status == "completed"
    await store.close()
    return samples


def latency(runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        samples = asyncio.run(_latencies(runs + 10, Path(tmp)))[10:]  # 10 warm-up runs
    samples.sort()
    return {"runs": runs, "median_ms": statistics.median(samples), "p90_ms": samples[int(0.9 * len(samples)) - 1],
            "min_ms": samples[0]}


def peak_rss(steps: int) -> float:
    """Peak RSS (MiB) of a fresh process that runs the N-step workflow."""
    here = str(Path(__file__).parent)
    code = (
        f"import sys, resource; sys.path.insert(0, {here!r}); import engine as b; b.step_overhead({steps}); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def cold_start(runs: int) -> dict[str, float]:
    """`progressive run workflow` of a 1-step workflow as a whole process, next to `python -c pass`."""
    exe = Path(sys.executable).parent / "progressive"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESSIVE_")}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "workflows").mkdir()
        (project / "agents.yaml").write_text("agents: []\n")
        (project / "workflows" / "one.yaml").write_text(
            "name: one\nsteps:\n  - {id: only, type: transform, value: 1}\n")
        cache = tempfile.mkdtemp(prefix="pyc-")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = cache  # as an installed wheel: bytecode compiled once
        commands = {"floor": [sys.executable, "-c", "pass"], "run": [str(exe), "run", "workflow", "one", "-q"]}
        samples: dict[str, list[float]] = {k: [] for k in commands}
        for i in range(runs + 2):
            for name, cmd in commands.items():
                start = time.perf_counter()
                subprocess.run(cmd, cwd=project, env=env, capture_output=True, check=True)
                if i >= 2:
                    samples[name].append((time.perf_counter() - start) * 1000)
    floor, run = statistics.median(samples["floor"]), statistics.median(samples["run"])
    return {"floor_ms": floor, "run_ms": run, "overhead_ms": run - floor, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    floor = sqlite_floor(2000)
    steps = step_overhead(args.steps)
    lat = latency(args.latency_runs)
    rss = peak_rss(args.steps)
    cold = cold_start(args.cold_runs)
    result = {
        "date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0], "cores": os.cpu_count(),
        "sqlite_commit_floor_us": floor, "step": steps, "latency": lat, "peak_rss_mib": rss, "cold_start": cold,
        "self_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    verdict = lambda value, target: "PASS" if value <= target else "MISS"  # noqa: E731
    print(f"progressive engine — {result['date']}  python {result['python']}  {result['cores']} cores\n")
    print(f"{'figure':52s} {'value':>12s} {'floor':>10s} {'ratio':>7s} {'target':>10s}  result")
    rows = [
        (f"durable step overhead, {args.steps} no-op transforms (µs/step)", steps["us_per_step"], floor,
         TARGETS["step_overhead_us"]),
        ("1-step workflow, start to completion, in-process (ms, median)", lat["median_ms"], None,
         TARGETS["latency_ms"]),
        ("`progressive run workflow` 1 step, whole process (ms over floor)", cold["overhead_ms"], cold["floor_ms"],
         TARGETS["cold_start_overhead_ms"]),
    ]
    for label, value, base, target in rows:
        ratio = f"{value / base:6.2f}x" if base else "      -"
        base_text = f"{base:10.1f}" if base else f"{'-':>10s}"
        print(f"{label:52s} {value:12.1f} {base_text} {ratio:>7s} {target:10.1f}  {verdict(value, target)}")
    print(f"{'1-step latency p90 / min (ms)':52s} {lat['p90_ms']:12.2f} / {lat['min_ms']:.2f}")
    print(f"{'peak RSS of the ' + str(args.steps) + '-step run (MiB)':52s} {rss:12.1f}")
    print(f"\nSQLite floor: INSERT + COMMIT per row, WAL, synchronous=NORMAL = {floor:.1f} µs/row")


if __name__ == "__main__":
    main()
