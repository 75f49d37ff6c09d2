"""http agent throughput: routed calls per second through ``HttpAgent.__call__`` vs raw httpx POSTs.

    python bench/mca_http.py [--calls 2000] [--concurrency 16] [--rounds 5] [--json]

A small HTTP/1.1 keep-alive server (asyncio streams, in its own process so it does not share the
measured event loop) answers every POST with a fixed agent answer. In the same run, alternating
in blocks of calls (ABBA order) so that changes of machine load hit both alike:
  * raw: ``httpx.AsyncClient.post`` of the same request body, with the same headers and connection
    limits, reading the body (the floor: what httpx itself costs);
  * agent: ``await HttpAgent(...)(method, params, context, instance=url)``, which also encodes the
    request, caps and decodes the answer and maps errors.
Each mode runs sequentially and with ``--concurrency`` calls in flight. Figures are medians over the
rounds; the ratio agent/raw is the figure to compare (target >= 0.8). Exits 0: it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.8
ANSWER = json.dumps({"output": {"plan": "ok", "items": list(range(10))}, "confidence": 0.9,
                     "metadata": {"by": "bench"}}).encode()
PARAMS = {"user": "u-1", "goal": "strength", "days": 3, "notes": "x" * 200}
CONTEXT = {"execution_id": "bench-exec", "step": "plan", "idempotency_key": "bench-exec:plan:1"}


# --------------------------------------------------------------------------- the server (child process)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            writer.write(response)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve() -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", 0, backlog=256)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/agent"


# --------------------------------------------------------------------------- the clients


def _agent(url: str, concurrency: int) -> Any:
    from progressive_cli.agents.remote import HttpAgent
    from progressive_cli.config.agents import AgentsFile

    config = AgentsFile.model_validate({"agents": [{
        "id": "bench", "kind": "http", "endpoints": [{"url": url}], "concurrency": concurrency,
        "headers": {"X-Team": "bench"}}]}).agents[0]
    return HttpAgent(config)


async def _drive(call: Any, calls: int, concurrency: int) -> float:
    """Seconds taken by ``calls`` awaits of ``call()``, ``concurrency`` of them in flight."""
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


async def _paired(raw: Any, routed: Any, calls: int, concurrency: int, block: int) -> tuple[float, float]:
    """Calls per second of raw and routed over ``calls`` each, run in alternating blocks (ABBA order), so
    that a change of machine load during the round hits both alike."""
    spent = {"raw": 0.0, "agent": 0.0}
    for i in range(max(1, calls // block)):
        order = (("raw", raw), ("agent", routed)) if i % 2 == 0 else (("agent", routed), ("raw", raw))
        for name, call in order:
            spent[name] += await _drive(call, block, concurrency)
    done = max(1, calls // block) * block
    return done / spent["raw"], done / spent["agent"]


async def _measure(url: str, calls: int, concurrency: int, rounds: int) -> dict[str, list[float]]:
    import httpx

    from progressive_cli.agents.remote import _request_body

    agent = _agent(url, concurrency)
    body = _request_body("plan", PARAMS, CONTEXT)
    headers = {"X-Team": "bench", "Content-Type": "application/json", "Accept": "application/json",
               "Idempotency-Key": CONTEXT["idempotency_key"]}
    raw_client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=False,
                                   trust_env=False, limits=httpx.Limits(max_connections=concurrency,
                                                                        max_keepalive_connections=concurrency))

    async def raw() -> None:
        response = await raw_client.post(url, content=body, headers=headers)
        response.raise_for_status()
        assert response.content

    async def routed() -> None:
        answer = await agent("plan", PARAMS, CONTEXT, instance=url)
        assert answer["confidence"] == 0.9

    samples: dict[str, list[float]] = {k: [] for k in ("raw_seq", "agent_seq", "raw_conc", "agent_conc")}
    await _drive(raw, 200, concurrency)  # warm-up: connections open, code paths hot
    await _drive(routed, 200, concurrency)
    for _ in range(rounds):
        for key, width in (("seq", 1), ("conc", concurrency)):
            raw_rate, agent_rate = await _paired(raw, routed, calls, width, block=max(50, calls // 8))
            samples[f"raw_{key}"].append(raw_rate)
            samples[f"agent_{key}"].append(agent_rate)
    await raw_client.aclose()
    await agent.aclose()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="calls per mode per round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return

    sys.path.insert(0, str(ROOT))
    load_before = os.getloadavg()[0]
    proc, url = start_server()
    try:
        samples = asyncio.run(_measure(url, args.calls, args.concurrency, args.rounds))
    finally:
        proc.kill()
        proc.wait()
    medians = {k: statistics.median(v) for k, v in samples.items()}
    result = {
        "date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0], "cores": os.cpu_count(),
        "calls": args.calls, "concurrency": args.concurrency, "rounds": args.rounds,
        "load_before": load_before, "load_after": os.getloadavg()[0],
        "median_calls_per_s": medians, "samples": samples,
        "ratio_seq": medians["agent_seq"] / medians["raw_seq"],
        "ratio_conc": medians["agent_conc"] / medians["raw_conc"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"progressive http agent — {result['date']}  python {result['python']}  {result['cores']} cores  "
          f"load {load_before:.2f} -> {result['load_after']:.2f}")
    print(f"{args.calls} calls per mode per round, {args.rounds} rounds, medians; server: asyncio HTTP/1.1 "
          "keep-alive on loopback, own process\n")
    print(f"{'mode':34s} {'raw httpx /s':>13s} {'HttpAgent /s':>13s} {'ratio':>7s} {'target':>7s}  result")
    for label, key in (("sequential", "seq"), (f"{args.concurrency} concurrent", "conc")):
        raw, routed = medians[f"raw_{key}"], medians[f"agent_{key}"]
        ratio = routed / raw
        verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
        print(f"{label:34s} {raw:13.0f} {routed:13.0f} {ratio:6.2f}x {TARGET_RATIO:6.2f}x  {verdict}")
        spread = ", ".join(f"{a / r:.2f}" for a, r in zip(samples[f'agent_{key}'], samples[f'raw_{key}'], strict=True))
        print(f"{'':34s} per-round ratios: {spread}")


if __name__ == "__main__":
    main()
