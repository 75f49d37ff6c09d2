"""`workflows graph` draws every step and edge; `plan workflow` runs nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pydot
import pytest

from progressive_cli.config.project import load_project
from progressive_cli.engine import graph


@pytest.fixture(scope="module")
def project():
    return load_project(Path(__file__).resolve().parents[2], environ={})


def _all_steps(steps):
    from progressive_cli.cli.catalog import iter_steps

    return [s for _, s in iter_steps(steps)]


@pytest.mark.parametrize("name", ["weekly-training-plan", "monthly-budget-review", "incident-escalation",
                                  "daily-nutrition-plan", "calorie-targets"])
def test_dot_parses_and_has_every_step(project, name: str) -> None:
    wf = project.workflows[name]
    text = graph.dot(wf)
    parsed = pydot.graph_from_dot_data(text)
    assert parsed and len(parsed) == 1
    labels = " ".join(n.get_label() or "" for n in parsed[0].get_nodes())
    labels += " ".join(n.get_label() or "" for sub in parsed[0].get_subgraphs() for n in sub.get_nodes())
    for step in _all_steps(wf.steps):
        assert step.id in labels, step.id


@pytest.mark.parametrize("name", ["weekly-training-plan", "monthly-budget-review", "incident-escalation"])
def test_mermaid_edges_reference_declared_nodes(project, name: str) -> None:
    text = graph.mermaid(project.workflows[name])
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    declared = {m.group(1) for ln in lines if (m := re.match(r"\s+(n\d+)[\[\(\{]", ln))}
    edges = [re.findall(r"\b(n\d+)\b", ln) for ln in lines if "-->" in ln or "-.->" in ln]
    assert edges and all(len(e) == 2 and set(e) <= declared for e in edges)
    # every node but the end is left by an edge, and every node but the start is entered by one
    sources = {e[0] for e in edges}
    targets = {e[1] for e in edges}
    assert declared - sources == {max(declared, key=lambda n: int(n[1:]))}
    assert declared - targets == {"n1"}


def test_condition_and_fallback_shapes(make_project, cli) -> None:
    root = make_project({"workflows/w.yaml": """
        name: w
        steps:
          - id: c
            type: condition
            branches:
              - {when: "inputs.x == 1", steps: [{id: one, type: transform, value: 1}]}
            else: [{id: other, type: transform, value: 2}]
          - id: risky
            type: agent_call
            agent: npa
            method: m
            on_error: fallback
            fallback: {id: safe, type: transform, value: 0}
        inputs: {x: {type: integer, default: 1}}
    """})
    r = cli("-p", str(root), "workflows", "graph", "w")
    assert r.exit_code == 0, r.stderr
    assert '{"c?<br/>switch"}' in r.stdout
    assert "-->|when inputs.x == 1|" in r.stdout and "-->|else|" in r.stdout
    assert "-.->|on error|" in r.stdout
    r = cli("-p", str(root), "workflows", "graph", "w", "--format", "dot")
    assert "style=dashed" in r.stdout and "shape=diamond" in r.stdout


def test_plan_runs_nothing_and_decides_guards(make_project, cli) -> None:
    root = make_project({"workflows/w.yaml": """
        name: w
        inputs:
          mode: {type: string, default: fast}
        steps:
          - {id: a, type: transform, value: 1, if: "inputs.mode == 'fast'"}
          - {id: b, type: transform, value: 2, if: "inputs.mode == 'slow'"}
          - {id: c, type: transform, value: 3, if: "steps.a.output == 1"}
          - {id: d, type: api_call, integration: api, path: /x}
          - {id: e, type: agent_call, capability: meal-planning, method: plan}
    """})
    r = cli("-p", str(root), "plan", "workflow", "w", "-o", "json")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    guards = {s["step"].strip(): s["if"] for s in plan["steps"]}
    assert guards == {"a": "runs", "b": "skipped", "c": "at run time: steps.a.output == 1", "d": "always",
                      "e": "always"}
    touches = {s["step"].strip(): s["touches"] for s in plan["steps"]}
    assert touches["d"] == "integration api (http://127.0.0.1:9)"
    assert touches["e"] == "capability meal-planning: npa"
    # one agent (by capability) and one external API: score 2, simple, no multi-agent need -> direct
    assert (plan["strategy"], plan["analysis"]["score"], plan["analysis"]["complexity"]) == ("direct", 2, "simple")
    assert not (root / ".progressive").exists()  # a dry run opens no store
    r = cli("-p", str(root), "plan", "workflow", "w", "-i", "mode=3", "-i", "nope=1")
    assert r.exit_code == 2 and "has no input 'nope'" in r.stderr
