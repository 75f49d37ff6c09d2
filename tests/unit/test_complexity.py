"""Every branch of the seed's complexity scoring and strategy rules."""

from __future__ import annotations

import pytest

from progressive_cli.mca.complexity import Request, analyze


@pytest.mark.parametrize(
    ("request_", "score", "complexity", "strategy"),
    [
        (Request(), 0, "simple", "direct"),
        (Request(agents=("npa",)), 0, "simple", "direct"),  # one agent is not "multiple"
        (Request(external_apis=("usda",)), 2, "simple", "direct"),  # 2 <= 2
        (Request(agents=("npa", "wpa")), 3, "moderate", "orchestrated"),  # two agents: +3, moderate
        (Request(external_apis=("a", "b")), 4, "moderate", "orchestrated"),  # no agent requirements
        (Request(external_apis=("a", "b", "c")), 6, "moderate", "orchestrated"),  # 6 is still moderate
        (Request(external_apis=("a", "b", "c"), database_operations=1), 7, "complex", "event-driven"),
        (Request(external_apis=("a", "b", "c"), real_time=True), 7, "complex", "hybrid"),
        (Request(database_operations=2, real_time=True), 3, "moderate", "orchestrated"),
        (Request(agents=("a", "b", "c"), external_apis=("x",)), 5, "moderate", "orchestrated"),
    ],
)
def test_rules(request_: Request, score: int, complexity: str, strategy: str) -> None:
    analysis = analyze(request_)
    assert (analysis.score, analysis.complexity, analysis.strategy) == (score, complexity, strategy)
    assert analysis.estimated_duration_ms == score * 500


def test_moderate_with_three_agents_falls_through_to_orchestrated() -> None:
    # moderate but 3 agent requirements: not the "<= 2 agents" rule, not complex, not > 10 s: the default
    analysis = analyze(Request(agents=("a", "b", "c")))
    assert analysis.complexity == "moderate" and len(analysis.agent_requirements) == 3
    assert analysis.strategy == "orchestrated"


def test_simple_with_multiple_agents_is_not_direct() -> None:
    # multiple agents score 3, so "simple with agents" cannot happen: the direct rule needs no agents
    analysis = analyze(Request(agents=("a", "b")))
    assert analysis.complexity == "moderate" and analysis.strategy == "orchestrated"


def test_long_estimate_alone_is_event_driven() -> None:
    # complex by score: 3 (agents) + 2*2 (APIs) + 4 (db) = 11 -> 5.5 s; event-driven because complex
    analysis = analyze(Request(agents=("a", "b"), external_apis=("x", "y"), database_operations=4))
    assert (analysis.score, analysis.complexity, analysis.strategy) == (11, "complex", "event-driven")
    assert analysis.security_level == "standard"
    assert analyze(Request(real_time=True)).security_level == "high"


def test_a_capability_counts_as_the_agent_that_serves_it() -> None:
    from types import SimpleNamespace as S

    from progressive_cli.mca.complexity import request_for

    steps = [S(type="agent_call", agent="npa", capability=None),
             S(type="agent_call", agent=None, capability="meal-planning"),
             S(type="agent_call", agent=None, capability="nobody-has-it"),
             S(type="consensus", agents=[], capability="opinions")]
    providers = {"meal-planning": ["npa", "other"], "opinions": ["a", "b"]}
    assert request_for(steps, providers=providers).agents == ("npa", "capability:nobody-has-it", "a", "b")
    assert request_for(steps[:2]).agents == ("npa", "capability:meal-planning")  # no agents known
