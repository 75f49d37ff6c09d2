"""The MCA runtime against a real SQLite store: metrics per instance merged across processes,
instance breakers, concurrency limits, heartbeat status, EMA incidents kept in the store."""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path
from typing import Any

import pytest

from progressive_cli.config.agents import AgentsFile
from progressive_cli.engine.executor import AgentRequest
from progressive_cli.errors import StepError
from progressive_cli.mca.metrics import Metrics, bucket_of, percentile
from progressive_cli.mca.runtime import AgentRuntime, instance_report, status_of
from progressive_cli.store.sqlite import SQLiteStore

MODULE = """
import asyncio

from progressive_cli.errors import StepError

STATE = {"in_flight": 0, "peak": 0, "calls": 0}


async def busy(method, params, context):
    STATE["calls"] += 1
    STATE["in_flight"] += 1
    STATE["peak"] = max(STATE["peak"], STATE["in_flight"])
    try:
        await asyncio.sleep(params.get("s", 0.05))
    finally:
        STATE["in_flight"] -= 1
    return {"output": method, "confidence": params.get("confidence"), "metadata": params.get("metadata")}


async def flaky(method, params, context):
    STATE["calls"] += 1
    if method == "down":
        raise StepError("NETWORK_ERROR", "connection refused")
    if method == "bad_request":
        raise StepError("AGENT_ERROR", "'x' must be a number", {"reason": "invalid_input"})
    return "ok"
"""


@pytest.fixture
def mod(agent_module: Any) -> Any:
    return agent_module("runtime_agents_mod", MODULE)


def config(*specs: dict[str, Any]) -> list[Any]:
    return AgentsFile.model_validate({"agents": list(specs)}).agents


def request(agent: str, method: str = "m", **params: Any) -> AgentRequest:
    return AgentRequest(agent=agent, capability=None, method=method, params=params, idempotency_key="k",
                        timeout=None, context={})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_metrics_are_merged_across_processes_and_report_p95(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    agents = config({"id": "npa", "kind": "builtin", "instances": 2})
    params = {"age": 34, "sex": "female", "weight_kg": 68, "height_cm": 170}

    async def session(owner: str, calls: int, bad: int) -> None:
        store = SQLiteStore(path)
        runtime = AgentRuntime(agents, store=store, owner=owner)
        for _ in range(calls):
            await runtime(AgentRequest("npa", None, "calorie-targets", params, "k", None, {}))
        for _ in range(bad):
            with pytest.raises(StepError):
                await runtime(AgentRequest("npa", None, "calorie-targets", {"age": "x"}, "k", None, {}))
        await runtime.aclose()
        await store.close()

    run(session("one", 10, 2))
    run(session("two", 6, 0))
    store = SQLiteStore(path)
    rows = {r["instance"]: r for r in run(store.agent_metrics())}
    assert sorted(rows) == ["npa#0", "npa#1"]  # round-robin over both instances
    assert sum(r["total"] for r in rows.values()) == 18
    assert sum(r["success"] for r in rows.values()) == 16
    assert sum(r["failure"] for r in rows.values()) == 2
    assert all(r["in_flight"] == 0 for r in rows.values())
    report = instance_report(agents, run(store.heartbeats()), run(store.agent_metrics()), [], 1e12)
    assert [r["calls"] for r in report] == [rows["npa#0"]["total"], rows["npa#1"]["total"]]
    assert all(r["p95_ms"] is not None and r["avg_ms"] > 0 for r in report)
    assert "must be a number" in (rows["npa#0"]["last_error"] or rows["npa#1"]["last_error"])
    beats = run(store.heartbeats())
    assert {b["instance"] for b in beats} == {"npa#0", "npa#1"} and all(b["status"] == "ok" for b in beats)
    run(store.close())


def test_percentile_from_buckets_is_within_five_percent() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(1, 1.2) for _ in range(5000)]
    metrics = Metrics()
    for v in values:
        metrics.record("a", "a#0", True, v, 0.0)
    buckets = metrics.take()[("a", "a#0")].buckets
    exact = sorted(values)[math.ceil(0.95 * len(values)) - 1]
    assert percentile(buckets, 0.95) == pytest.approx(exact, rel=0.05)
    assert percentile({}, 0.95) is None
    assert bucket_of(0.0) == 0 and bucket_of(1.0) < bucket_of(1.2)


