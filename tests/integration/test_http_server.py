"""HTTP integrations against a real local server (``http_server.py``, its own process on a free 127.0.0.1
port, logging each request's arrival with ``time.monotonic()``): the breaker's whole cycle with its store
row and events, an operator's reset from another process, timeouts, Retry-After, the rate limiter under
10x overload, and a closed port.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from http_server import HttpServer, http_server, max_in_window

from progressive_cli.config.integrations import HttpIntegration
from progressive_cli.errors import StepError
from progressive_cli.integrations.hub import Integrations
from progressive_cli.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]
NAME = "integration:x"
ONE_ATTEMPT = {"max_attempts": 1, "initial_delay": 0.01, "max_delay": 0.05}


@pytest.fixture(scope="module")
def shared_server() -> Iterator[HttpServer]:
    with http_server() as server:
        yield server


@pytest.fixture
def server(shared_server: HttpServer) -> HttpServer:
    shared_server.reset()
    return shared_server


def config(server_url: str, **over: Any) -> HttpIntegration:
    data: dict[str, Any] = {
        "id": "x", "type": "http", "base_url": server_url, "timeout": 5,
        "circuit_breaker": {"fail_max": 1000, "reset_timeout": "30s"}, "retry": dict(ONE_ATTEMPT),
    }
    data.update(over)
    return HttpIntegration.model_validate(data)


async def outcome(hub: Integrations, method: str = "GET", path: str = "/items", **kw: Any) -> Any:
    try:
        return await hub.api_call("x", method, path, **kw)
    except StepError as exc:
        return exc


def kind(result: Any) -> str | int:
    return result.kind if isinstance(result, StepError) else result["status"]


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(body())


async def breaker_row(store: SQLiteStore) -> dict[str, Any]:
    (row,) = [r for r in await store.breakers(NAME) if r["name"] == NAME]
    return row


async def transitions(store: SQLiteStore) -> list[tuple[str, str]]:
    return [(e.data["previous"], e.data["state"]) for e in await store.list_events(type_prefix="breaker.state")]


# --- the breaker ------------------------------------------------------------------------------------------
def test_breaker_opens_fails_fast_half_opens_and_closes(server: HttpServer, tmp_path: Path) -> None:
    reset = 1.0
    store = SQLiteStore(tmp_path / "state.db")
    cfg = config(server.url, circuit_breaker={"fail_max": 3, "reset_timeout": reset, "success_threshold": 1})
    server.default(500, body={"error": "boom"})

    async def body() -> None:
        hub = Integrations([cfg], store)
        # closed: three 500s, each sent, the third opens it
        assert [kind(await outcome(hub)) for _ in range(3)] == ["API_ERROR"] * 3
        opened = time.monotonic()
        assert server.count() == 3
        row = await breaker_row(store)
        assert (row["state"], row["failures"]) == ("open", 3)
        assert "500" in row["last_error"]
        assert await transitions(store) == [("closed", "open")]
        # open: fail fast, nothing reaches the server
        fast = [await outcome(hub) for _ in range(5)]
        assert time.monotonic() - opened < reset, "the machine is too slow for this test's reset_timeout"
        assert [kind(r) for r in fast] == ["CIRCUIT_BREAKER_OPEN"] * 5
        assert 0 < float(fast[0].details["retry_after"]) <= reset
        assert server.count() == 3
        # after reset_timeout: one trial, which fails and re-opens it
        await asyncio.sleep(reset + 0.1)
        assert kind(await outcome(hub)) == "API_ERROR"
        assert server.count() == 4
        assert (await breaker_row(store))["state"] == "open"
        assert await transitions(store) == [("closed", "open"), ("open", "half-open"), ("half-open", "open")]
        assert kind(await outcome(hub)) == "CIRCUIT_BREAKER_OPEN"
        assert server.count() == 4
        # after reset_timeout again: a successful trial closes it
        server.default(200)
        await asyncio.sleep(reset + 0.1)
        assert kind(await outcome(hub)) == 200
        row = await breaker_row(store)
        assert (row["state"], row["failures"]) == ("closed", 0)
        assert await transitions(store) == [("closed", "open"), ("open", "half-open"), ("half-open", "open"),
                                            ("open", "half-open"), ("half-open", "closed")]
        assert [kind(await outcome(hub)) for _ in range(3)] == [200] * 3
        await hub.close()
        (metrics,) = await store.integration_metrics()
        assert (metrics["total"], metrics["failure"], metrics["breaker_opens"], metrics["rejected"]) == (8, 4, 2, 6)
        await store.close()

    run(body)
    arrivals = server.arrivals()
    assert len(arrivals) == 8
    # no request while open: each trial came at least reset_timeout after the failure that opened it
    assert arrivals[3] - arrivals[2] >= reset - 0.05
    assert arrivals[4] - arrivals[3] >= reset - 0.05


OPERATOR = """
import asyncio, sys
from pathlib import Path
from progressive_cli.integrations.breakers import operator_set
from progressive_cli.store.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(Path(sys.argv[1]))
    await operator_set(store, sys.argv[2], sys.argv[3])
    await store.close()

