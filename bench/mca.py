"""MCA benchmark: the overhead of a routed call to an in-process agent.

    python bench/mca.py [--calls 20000] [--rounds 5] [--json]

Peer, from the same run: awaiting the agent function directly with the same method, params
and context. Routed: ``await runtime(AgentRequest(...))`` through the MCA runtime (routing,
round-robin over 4 instances, breaker and concurrency checks, timeout, envelope check,
metrics), with and without a state store attached (with one, metrics and heartbeats are
flushed about once a second, and the flush is part of the measured time).
Target: routed minus direct <= 20 µs per call. The median of ``--rounds`` rounds is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET_OVERHEAD_US = 20.0


async def agent(method: str, params: Any, context: Any) -> Any:
    return params["x"]


async def _direct(calls: int) -> float:
    context = {"execution_id": "e", "step": "s", "idempotency_key": "k"}
    start = time.perf_counter()
    for i in range(calls):
        await agent("m", {"x": i}, context)
    return (time.perf_counter() - start) / calls * 1e6


async def _routed(calls: int, store: Any) -> float:
    from progressive_cli.config.agents import AgentsFile
    from progressive_cli.engine.executor import AgentRequest
    from progressive_cli.mca.runtime import AgentRuntime

    agents = AgentsFile.model_validate({"agents": [
        {"id": "a", "kind": "python", "entrypoint": "mca:agent", "instances": 4}]}).agents
    runtime = AgentRuntime(agents, store=store)
    await runtime(AgentRequest("a", None, "m", {"x": 0}, "k", None, {}))  # load the agent
    start = time.perf_counter()
    for i in range(calls):
        await runtime(AgentRequest("a", None, "m", {"x": i}, "k", None, {"execution_id": "e", "step": "s"}))
    elapsed = (time.perf_counter() - start) / calls * 1e6
    await runtime.aclose()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args, _ = parser.parse_known_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # `mca:agent` is this file

    from progressive_cli.store.sqlite import SQLiteStore

    direct, routed, stored = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "state.db")
        for _ in range(args.rounds):
            direct.append(asyncio.run(_direct(args.calls)))
            routed.append(asyncio.run(_routed(args.calls, None)))
            stored.append(asyncio.run(_routed(args.calls, store)))
        rows = asyncio.run(store.agent_metrics())
        asyncio.run(store.close())
    recorded = sum(r["total"] for r in rows)
    d, r, s = (statistics.median(x) for x in (direct, routed, stored))
    figures = {
        "direct_us": round(d, 2), "routed_us": round(r, 2), "routed_with_store_us": round(s, 2),
        "overhead_us": round(r - d, 2), "overhead_with_store_us": round(s - d, 2),
        "target_overhead_us": TARGET_OVERHEAD_US, "calls_recorded_in_store": recorded,
        "verdict": "PASS" if s - d <= TARGET_OVERHEAD_US else "MISS",
    }
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"direct call to the agent function      {d:8.2f} µs/call")
    print(f"MCA-routed call (no store)             {r:8.2f} µs/call  overhead {r - d:6.2f} µs")
    print(f"MCA-routed call (metrics to SQLite)    {s:8.2f} µs/call  overhead {s - d:6.2f} µs "
          f"(target <= {TARGET_OVERHEAD_US:g} µs: {figures['verdict']}; ratio routed/direct {s / d:.1f}x)")
    print(f"calls recorded in the store: {recorded} (expected {args.rounds * (args.calls + 1)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
