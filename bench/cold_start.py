"""Cold-start benchmark for the ``progressive`` CLI.

Every figure is a whole process: interpreter start-up, imports, the command itself and
exit, timed with ``time.perf_counter_ns`` around ``subprocess.run``. The floor is
``python -c pass`` with the same interpreter, so "overhead" is what ``progressive`` adds on
top of a bare Python start.

Run with the interpreter of the virtualenv that has ``progressive`` installed::

    python bench/cold_start.py            # table on stdout
    python bench/cold_start.py --runs 50  # more samples
    python bench/cold_start.py --json     # one JSON object on stdout instead of the table
    python bench/cold_start.py --bytecode as-is  # don't provide a bytecode cache (see --help)

Standard library only. Always exits 0 on a completed measurement: a MISS is a finding,
not a failure. Exits 2 only when the benchmark itself cannot run (no console script).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PROGRESSIVE = str(Path(sys.executable).parent / "progressive")

# name -> argv; the first entry is the floor every other command is compared with.
COMMANDS: dict[str, list[str]] = {
    "floor": [PYTHON, "-c", "pass"],
    "help": [PROGRESSIVE, "--help"],
    "validate": [PROGRESSIVE, "validate"],
    "version": [PROGRESSIVE, "--version"],
    "health": [PROGRESSIVE, "health", "-o", "json"],
}
LABELS = {
    "floor": "python -c pass",
    "help": "progressive --help",
    "validate": "progressive validate",
    "version": "progressive --version",
    "health": "progressive health -o json",
}
# command -> maximum allowed overhead (median minus floor median), in ms.
TARGETS_MS = {"help": 100.0, "validate": 250.0, "health": 400.0}


@dataclass
class Samples:
    """Wall-clock durations (ns) and exit codes of one command's timed runs."""

    ns: list[int] = field(default_factory=list)
    returncodes: list[int] = field(default_factory=list)


def child_env(pycache_prefix: str | None, importtime: bool = False) -> dict[str, str]:
    """The environment every child runs with: ours, minus anything that would change what is measured.

    ``PROGRESSIVE_*`` variables are dropped so ``validate`` always sees the shipped project at
    the repository root with its default settings.

    With ``pycache_prefix`` (the default ``--bytecode cached`` mode) children write and read
    bytecode in that private directory, even if ``PYTHONDONTWRITEBYTECODE`` is set here: an
    installed wheel ships compiled bytecode, so a user's cold start does not compile the
    sources. Nothing is written next to the sources in the repository.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESSIVE_")}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    if pycache_prefix is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache_prefix
    if importtime:
        env["PYTHONPROFILEIMPORTTIME"] = "1"
    return env


def run_once(argv: list[str], env: dict[str, str]) -> tuple[int, int]:
    """Run ``argv`` with cwd = repository root, output discarded; return (elapsed ns, exit code)."""
    start = perf_counter_ns()
    proc = subprocess.run(
        argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
    )
    return perf_counter_ns() - start, proc.returncode


def measure(env: dict[str, str], runs: int, warmup: int, progress: bool) -> dict[str, Samples]:
    """Round-robin over :data:`COMMANDS`: one priming round (fills the bytecode cache), ``warmup``
    untimed rounds, then ``runs`` timed rounds."""
    results = {name: Samples() for name in COMMANDS}
    for _ in range(1 + warmup):
        for argv in COMMANDS.values():
            run_once(argv, env)
    for i in range(runs):
        for name, argv in COMMANDS.items():
            elapsed, rc = run_once(argv, env)
            results[name].ns.append(elapsed)
            results[name].returncodes.append(rc)
        if progress:
            print(f"\r  round {i + 1}/{runs}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return results


def p90(values: list[float]) -> float:
    """90th percentile, nearest-rank method (an observed sample, never interpolated)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def summarise(results: dict[str, Samples]) -> dict[str, dict[str, object]]:
    floor_median = statistics.median(results["floor"].ns) / 1e6
    out: dict[str, dict[str, object]] = {}
    for name, s in results.items():
        ms = [n / 1e6 for n in s.ns]
        median = statistics.median(ms)
        row: dict[str, object] = {
            "command": LABELS[name],
            "argv": COMMANDS[name],
            "runs": len(ms),
            "min_ms": round(min(ms), 2),
            "median_ms": round(median, 2),
            "p90_ms": round(p90(ms), 2),
            "max_ms": round(max(ms), 2),
            "nonzero_exits": sum(1 for rc in s.returncodes if rc != 0),
            "exit_codes": sorted(set(s.returncodes)),
        }
        if name != "floor":
            row["overhead_ms"] = round(median - floor_median, 2)
            row["ratio_to_floor"] = round(median / floor_median, 2)
        if name in TARGETS_MS:
            limit = TARGETS_MS[name]
            row["target_overhead_ms"] = limit
            row["status"] = "PASS" if median - floor_median <= limit else "MISS"
        row["samples_ms"] = [round(v, 3) for v in ms]
        out[name] = row
    return out


