"""In-process agents (`builtin`, `python`) called through the MCA runtime (progressive_cli/mca/runtime.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from progressive_cli.config.agents import AgentsFile
from progressive_cli.engine.executor import AgentRequest
from progressive_cli.errors import StepError
from progressive_cli.mca.runtime import AgentRuntime

MODULE = """
import asyncio
import time

CALLS = []


def sync_fn(method, params, context):
    CALLS.append(("sync", method, context["idempotency_key"]))
    if method == "sleep":
        time.sleep(params["s"])
    if method == "raise":
        raise KeyError("missing")
    if method == "step_error":
        from progressive_cli.errors import StepError
        raise StepError("RATE_LIMITED", "slow down")
    if method == "wrapped":
        return {"output": [1, 2], "confidence": 0.5}
    return {"method": method, "params": params, "context": context}


async def async_fn(method, params, context):
    CALLS.append(("async", method, context["idempotency_key"]))
    if method == "sleep":
        await asyncio.sleep(params["s"])
    return "async:" + method


class Agent:
    made = 0

    def __init__(self):
        Agent.made += 1

    async def __call__(self, method, params, context):
        return f"instance {Agent.made}:{method}"


class Holder:
    fn = staticmethod(sync_fn)
"""


@pytest.fixture
def mod(agent_module: Any) -> Any:
    return agent_module("local_agents_mod", MODULE)


def agents(*specs: dict[str, Any]) -> AgentRuntime:
    return AgentRuntime(AgentsFile.model_validate({"agents": list(specs)}).agents)


def request(agent: str | None = "a", method: str = "m", *, capability: str | None = None,
            params: dict[str, Any] | None = None, timeout: float | None = None) -> AgentRequest:
    return AgentRequest(agent=agent, capability=capability, method=method, params=params or {},
                        idempotency_key="exec:key:1", timeout=timeout, context={"execution_id": "exec", "step": "key"})


def call(runtime: AgentRuntime, req: AgentRequest) -> Any:
    return asyncio.run(runtime(req))


def py(id_: str, entrypoint: str, **extra: Any) -> dict[str, Any]:
    return {"id": id_, "kind": "python", "entrypoint": entrypoint, **extra}


def test_sync_agent_gets_method_params_and_context(mod: Any) -> None:
    out = call(agents(py("a", "local_agents_mod:sync_fn")), request(params={"x": 1}))
    assert out == {"method": "m", "params": {"x": 1},
                   "context": {"execution_id": "exec", "step": "key", "idempotency_key": "exec:key:1"}}


def test_async_agent_and_dotted_entrypoint(mod: Any) -> None:
    runtime = agents(py("a", "local_agents_mod:async_fn"), py("b", "local_agents_mod:Holder.fn"))
    assert call(runtime, request()) == "async:m"
    assert call(runtime, request("b"))["method"] == "m"


def test_class_entrypoint_is_instantiated_once(mod: Any) -> None:
    runtime = agents(py("a", "local_agents_mod:Agent"))
    assert call(runtime, request(method="x")) == "instance 1:x"
    assert call(runtime, request(method="y")) == "instance 1:y"
    assert mod.Agent.made == 1


def test_output_envelope_is_unwrapped(mod: Any) -> None:
    assert call(agents(py("a", "local_agents_mod:sync_fn")), request(method="wrapped")) == [1, 2]


def test_exceptions_become_agent_errors_and_step_errors_pass_through(mod: Any) -> None:
    runtime = agents(py("a", "local_agents_mod:sync_fn"))
    with pytest.raises(StepError) as info:
        call(runtime, request(method="raise"))
    assert info.value.kind == "AGENT_ERROR" and "agent 'a' failed: KeyError: 'missing'" in info.value.message
    with pytest.raises(StepError) as info:
        call(runtime, request(method="step_error"))
    assert info.value.kind == "RATE_LIMITED"


@pytest.mark.parametrize("entrypoint", ["local_agents_mod:async_fn", "local_agents_mod:sync_fn"])
def test_timeouts(mod: Any, entrypoint: str) -> None:
    runtime = agents(py("a", entrypoint, timeout="100ms"))
    began = time.monotonic()
    with pytest.raises(StepError) as info:
        call(runtime, request(method="sleep", params={"s": 0.3}))
    assert info.value.kind == "TIMEOUT" and "did not answer within 0.1s" in info.value.message
    with pytest.raises(StepError) as info:  # the request's (step's) timeout wins over the agent's
        call(runtime, request(method="sleep", params={"s": 0.3}, timeout=0.05))
    assert "within 0.05s" in info.value.message
    assert time.monotonic() - began < 3


def test_capability_routing(mod: Any) -> None:
    runtime = agents(py("off", "local_agents_mod:sync_fn", capabilities=["echo"], enabled=False),
                     py("on", "local_agents_mod:async_fn", capabilities=["echo"]))
    assert call(runtime, request(None, capability="echo")) == "async:m"
    with pytest.raises(StepError, match="no enabled agent provides capability 'nope'"):
        call(runtime, request(None, capability="nope"))
    with pytest.raises(StepError, match="agent 'off' is available: it is not configured or is disabled"):
        call(runtime, request("off"))


def test_unloadable_agents(mod: Any) -> None:
    runtime = agents(py("gone", "no_such_module_xyz:fn"), py("typo", "local_agents_mod:nope"),
                     {"id": "zzz", "kind": "builtin"})
    for agent, message in (("gone", "cannot load no_such_module_xyz:fn"), ("typo", "cannot load local_agents_mod:nope"),
                           ("zzz", "no built-in agent 'zzz'")):
        with pytest.raises(StepError) as info:
            call(runtime, request(agent))
        assert info.value.kind == "AGENT_ERROR" and message in info.value.message


def test_builtin_agents_and_the_envelope() -> None:
    import dataclasses

    runtime = agents({"id": "npa", "kind": "builtin", "capabilities": ["meal-planning"]},
                     {"id": "bma", "kind": "builtin"})
    params = {"age": 34, "sex": "female", "weight_kg": 68, "height_cm": 170}
    out = call(runtime, request("npa", "calorie-targets", params=params))
    assert out["calories"] == 2188  # the bare output by default
    wrapped = call(runtime, dataclasses.replace(request("npa", "calorie-targets", params=params), envelope=True))
    assert wrapped["output"]["calories"] == 2188  # consensus asks for {"output", ...}
    with pytest.raises(StepError, match="'age' must be a number"):
        call(runtime, request("npa", "calorie-targets", params={"age": "x"}))
    with pytest.raises(StepError, match="has no method 'fly'"):
        call(runtime, request("bma", "fly"))
    assert runtime.capability_providers()["meal-planning"] == ["npa"]