def test_instance_breaker_opens_and_the_error_names_the_agent_and_why(mod: Any, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    agents = config({"id": "f", "kind": "python", "entrypoint": "runtime_agents_mod:flaky", "instances": 2,
                     "breaker": {"fail_max": 2, "reset_timeout": "1h"}})
    runtime = AgentRuntime(agents, store=store)

    async def go() -> StepError:
        for _ in range(4):  # 2 failures on each instance, round-robin
            with pytest.raises(StepError, match="connection refused"):
                await runtime(request("f", "down"))
        calls = mod.STATE["calls"]
        with pytest.raises(StepError) as info:
            await runtime(request("f", "up"))
        assert mod.STATE["calls"] == calls  # refused before any call was made
        await runtime.aclose()
        return info.value

    error = run(go())
    assert error.kind == "AGENT_ERROR"
    assert "no instance of agent 'f' is available" in error.message
    assert "f#0: circuit breaker open after 2 failures" in error.message and "f#1:" in error.message
    breakers = run(store.breakers("agent:"))
    assert [(b["name"], b["state"]) for b in breakers] == [("agent:f@f#0", "open"), ("agent:f@f#1", "open")]
    events = run(store.list_events(type_prefix="breaker."))
    assert {e.data["state"] for e in events} == {"open"}
    run(store.close())


def test_bad_requests_do_not_trip_the_breaker_and_half_open_lets_one_trial_through(mod: Any) -> None:
    agents = config({"id": "f", "kind": "python", "entrypoint": "runtime_agents_mod:flaky",
                     "breaker": {"fail_max": 1, "reset_timeout": "1h"}})
    runtime = AgentRuntime(agents)

    async def go() -> None:
        for _ in range(3):
            with pytest.raises(StepError, match="must be a number"):
                await runtime(request("f", "bad_request"))
        assert await runtime(request("f", "up")) == "ok"
        with pytest.raises(StepError, match="connection refused"):
            await runtime(request("f", "down"))
        with pytest.raises(StepError, match="circuit breaker open"):
            await runtime(request("f", "up"))
        breaker = runtime._breakers[("f", "f#0")]
        breaker.opened_at = (breaker.opened_at or 0) - 7200  # the reset timeout has passed
        assert await runtime(request("f", "up")) == "ok"  # the trial call closes it
        assert breaker.state == "closed"

    run(go())


def test_concurrency_limit_per_instance_is_enforced(mod: Any) -> None:
    agents = config({"id": "b", "kind": "python", "entrypoint": "runtime_agents_mod:busy", "concurrency": 2})
    runtime = AgentRuntime(agents)

    async def go() -> list[Any]:
        return await asyncio.gather(*(runtime(request("b", f"m{i}", s=0.05)) for i in range(7)))

    assert run(go()) == [f"m{i}" for i in range(7)]
    assert mod.STATE["peak"] == 2 and mod.STATE["calls"] == 7


def test_a_slot_that_never_frees_is_a_timeout(mod: Any) -> None:
    agents = config({"id": "b", "kind": "python", "entrypoint": "runtime_agents_mod:busy", "concurrency": 1})
    runtime = AgentRuntime(agents)

    async def go() -> Any:
        slow = asyncio.ensure_future(runtime(request("b", "slow", s=5)))
        await asyncio.sleep(0.05)
        quick = AgentRequest("b", None, "quick", {}, "k", 0.3, {})
        with pytest.raises(StepError) as info:
            await runtime(quick)
        slow.cancel()
        return info.value

    error = run(go())
    assert error.kind == "TIMEOUT" and "concurrency limit (1 calls in flight)" in error.message


@pytest.mark.parametrize("answer, problem", [
    ({"confidence": 1.5}, "confidence of 1.5"),
    ({"confidence": "high"}, "confidence of 'high'"),
    ({"metadata": [1]}, "metadata that is not a mapping"),
])
def test_malformed_envelopes_are_typed_errors(mod: Any, answer: dict[str, Any], problem: str) -> None:
    runtime = AgentRuntime(config({"id": "b", "kind": "python", "entrypoint": "runtime_agents_mod:busy"}))
    with pytest.raises(StepError) as info:
        run(runtime(request("b", "m", s=0, **answer)))
    assert info.value.kind == "AGENT_ERROR" and problem in info.value.message


def test_envelope_keeps_confidence_and_metadata(mod: Any) -> None:
    runtime = AgentRuntime(config({"id": "b", "kind": "python", "entrypoint": "runtime_agents_mod:busy"}))
    req = AgentRequest("b", None, "m", {"s": 0, "confidence": 1, "metadata": {"model": "x"}}, "k", None, {},
                       envelope=True)
    assert run(runtime(req)) == {"output": "m", "confidence": 1.0, "metadata": {"model": "x"}}


def test_status_by_heartbeat_age() -> None:
    agent = config({"id": "a", "kind": "builtin", "builtin": "npa",
                    "heartbeat": {"interval": "10s", "degraded_after": "30s", "offline_after": "60s"}})[0]
    assert status_of(agent, [], 1000.0) == ("offline", None)
    assert status_of(agent, [{"at": 990.0}], 1000.0) == ("online", 10.0)
    assert status_of(agent, [{"at": 950.0}, {"at": 10.0}], 1000.0) == ("degraded", 50.0)
    assert status_of(agent, [{"at": 900.0}], 1000.0) == ("offline", 100.0)
    assert status_of(agent, [{"at": 0}], 1000.0) == ("offline", None)  # probed, never answered


def test_check_records_heartbeats_for_in_process_agents(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    agents = config({"id": "npa", "kind": "builtin"}, {"id": "ghost", "kind": "builtin", "builtin": "nope"})
    runtime = AgentRuntime(agents, store=store)
    results = run(runtime.check())
    assert [(r["agent"], r["ok"]) for r in results] == [("npa", True), ("ghost", False)]
    assert "no built-in agent 'nope'" in results[1]["detail"]
    report = {r["agent"]: r for r in instance_report(agents, run(store.heartbeats()), [], [],
                                                       __import__("time").time())}
    assert report["npa"]["status"] == "online" and report["ghost"]["status"] == "offline"
    assert report["ghost"]["probe"] == "failed" and report["ghost"]["probe_failures"] == 1
    run(store.close())


def test_ema_incidents_live_in_the_store_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    agents = config({"id": "ema", "kind": "builtin"})

    def incident(action: str, **params: Any) -> Any:
        async def go() -> Any:
            store = SQLiteStore(path)
            runtime = AgentRuntime(agents, store=store)
            try:
                return await runtime(AgentRequest("ema", None, "incident-management", {"action": action, **params},
                                                  "k", None, {"execution_id": "e1"}))
            finally:
                await runtime.aclose()
                await store.close()
        return run(go())

    opened = incident("open", source="postgres-main", summary="replication lag")
    assert opened["new"] is True and opened["status"] == "open"
    again = incident("open", source="postgres-main", summary="replication lag")  # a retried step
    assert again["new"] is False and again["id"] == opened["id"]
    listed = incident("list")  # another process sees it
    assert [i["id"] for i in listed["incidents"]] == [opened["id"]]
    resolved = incident("resolve", id=opened["id"])
    assert resolved["status"] == "resolved"
    store = SQLiteStore(path)
    assert run(store.load_incidents())[opened["id"]]["status"] == "resolved"
    kinds = [(e.type, e.execution_id) for e in run(store.list_events(type_prefix="incident."))]
    assert kinds == [("incident.opened", "e1"), ("incident.resolved", "e1")]
    run(store.close())