# --------------------------------------------------------------------------- import time


@dataclass
class ImportEntry:
    module: str
    self_us: int
    cumulative_us: int
    depth: int


def parse_importtime(stderr: str) -> list[ImportEntry]:
    """Parse ``-X importtime`` lines: ``import time: self | cumulative | <indent>module``."""
    entries: list[ImportEntry] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3:
            continue
        self_s, cum_s, name = parts
        try:
            self_us, cum_us = int(self_s), int(cum_s)
        except ValueError:  # the header line
            continue
        stripped = name.lstrip(" ")
        depth = (len(name) - len(stripped) - 1) // 2
        entries.append(ImportEntry(stripped.strip(), self_us, cum_us, depth))
    return entries


def _entry(e: ImportEntry) -> dict[str, object]:
    return {"module": e.module, "cumulative_ms": round(e.cumulative_us / 1000, 2),
            "self_ms": round(e.self_us / 1000, 2), "depth": e.depth}


def is_stdlib(top: str) -> bool:
    return top in sys.stdlib_module_names or top in sys.builtin_module_names


def import_profile(name: str, argv: list[str], env: dict[str, str], top: int) -> dict[str, object]:
    """Run ``argv`` once with PYTHONPROFILEIMPORTTIME=1 and summarise what it imported."""
    proc = subprocess.run(
        argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
    )
    entries = parse_importtime(proc.stderr)
    packages: dict[str, dict[str, float]] = {}
    for e in entries:
        pkg = e.module.split(".")[0]
        agg = packages.setdefault(pkg, {"modules": 0, "self_us": 0})
        agg["modules"] += 1
        agg["self_us"] += e.self_us
    heavy = sorted(
        ({"package": p, "stdlib": is_stdlib(p), "modules": int(a["modules"]),
          "self_ms": round(a["self_us"] / 1000, 2)} for p, a in packages.items()),
        key=lambda d: d["self_ms"], reverse=True,
    )
    by_cumulative = sorted(entries, key=lambda e: e.cumulative_us, reverse=True)[:top]
    by_self = sorted(entries, key=lambda e: e.self_us, reverse=True)[:top]
    return {
        "command": LABELS[name],
        "exit_code": proc.returncode,
        "modules_imported": len(entries),
        "total_import_ms": round(sum(e.self_us for e in entries) / 1000, 2),
        "third_party_packages": [d for d in heavy if not d["stdlib"]],
        "top_packages_by_self_time": heavy[:top],
        "top_modules_by_cumulative": [_entry(e) for e in by_cumulative],
        "top_modules_by_self": [_entry(e) for e in by_self],
    }


# --------------------------------------------------------------------------- output


def fmt_table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _busy(report: dict[str, object]) -> bool:
    """Heuristic: something else was using the CPU (the benchmark itself adds about 1 to the load)."""
    cores: int = report["cpu_count"] or 1  # type: ignore[assignment]
    before, after = report["loadavg_1min_before"], report["loadavg_1min_after"]
    return (before is not None and before > cores / 2) or (after is not None and after > cores - 0.5)  # type: ignore[operator]


