"""Event bus throughput, durable: publish and deliver events through the SQLite state store.

    python bench/events.py [--events 50000] [--batch 500] [--rounds 3] [--json]

Each round, in a fresh store:
  * publish: ``store.publish`` of ``--batch`` events per transaction (each committed: WAL,
    synchronous=NORMAL, the default durability) until ``--events`` are in;
  * deliver: ``Bus.pump`` of one subscription with a no-op handler, 500 events per round, each
    round committing the subscription's position (the at-least-once contract) until the lag is 0;
  * publish one at a time: 5,000 ``store.publish`` calls of one event each (a commit per event);
  * floor, in the same run: raw ``sqlite3`` ``executemany`` of the same rows into the same table
    layout with the same pragmas, one transaction per batch.
Figures are medians over rounds in events/s; the target is >= 10,000/s for publish and deliver.
Exits 0: it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET = 10_000


async def _round(path: Path, total: int, batch: int) -> tuple[float, float, float]:
    from progressive_cli.events.bus import Bus, Subscription
    from progressive_cli.store.base import Event
    from progressive_cli.store.sqlite import SQLiteStore

    store = SQLiteStore(path)
    bus = Bus(store)
    delivered = 0

    async def handler(event: Event) -> None:
        nonlocal delivered
        delivered += 1

    bus.subscribe(Subscription("bench", ("order.*",), handler, from_start=True))
    start = time.perf_counter()
    for i in range(0, total, batch):
        await store.publish([Event("order.created", {"n": n, "sku": "A-1", "qty": 2})
                             for n in range(i, min(total, i + batch))])
    published = time.perf_counter() - start
    start = time.perf_counter()
    while await bus.pump("bench"):
        pass
    pumped = time.perf_counter() - start
    assert delivered == total, (delivered, total)
    [status] = await store.bus_status()
    assert status["lag"] == 0 and status["processed"] == total
    singles = min(total, 5000)
    start = time.perf_counter()
    for n in range(singles):
        await store.publish([Event("order.paid", {"n": n})])
    single = singles / (time.perf_counter() - start)
    await store.close()
    return total / published, total / pumped, single


def _floor(path: Path, total: int, batch: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, type TEXT NOT NULL, "
               "source TEXT NOT NULL, subject TEXT, execution_id TEXT, time REAL NOT NULL, data TEXT NOT NULL)")
    start = time.perf_counter()
    for i in range(0, total, batch):
        rows = [(os.urandom(16).hex(), "order.created", "progressive", None, None, time.time(),
                 json.dumps({"n": n, "sku": "A-1", "qty": 2}, separators=(",", ":")))
                for n in range(i, min(total, i + batch))]
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO events (id, type, source, subject, execution_id, time, data) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    samples: dict[str, list[float]] = {"publish": [], "deliver": [], "single": [], "floor": []}
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            pub, dlv, single = asyncio.run(_round(Path(tmp) / "state.db", args.events, args.batch))
            samples["single"].append(single)
            samples["publish"].append(pub)
            samples["deliver"].append(dlv)
            samples["floor"].append(_floor(Path(tmp) / f"floor{r}.db", args.events, args.batch))
    med = {k: statistics.median(v) for k, v in samples.items()}
    result = {"date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0], "cores": os.cpu_count(),
              "events": args.events, "batch": args.batch, "rounds": args.rounds, "load_before": load_before,
              "load_after": os.getloadavg()[0], "median_events_per_s": med, "samples": samples}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"progressive event bus — {result['date']}  python {result['python']}  {result['cores']} cores  "
          f"load {load_before:.2f} -> {result['load_after']:.2f}")
    print(f"{args.events} events per round, {args.batch} per transaction, {args.rounds} rounds, medians\n")
    print(f"{'figure':30s} {'events/s':>10s} {'vs floor':>9s} {'target':>8s}  result")
    for label, key in (("publish (durable commits)", "publish"), ("deliver (pump, no-op handler)", "deliver")):
        verdict = "PASS" if med[key] >= TARGET else "MISS"
        print(f"{label:30s} {med[key]:10.0f} {med[key] / med['floor']:8.2f}x {TARGET:8d}  {verdict}")
    print(f"{'floor: raw sqlite3 executemany':30s} {med['floor']:10.0f}")
    print(f"{'publish, one event per commit':30s} {med['single']:10.0f}  (events/publish, 5,000 of them: what a "
          "lone `events publish` costs)")


if __name__ == "__main__":
    main()
