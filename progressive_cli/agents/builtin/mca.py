"""The Master Control Agent as a callable agent: its analysis and routing, on request.

- ``strategy-selection`` (agents, external_apis, database_operations, real_time): the seed's
  complexity score, level, estimated duration and strategy (``progressive_cli.mca.complexity``).
- ``request-routing`` (agent or capability): which configured agent would serve the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from progressive_cli.agents.builtin import AgentInputError, items
from progressive_cli.mca.complexity import Request, analyze


def strategy_selection(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    agents = items(params, "agents", default=[])
    apis = items(params, "external_apis", default=[])
    operations = params.get("database_operations", 0)
    if isinstance(operations, list):
        operations = len(operations)
    if isinstance(operations, bool) or not isinstance(operations, int) or operations < 0:
        raise AgentInputError(f"'database_operations' must be a whole number or a list, got {operations!r}")
    real_time = params.get("real_time", False)
    if not isinstance(real_time, bool):
        raise AgentInputError(f"'real_time' must be true or false, got {real_time!r}")
    request = Request(tuple(str(a) for a in agents), tuple(str(a) for a in apis), operations, real_time)
    return analyze(request).as_dict()


def request_routing(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    agents = context.get("agents")
    if not isinstance(agents, Mapping):
        raise AgentInputError("request-routing needs the runtime's agent table in its context")
    agent, capability = params.get("agent"), params.get("capability")
    if (agent is None) == (capability is None):
        raise AgentInputError("give exactly one of 'agent' or 'capability'")
    if agent is not None:
        if agent not in agents:
            raise AgentInputError(f"'agent': no enabled agent '{agent}'")
        return {"agent": agent, "capabilities": list(agents[agent])}
    providers = [a for a, caps in agents.items() if capability in caps]
    if not providers:
        raise AgentInputError(f"'capability': no enabled agent provides '{capability}'")
    return {"agent": providers[0], "providers": providers}


METHODS = {"strategy-selection": strategy_selection, "request-routing": request_routing}
