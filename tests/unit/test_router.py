"""MCA routing: distribution across instances per strategy, unhealthy instances skipped, typed errors."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

import pytest

from progressive_cli.config.agents import AgentsFile
from progressive_cli.errors import StepError
from progressive_cli.mca.router import Instance, NoInstanceAvailable, Router


def agents(*specs: dict) -> list:
    return AgentsFile.model_validate({"agents": list(specs)}).agents


def http(agent_id: str, weights: list[int], strategy: str = "round_robin") -> dict:
    return {"id": agent_id, "kind": "http", "load_balancing": strategy, "capabilities": ["serve"],
            "endpoints": [{"url": f"http://127.0.0.1:{9000 + i}", "weight": w} for i, w in enumerate(weights)]}


def test_round_robin_is_even_and_in_order() -> None:
    router = Router(agents({"id": "npa", "kind": "builtin", "instances": 3}))
    picks = [router.pick("npa").name for _ in range(9)]
    assert picks == ["npa#0", "npa#1", "npa#2"] * 3


def test_weighted_shares_follow_weights_and_interleave() -> None:
    router = Router(agents(http("api", [5, 1, 1], "weighted")))
    picks = [router.pick("api").name for _ in range(70)]
    assert Counter(picks) == {"http://127.0.0.1:9000": 50, "http://127.0.0.1:9001": 10, "http://127.0.0.1:9002": 10}
    # smooth: the heavy instance never takes more than its 5 in a row within one 7-pick cycle
    assert picks[:7].count("http://127.0.0.1:9000") == 5 and picks[:7][:2] != ["http://127.0.0.1:9001"] * 2


@contextlib.contextmanager
def busy(instance: Instance) -> Iterator[None]:
    """A call in flight on ``instance`` (the runtime counts them the same way)."""
    instance.in_flight += 1
    try:
        yield
    finally:
        instance.in_flight -= 1


def test_least_in_flight_prefers_idle_instances() -> None:
    router = Router(agents({"id": "wpa", "kind": "builtin", "instances": 3, "load_balancing": "least_in_flight"}))
    first = router.pick("wpa")
    with busy(first):
        second = router.pick("wpa")
        assert second is not first
        with busy(second):
            third = router.pick("wpa")
            assert third not in (first, second)
    assert all(i.in_flight == 0 for i in router.pools["wpa"].instances)


def test_unhealthy_instances_are_skipped() -> None:
    down = {"npa#1"}
    router = Router(agents({"id": "npa", "kind": "builtin", "instances": 3}),
                    health=lambda agent, name: "heartbeat 75s old" if name in down else None)
    picks = Counter(router.pick("npa").name for _ in range(10))
    assert "npa#1" not in picks and sum(picks.values()) == 10
    down.update({"npa#0", "npa#2"})
    with pytest.raises(NoInstanceAvailable) as info:
        router.pick("npa")
    assert info.value.kind == "AGENT_ERROR"
    assert "no instance of agent 'npa' is available" in info.value.message
    assert "npa#1: heartbeat 75s old" in info.value.message


def test_capability_routing_and_errors() -> None:
    router = Router(agents({"id": "a", "kind": "builtin", "builtin": "npa", "capabilities": ["x"]},
                           {"id": "b", "kind": "builtin", "builtin": "npa", "capabilities": ["x"]},
                           {"id": "off", "kind": "builtin", "builtin": "npa", "enabled": False}))
    assert router.agent_for(None, "x").id == "a"
    with busy(router.pick("a")):
        assert router.agent_for(None, "x").id == "b"  # the least busy provider
    with pytest.raises(StepError, match="no enabled agent provides capability 'y'"):
        router.agent_for(None, "y")
    with pytest.raises(NoInstanceAvailable, match=r"'off'.*not configured or is disabled"):
        router.agent_for("off", None)
