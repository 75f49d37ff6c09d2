"""The dashboard: start to first full render, time per refresh tick with 1,000 agents and 10,000
executions in the store, and memory.

    python bench/dashboard.py [--agents 1000] [--executions 10000] [--runs 7] [--ticks 20] [--json]

A throwaway project with ``--agents`` built-in agents (each with a heartbeat and call metrics in the
store) and ``--executions`` runs (1% running, with step records; the rest completed or failed).

- **first render**: the real ``progressive dashboard`` as a user starts it, in a pseudo-terminal of
  160x50 (``pty.fork``), timed from the fork to the moment the overview's figures (the line
  ``executions: N running, N queued, ...``, drawn from the first snapshot) reach the terminal; then
  ``q``. Bytecode is compiled once into a private cache first, as an installed wheel has it (see
  cold_start.py). Next to ``python -c "import textual.app"`` and ``python -c pass`` from the same
  rounds, interleaved; medians of ``--runs``. Target <= 600 ms.
- **tick**: in one process (``App.run_test``), per view: the snapshot read in a worker thread, as the
  app does, then the patch and the repaint (until the screen has been refreshed), while 5% of the
  heartbeats move between ticks; medians over ``--ticks``. Target <= 50 ms, on every view measured.
- **memory**: VmRSS of the dashboard process once its first full frame is on the terminal.

Exits 0: it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import pty
import select
import signal
import statistics
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cold_start import child_env  # noqa: E402 (bench/ is on sys.path when run as a script)

PROGRESSIVE = str(Path(sys.executable).parent / "progressive")
MARKER = b"queued, "
"""In the overview's summary, drawn only from a snapshot."""
VIEWS = ("overview", "agents", "executions")


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


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def in_terminal(argv: list[str], cwd: Path, env: dict[str, str], marker: bytes | None,
                timeout: float = 30.0) -> tuple[float, float]:
    """Run ``argv`` in a 160x50 pseudo-terminal: (ms from the fork until ``marker`` was written to the
    terminal, or until exit when ``marker`` is None; the process's RSS in MiB at that moment)."""
    started = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the program, as a terminal user starts it
        os.chdir(cwd)
        os.execve(argv[0], argv, env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    seen, elapsed, rss = b"", float("nan"), float("nan")
    try:
        while time.perf_counter() - started < timeout:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the child closed the terminal: it exited
                    break
                seen = (seen + chunk)[-4096:]
                if marker is not None and marker in seen:
                    elapsed = (time.perf_counter() - started) * 1000
                    rss = _rss_mib(pid)
                    os.write(fd, b"q")
                    break
        if marker is None:
            elapsed = (time.perf_counter() - started) * 1000
        deadline = time.perf_counter() + 10
        while os.waitpid(pid, os.WNOHANG) == (0, 0):  # drain the terminal until it has quit
            if time.perf_counter() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            if select.select([fd], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):
                    os.read(fd, 65536)
    finally:
        os.close(fd)
    return elapsed, rss


def first_render(project: Path, runs: int) -> dict[str, float]:
    cache = tempfile.mkdtemp(prefix="pyc-")
    env = {**child_env(cache), "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"}
    env.pop("NO_COLOR", None)
    commands: dict[str, tuple[list[str], bytes | None]] = {
        "python -c pass": ([sys.executable, "-c", "pass"], None),
        "import textual.app": ([sys.executable, "-c", "import textual.app"], None),
        "progressive dashboard": ([PROGRESSIVE, "dashboard"], MARKER),
    }
    samples: dict[str, list[float]] = {name: [] for name in commands}
    rss: list[float] = []
    for round_ in range(runs + 1):  # the first round fills the bytecode cache
        for name, (argv, marker) in commands.items():
            ms, mib = in_terminal(argv, project, env, marker)
            if round_:
                samples[name].append(ms)
                if marker is not None:
                    rss.append(mib)
    return {"floor_ms": statistics.median(samples["python -c pass"]),
            "textual_ms": statistics.median(samples["import textual.app"]),
            "first_render_ms": statistics.median(samples["progressive dashboard"]),
            "first_render_max_ms": max(samples["progressive dashboard"]),
            "rss_mib": statistics.median(rss)}


async def ticks(project_root: Path, count: int, view: str, agents: int) -> tuple[list[float], list[float]]:
    """(read ms, patch and repaint ms) of ``count`` ticks of ``view``."""
    from progressive_cli.config.project import load_project
    from progressive_cli.store.sqlite import SQLiteStore
    from tui.app import Dashboard

    app = Dashboard(load_project(project_root), refresh=3600)
    reads, paints = [], []
    writer = SQLiteStore(project_root / ".progressive" / "state.db")
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause(0.5)
        app.show_view(view)
        await pilot.pause(0.5)
        for tick in range(count):
            for n in range(tick % 20, agents, 20):  # 5% of the agents heartbeat between ticks
                await writer.record_heartbeat(f"agent-{n:04d}", f"agent-{n:04d}#0", tick % 2 == 0, "probe")
            started = time.perf_counter()
            snap = await asyncio.to_thread(asyncio.run, app.source.load(frozenset({view})))
            read = time.perf_counter()
            assert snap.error is None, snap.error
            painted = asyncio.get_running_loop().create_future()
            app.show(snap)
            app.call_after_refresh(painted.set_result, None)  # runs once the screen has been repainted
            await painted
            reads.append((read - started) * 1000)
            paints.append((time.perf_counter() - read) * 1000)
            await pilot.pause(0.05)
    await writer.close()
    return reads, paints


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--executions", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        make_project(project, args.agents)
        asyncio.run(seed(project, args.agents, args.executions))
        render = first_render(project, args.runs)
        per_view = {view: asyncio.run(ticks(project, args.ticks, view, args.agents)) for view in VIEWS}
    figures: dict[str, object] = {
        "agents": args.agents, "executions": args.executions,
        "python_pass_ms": round(render["floor_ms"], 1),
        "import_textual_app_ms": round(render["textual_ms"], 1),
        "first_render_ms": round(render["first_render_ms"], 1),
        "first_render_max_ms": round(render["first_render_max_ms"], 1),
        "first_render_target_ms": 600, "first_render_ratio_to_target": round(render["first_render_ms"] / 600, 2),
        "first_render_vs_import_textual": round(render["first_render_ms"] / render["textual_ms"], 2),
        "rss_mib": round(render["rss_mib"], 1),
    }
    worst = 0.0
    for view, (reads, paints) in per_view.items():
        tick = statistics.median([r + p for r, p in zip(reads, paints, strict=True)])
        worst = max(worst, tick)
        figures[f"tick_{view}_ms_median"] = round(tick, 1)
        figures[f"tick_{view}_read_ms"] = round(statistics.median(reads), 1)
        figures[f"tick_{view}_patch_paint_ms"] = round(statistics.median(paints), 1)
        figures[f"tick_{view}_ms_max"] = round(max(r + p for r, p in zip(reads, paints, strict=True)), 1)
    figures.update({"tick_target_ms": 50, "tick_worst_view_ratio_to_target": round(worst / 50, 2),
                    "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2)})
    if args.json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        print(f"{key:36} {value}")
    first = render["first_render_ms"]
    print(f"first render: {'PASS' if first <= 600 else 'MISS'} ({first:.0f} ms median, target 600 ms; "
          f"importing textual.app alone: {render['textual_ms']:.0f} ms)")
    print(f"tick: {'PASS' if worst <= 50 else 'MISS'} ({worst:.1f} ms median on the slowest view, target 50 ms)")


if __name__ == "__main__":
    main()
