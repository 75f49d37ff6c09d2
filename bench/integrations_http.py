"""api_call overhead against raw httpx, and the cost of a rejection while the breaker is open.

    python bench/integrations_http.py [--calls 2000] [--concurrency 16] [--rounds 5] [--json]

The server is bench/mca_http.py's: an asyncio HTTP/1.1 keep-alive server in its own process that
answers every request with a small JSON body. In the same run, in alternating blocks (ABBA order):

  * raw: ``httpx.AsyncClient.get`` with the same bearer header, connection limits and timeouts,
    reading the body (the floor);
  * api_call: ``Integrations.api_call`` on an http integration with bearer auth, a rate limit it
    never reaches (1,000,000/s: the limiter still takes a slot per request), a circuit breaker, a
    retry policy and metrics flushed to a SQLite state store about once a second — everything an
    ``api_call`` step goes through except the step record.

Each mode runs sequentially and with ``--concurrency`` calls in flight; figures are medians over the
rounds, and the ratio api_call time / raw time is compared with the target (<= 1.3).

Then the breaker is forced open (as ``progressive breakers open`` does) and ``api_call`` is timed
while every call is rejected: the median of rounds of 20,000 rejections, against the target of
20 µs. The floor in the same run is pybreaker's own rejection (``with breaker.calling()`` raising
``CircuitBreakerError``). Exits 0: it measures.
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
from mca_http import _drive, _paired, start_server  # noqa: E402  (the same loopback server and driver)

TARGET_RATIO = 1.3
TARGET_REJECT_US = 20.0
TOKEN = "bench-token"


def _hub(url: str, concurrency: int, store: Any) -> Any:
    from progressive_cli.config.integrations import IntegrationsFile
    from progressive_cli.integrations.hub import Integrations

    config = IntegrationsFile.model_validate({"integrations": [{
        "id": "bench", "type": "http", "base_url": url, "auth": {"type": "bearer", "token": TOKEN},
        "timeout": 30, "max_connections": concurrency, "rate_limits": [{"requests": 1_000_000, "per": "1s"}],
        "circuit_breaker": {"fail_max": 5, "reset_timeout": "30s"}, "retry": {"max_attempts": 3}}]})
    return Integrations(config.integrations, store)


async def _overhead(base: str, calls: int, concurrency: int, rounds: int, store: Any) -> dict[str, list[float]]:
    import httpx

    hub = _hub(base, concurrency, store)
    raw_client = httpx.AsyncClient(timeout=httpx.Timeout(30.0), follow_redirects=False,
                                   limits=httpx.Limits(max_connections=concurrency,
                                                       max_keepalive_connections=concurrency),
                                   headers={"Authorization": f"Bearer {TOKEN}"})

    async def raw() -> None:
        response = await raw_client.get(f"{base}/foods", params={"q": "oats"})
        response.raise_for_status()
        assert response.json()["confidence"] == 0.9

    async def ours() -> None:
        answer = await hub.api_call("bench", "GET", "/foods", query={"q": "oats"})
        assert answer["body"]["confidence"] == 0.9

    samples: dict[str, list[float]] = {k: [] for k in ("raw_seq", "ours_seq", "raw_conc", "ours_conc")}
    await _drive(raw, 200, concurrency)
    await _drive(ours, 200, concurrency)
    for _ in range(rounds):
        for key, width in (("seq", 1), ("conc", concurrency)):
            raw_rate, our_rate = await _paired(raw, ours, calls, width, block=max(50, calls // 8))
            samples[f"raw_{key}"].append(1e6 / raw_rate)
            samples[f"ours_{key}"].append(1e6 / our_rate)
    await raw_client.aclose()
    await hub.close()
    return samples


async def _rejections(base: str, rounds: int, store: Any) -> dict[str, list[float]]:
    import pybreaker

    from progressive_cli.errors import StepError
    from progressive_cli.integrations.breakers import operator_set

    hub = _hub(base, 1, store)
    await hub.api_call("bench", "GET", "/foods")  # the client exists, its breaker loaded
    await operator_set(store, "integration:bench", "open", reset_timeout=30.0)
    await (await hub.http("bench")).breaker.load()
    n = 20_000
    floor_cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=3600)
    floor_cb.open()
    samples: dict[str, list[float]] = {"api_call": [], "pybreaker": []}
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            try:
                await hub.api_call("bench", "GET", "/foods")
            except StepError as exc:
                assert exc.kind == "CIRCUIT_BREAKER_OPEN"
        samples["api_call"].append((time.perf_counter() - start) / n * 1e6)
        start = time.perf_counter()
        for _ in range(n):
            try:
                with floor_cb.calling():
                    pass
            except pybreaker.CircuitBreakerError:
                pass
        samples["pybreaker"].append((time.perf_counter() - start) / n * 1e6)
    await hub.flush()
    rows = await store.integration_metrics()
    await hub.close()
    samples["rejected_in_store"] = [float(rows[0]["rejected"])] if rows else [0.0]
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="calls per mode per round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from progressive_cli.store.sqlite import SQLiteStore

    load_before = os.getloadavg()[0]
    proc, url = start_server()
    base = url.rsplit("/", 1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "state.db")
        try:
            over = asyncio.run(_overhead(base, args.calls, args.concurrency, args.rounds, store))
            reject = asyncio.run(_rejections(base, args.rounds, store))
        finally:
            proc.kill()
            proc.wait()
            asyncio.run(store.close())
    med = {k: statistics.median(v) for k, v in {**over, **reject}.items()}
    result = {
        "date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0], "cores": os.cpu_count(),
        "calls": args.calls, "concurrency": args.concurrency, "rounds": args.rounds,
        "load_before": load_before, "load_after": os.getloadavg()[0], "median_us": med,
        "ratio_seq": med["ours_seq"] / med["raw_seq"], "ratio_conc": med["ours_conc"] / med["raw_conc"],
        "samples": {**over, **reject},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"progressive api_call — {result['date']}  python {result['python']}  {result['cores']} cores  "
          f"load {load_before:.2f} -> {result['load_after']:.2f}")
    print(f"{args.calls} calls per mode per round, {args.rounds} rounds, medians; loopback asyncio server, own "
          "process\n")
    print(f"{'mode':22s} {'raw httpx µs':>13s} {'api_call µs':>12s} {'ratio':>7s} {'target':>7s}  result")
    for label, key in (("sequential", "seq"), (f"{args.concurrency} concurrent", "conc")):
        raw, ours = med[f"raw_{key}"], med[f"ours_{key}"]
        verdict = "PASS" if ours / raw <= TARGET_RATIO else "MISS"
        print(f"{label:22s} {raw:13.1f} {ours:12.1f} {ours / raw:6.2f}x {TARGET_RATIO:6.2f}x  {verdict}")
        spread = ", ".join(f"{o / r:.2f}" for o, r in zip(over[f'ours_{key}'], over[f'raw_{key}'], strict=True))
        print(f"{'':22s} per-round ratios: {spread}")
    verdict = "PASS" if med["api_call"] <= TARGET_REJECT_US else "MISS"
    print(f"\nrejection while open: api_call {med['api_call']:.1f} µs (target <= {TARGET_REJECT_US:.0f} µs, "
          f"{verdict}); pybreaker alone {med['pybreaker']:.1f} µs, ratio {med['api_call'] / med['pybreaker']:.1f}x; "
          f"{int(med['rejected_in_store'])} rejections counted in the store")


if __name__ == "__main__":
    main()