def render(report: dict[str, object], top: int) -> str:
    timings: dict[str, dict[str, object]] = report["timings"]  # type: ignore[assignment]
    imports: dict[str, dict[str, object]] = report["imports"]  # type: ignore[assignment]
    out = [
        f"progressive cold start — {report['date']}  python {report['python']}  "
        f"{report['cpu_count']} cores  {report['runs']} runs/command (+1 priming, +{report['warmup']} warm-up), "
        "round-robin",
        f"tree: {report['git_revision']}  bytecode: {report['bytecode']}",
        f"load average (1 min) before/after: {report['loadavg_1min_before']} / {report['loadavg_1min_after']}"
        + ("  -- machine may have been busy: figures may be inflated" if _busy(report) else ""),
        "",
    ]
    rows = []
    for t in timings.values():
        rows.append([
            str(t["command"]), f"{t['min_ms']:.1f}", f"{t['median_ms']:.1f}", f"{t['p90_ms']:.1f}",
            f"{t['overhead_ms']:+.1f}" if "overhead_ms" in t else "—",
            f"{t['ratio_to_floor']:.2f}x" if "ratio_to_floor" in t else "1.00x",
            f"<= {t['target_overhead_ms']:.0f}" if "target_overhead_ms" in t else "—",
            str(t.get("status", "—")),
        ])
    out.append(fmt_table(
        ["command", "min ms", "median ms", "p90 ms", "overhead ms", "vs floor", "target ms", "result"],
        rows, right={1, 2, 3, 4, 5},
    ))
    bad = [t for t in timings.values() if t["nonzero_exits"]]
    for t in bad:
        out.append(f"note: {t['command']} exited non-zero in {t['nonzero_exits']}/{t['runs']} runs "
                   f"(exit codes {t['exit_codes']})")

    out += ["", "Imports (one run each with PYTHONPROFILEIMPORTTIME=1; profiling inflates times):", ""]
    rows = []
    for imp in imports.values():
        third = imp["third_party_packages"]
        heavy = ", ".join(f"{d['package']} {d['self_ms']:.0f}" for d in third[:6]) or "—"  # type: ignore[index]
        rows.append([str(imp["command"]), str(imp["modules_imported"]), f"{imp['total_import_ms']:.1f}", heavy])
    out.append(fmt_table(["command", "modules", "import ms", "non-stdlib packages (self ms, summed)"],
                         rows, right={1, 2}))

    for name in ("validate", "health"):  # the commands that load the project
        if name not in imports:
            continue
        label = LABELS[name]
        out += ["", f"Top {top} modules by cumulative import time, {label}:", ""]
        rows = [[m["module"], f"{m['cumulative_ms']:.1f}", f"{m['self_ms']:.1f}", str(m["depth"])]
                for m in imports[name]["top_modules_by_cumulative"]]  # type: ignore[union-attr]
        out.append(fmt_table(["module", "cumulative ms", "self ms", "depth"], rows, right={1, 2, 3}))
        out += ["", f"Top {top} modules by self import time (module body only), {label}:", ""]
        rows = [[m["module"], f"{m['self_ms']:.1f}", f"{m['cumulative_ms']:.1f}", str(m["depth"])]
                for m in imports[name]["top_modules_by_self"]]  # type: ignore[union-attr]
        out.append(fmt_table(["module", "self ms", "cumulative ms", "depth"], rows, right={1, 2, 3}))
        out += ["", f"Top {top} packages by summed self import time, {label}:", ""]
        rows = [[p["package"] + (" (stdlib)" if p["stdlib"] else ""), str(p["modules"]), f"{p['self_ms']:.1f}"]
                for p in imports[name]["top_packages_by_self_time"]]  # type: ignore[union-attr]
        out.append(fmt_table(["package", "modules", "self ms"], rows, right={1, 2}))
    return "\n".join(out)


def _git_revision() -> str | None:
    """Short HEAD commit of the measured tree, ``+dirty`` if tracked files outside bench/ are modified."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _loadavg() -> float | None:
    """1-minute load average (None where the OS has none): a busy machine inflates every figure."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per command (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up rounds (default 3)")
    parser.add_argument("--top", type=int, default=8, help="modules/packages listed for validate (default 8)")
    parser.add_argument(
        "--bytecode", choices=("cached", "as-is"), default="cached",
        help="cached (default): children use a private, pre-filled bytecode cache, as an installed "
             "wheel would; as-is: inherit the environment (e.g. PYTHONDONTWRITEBYTECODE) unchanged",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    if not Path(PROGRESSIVE).exists():
        print(f"error: no console script at {PROGRESSIVE}; run this with the venv's python", file=sys.stderr)
        return 2

    progress = sys.stderr.isatty()
    if progress:
        print(f"timing {len(COMMANDS)} commands x {args.runs} runs ...", file=sys.stderr)
    revision = _git_revision()
    load_before = _loadavg()
    with tempfile.TemporaryDirectory(prefix="progressive-bench-pycache-") as tmp:
        prefix = tmp if args.bytecode == "cached" else None
        timings = summarise(measure(child_env(prefix), args.runs, args.warmup, progress))
        profile_env = child_env(prefix, importtime=True)
        imports = {name: import_profile(name, cmd, profile_env, args.top) for name, cmd in COMMANDS.items()}
    load_after = _loadavg()
    if args.bytecode == "cached":
        bytecode = "cached (private PYTHONPYCACHEPREFIX, filled by a priming round)"
    elif os.environ.get("PYTHONDONTWRITEBYTECODE"):
        bytecode = "as-is (PYTHONDONTWRITEBYTECODE set: modules without a .pyc are compiled on every run)"
    else:
        bytecode = "as-is (environment inherited unchanged)"
    report = {
        "date": dt.date.today().isoformat(),
        "git_revision": revision,
        "python": platform.python_version(),
        "executable": PYTHON,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg_1min_before": load_before,
        "loadavg_1min_after": load_after,
        "cwd": str(REPO_ROOT),
        "runs": args.runs,
        "warmup": args.warmup,
        "bytecode": bytecode,
        "timings": timings,
        "targets": [
            {"command": LABELS[n], "metric": "median overhead over floor", "limit_ms": lim,
             "value_ms": timings[n]["overhead_ms"], "status": timings[n]["status"]}
            for n, lim in TARGETS_MS.items()
        ],
        "imports": imports,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
