"""The MCA as a built-in agent, and python agents found in the project directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from progressive_cli.agents.builtin import AgentInputError
from progressive_cli.agents.builtin.mca import request_routing, strategy_selection


def test_strategy_selection_follows_the_seed() -> None:
    # 2 agents (+3) + 1 API (+2) + real time (+1) = 6: moderate, 3000 ms, two agents -> orchestrated
    out = strategy_selection({"agents": ["npa", "wpa"], "external_apis": ["usda"], "real_time": True}, {})
    assert (out["score"], out["complexity"], out["estimated_duration_ms"], out["strategy"]) == (
        6, "moderate", 3000, "orchestrated")
    assert out["security_level"] == "high"
    assert strategy_selection({"database_operations": ["q1", "q2"]}, {})["score"] == 2
    with pytest.raises(AgentInputError, match="'real_time' must be true or false"):
        strategy_selection({"real_time": "yes"}, {})


def test_request_routing_uses_the_runtime_table() -> None:
    table = {"npa": ["meal-planning"], "npa2": ["meal-planning"]}
    assert request_routing({"capability": "meal-planning"}, {"agents": table}) == {
        "agent": "npa", "providers": ["npa", "npa2"]}
    with pytest.raises(AgentInputError, match="no enabled agent provides 'flying'"):
        request_routing({"capability": "flying"}, {"agents": table})
    with pytest.raises(AgentInputError, match="exactly one"):
        request_routing({}, {"agents": table})


def test_python_agent_in_the_project_directory(cli, make_project) -> None:
    root: Path = make_project({
        "agents.yaml": "agents:\n  - {id: local, kind: python, entrypoint: 'project_local_agent:handle'}\n",
        "project_local_agent.py": "def handle(method, params, context):\n    return {'output': method.upper()}\n",
    })
    r = cli("-p", str(root), "agents", "call", "local", "ping", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == {"result": "PING"}


def test_mca_through_the_cli(cli, repo_root: Path) -> None:
    r = cli("-p", str(repo_root), "agents", "call", "mca", "request-routing", "--params",
            '{"capability": "budget-optimization"}', "-o", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["agent"] == "bma"