asyncio.run(main())
"""


def operator(path: Path, state: str) -> None:
    """``progressive breakers reset|open`` from another process."""
    subprocess.run([sys.executable, "-c", OPERATOR, str(path), NAME, state], check=True, cwd=ROOT, timeout=60)


async def until(hub: Integrations, want: str | int, limit: float) -> tuple[float, list[str | int]]:
    """Call every 50 ms until the answer's kind is ``want``; (seconds it took, kinds seen)."""
    started = time.monotonic()
    seen: list[str | int] = []
    while time.monotonic() - started < limit:
        seen.append(kind(await outcome(hub)))
        if seen[-1] == want:
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - started, seen


def test_an_operator_reset_or_open_from_another_process_is_picked_up_within_a_second(
        server: HttpServer, tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    cfg = config(server.url, circuit_breaker={"fail_max": 2, "reset_timeout": "1h"})
    server.default(503)

    async def body() -> None:
        hub = Integrations([cfg], store)
        assert [kind(await outcome(hub)) for _ in range(3)] == ["API_ERROR", "API_ERROR", "CIRCUIT_BREAKER_OPEN"]
        server.default(200)
        operator(path, "closed")
        took, seen = await until(hub, 200, 5.0)
        assert seen[-1] == 200 and took <= 1.5, (took, seen)
        assert set(seen[:-1]) <= {"CIRCUIT_BREAKER_OPEN"}
        assert server.count() == 3  # nothing was sent before the reset was seen
        assert (await breaker_row(store))["state"] == "closed"

        operator(path, "open")
        sent = server.count()
        took, seen = await until(hub, "CIRCUIT_BREAKER_OPEN", 5.0)
        assert seen[-1] == "CIRCUIT_BREAKER_OPEN" and took <= 1.5, (took, seen)
        assert server.count() == sent + len(seen) - 1  # the calls before the pick-up were sent, none after
        held = await outcome(hub)
        assert "held open by an operator" in held.message and "retry_after" not in held.details
        assert server.count() == sent + len(seen) - 1
        await hub.close()
        events = await store.list_events(type_prefix="breaker.state")
        assert [(e.data["state"], e.data.get("by")) for e in events] == [
            ("open", None), ("closed", "operator"), ("open", "operator")]
        await store.close()

    run(body)


def test_another_process_tripping_the_breaker_is_picked_up_within_a_second(server: HttpServer,
                                                                            tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    cfg = config(server.url, circuit_breaker={"fail_max": 2, "reset_timeout": "1h"})

    async def body() -> None:
        here, there = SQLiteStore(path), SQLiteStore(path)
        hub, other = Integrations([cfg], here), Integrations([cfg], there)
        assert kind(await outcome(hub)) == 200
        server.default(500)
        assert [kind(await outcome(other)) for _ in range(2)] == ["API_ERROR", "API_ERROR"]
        assert (await breaker_row(here))["state"] == "open"
        server.default(200)
        took, seen = await until(hub, "CIRCUIT_BREAKER_OPEN", 5.0)
        assert seen[-1] == "CIRCUIT_BREAKER_OPEN" and took <= 1.5, (took, seen)
        await hub.close()
        await other.close()
        await here.close()
        await there.close()

    run(body)


def test_a_half_open_breaker_lets_one_trial_through(server: HttpServer) -> None:
    cfg = config(server.url, circuit_breaker={"fail_max": 1, "reset_timeout": 0.5})
    server.default(500, delay=0.2)

    async def body() -> list[Any]:
        hub = Integrations([cfg])
        assert kind(await outcome(hub)) == "API_ERROR"
        await asyncio.sleep(0.6)
        results = await asyncio.gather(*(outcome(hub) for _ in range(10)))
        await hub.close()
        return results

    results = run(body)
    assert sorted(str(kind(r)) for r in results) == ["API_ERROR"] + ["CIRCUIT_BREAKER_OPEN"] * 9
    assert server.count() == 2  # the one that opened it and the one trial


def test_a_failure_here_does_not_undo_an_operator_open_made_since_the_last_sync(server: HttpServer,
                                                                                 tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    cfg = config(server.url, circuit_breaker={"fail_max": 5, "reset_timeout": "1h"})

    async def body() -> tuple[str, list[str | int]]:
        from progressive_cli.integrations.breakers import operator_set

        here, there = SQLiteStore(path), SQLiteStore(path)
        hub = Integrations([cfg], here)
        assert kind(await outcome(hub)) == 200  # synced with the store just now
        await operator_set(there, NAME, "open")
        server.default(500)
        assert kind(await outcome(hub)) == "API_ERROR"  # sent before this process re-reads the row: fine
        state = (await breaker_row(there))["state"]
        server.default(200)
        seen: list[str | int] = []
        if state == "open":  # else it is lost for good: no need to watch for it for 2 s
            _, seen = await until(hub, "CIRCUIT_BREAKER_OPEN", 2.0)
        await hub.close()
        await here.close()
        await there.close()
        return state, seen

    state, seen = run(body)
    assert state == "open"  # the operator's open survives the failure counted here
    assert seen[-1] == "CIRCUIT_BREAKER_OPEN"


# --- timeouts, Retry-After, a closed port -----------------------------------------------------------------
def test_a_read_timeout_is_a_timeout_within_the_configured_timeout(server: HttpServer) -> None:
    server.default(200, delay=2.5)
    cfg = config(server.url, timeout=0.5)

    async def body() -> tuple[float, Any]:
        hub = Integrations([cfg])
        started = time.monotonic()
        result = await outcome(hub)
        took = time.monotonic() - started
        await hub.close()
        return took, result

    took, result = run(body)
    assert kind(result) == "TIMEOUT"
    assert result.message == "integration 'x': GET /items timed out (read)"
    assert 0.45 <= took <= 1.5
    assert server.count() == 1


@pytest.mark.parametrize(("status", "form"), [(503, "seconds"), (429, "http-date")])
def test_retry_after_from_a_real_server_is_honoured(status: int, form: str, server: HttpServer) -> None:
    first = {"status": status, "headers": {"Retry-After": "1"}} if form == "seconds" else \
        {"status": status, "retry_after_date": 2}  # whole seconds: 1 < wait <= 2
    server.queue(first)
    cfg = config(server.url, retry={"max_attempts": 2, "initial_delay": 0.01, "max_delay": 0.05,
                                    "max_retry_after": 5})

    async def body() -> Any:
        hub = Integrations([cfg])
        try:
            return await hub.api_call("x", "GET", "/items")
        finally:
            await hub.close()

    answer = run(body)
    assert answer["status"] == 200 and answer["attempts"] == 2
    first_at, second_at = server.arrivals()
    assert 0.95 <= second_at - first_at <= 3.5


def test_a_closed_port_is_a_network_error() -> None:
    with http_server() as stopped:
        url = stopped.url
    cfg = config(url, retry={"max_attempts": 2, "initial_delay": 0.01, "max_delay": 0.05})

    async def body() -> tuple[Any, dict[str, Any]]:
        hub = Integrations([cfg])
        try:
            return await outcome(hub), await hub.test("x")
        finally:
            await hub.close()

    result, health = run(body)
    assert kind(result) == "NETWORK_ERROR"
    assert result.details["attempts"] == 2
    assert result.message.startswith("integration 'x': GET /items failed: ")
    assert (health["ok"], health["error"]) == (False, "NETWORK_ERROR")


# --- the rate limiter under 10x overload ------------------------------------------------------------------
def test_rate_limit_wait_under_10x_overload_never_exceeds_the_limit(server: HttpServer) -> None:
    limit, per, calls = 10, 1.0, 100
    cfg = config(server.url, rate_limits=[{"requests": limit, "per": per}], on_rate_limit="wait", max_wait=60)

    async def body() -> tuple[float, list[Any]]:
        hub = Integrations([cfg])
        started = time.monotonic()
        results = await asyncio.gather(*(outcome(hub, query={"n": i}) for i in range(calls)))
        took = time.monotonic() - started
        await hub.close()
        return took, results

    took, results = run(body)
    assert [kind(r) for r in results] == [200] * calls
    arrivals = server.arrivals()
    assert len(arrivals) == calls
    busiest = max_in_window(arrivals, per)
    ordered = sorted(arrivals)
    tightest = min(b - a for a, b in zip(ordered, ordered[limit:], strict=False))
    print(f"\nrate limit {limit}/{per:g}s, {calls} concurrent calls: {took:.2f}s, max {busiest} requests in any "
          f"{per:g}s window of server arrivals; the tightest {limit + 1} consecutive arrivals span {tightest:.3f}s")
    assert busiest <= limit
    # it did not crawl either: 100 calls at 10/s need ~9-10 s
    assert took <= calls / limit * per * 1.1 + 3


def test_rate_limit_fail_under_10x_overload_rejects_exactly_the_surplus_quickly(server: HttpServer) -> None:
    limit, calls = 10, 100
    cfg = config(server.url, rate_limits=[{"requests": limit, "per": "3s"}], on_rate_limit="fail")

    async def timed(hub: Integrations, i: int) -> tuple[float, Any]:
        started = time.monotonic()
        result = await outcome(hub, query={"n": i})
        return time.monotonic() - started, result

    async def body() -> list[tuple[float, Any]]:
        hub = Integrations([cfg])
        results = await asyncio.gather(*(timed(hub, i) for i in range(calls)))
        await hub.close()
        return results

    results = run(body)
    rejected = [(took, r) for took, r in results if isinstance(r, StepError)]
    assert len(rejected) == calls - limit
    assert {r.kind for _, r in rejected} == {"RATE_LIMITED"}
    assert max(took for took, _ in rejected) < 1.0
    assert server.count() == limit


def test_rate_limit_wait_gives_up_after_max_wait(server: HttpServer) -> None:
    cfg = config(server.url, rate_limits=[{"requests": 5, "per": "5s"}], on_rate_limit="wait", max_wait=0.5)

    async def body() -> tuple[float, list[Any]]:
        hub = Integrations([cfg])
        started = time.monotonic()
        results = await asyncio.gather(*(outcome(hub) for _ in range(15)))
        took = time.monotonic() - started
        await hub.close()
        return took, results

    took, results = run(body)
    kinds = [kind(r) for r in results]
    assert kinds.count(200) == 5 and kinds.count("RATE_LIMITED") == 10
    assert "no slot within 0.5s" in next(r for r in results if isinstance(r, StepError)).message
    assert 0.4 <= took <= 3.0
    assert server.count() == 5
