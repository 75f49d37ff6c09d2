"""Request complexity and integration strategy, as the seed's MCA Core Integration Engine defines them.

Scoring: +3 when several agents are needed, +2 per external API, +1 per database operation,
+1 when the answer is needed in real time. A score up to 2 is simple, up to 6 moderate, above
that complex; the estimated duration is score x 500 ms. Strategy (checked in this order):
simple with no multi-agent requirement -> direct; moderate with at most two agents ->
orchestrated; complex, or estimated over 10 s -> hybrid when real time is required, else
event-driven; otherwise orchestrated.

The seed reads ``analysis.realTimeRequired``, a field its analysis never sets, so as written it
could never pick hybrid; we carry the request's real-time flag into the analysis, as intended.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

STRATEGIES: dict[str, dict[str, Any]] = {
    "direct": {"description": "Direct synchronous integration", "max_complexity": "simple", "timeout_ms": 5000},
    "orchestrated": {"description": "MCA-orchestrated multi-step integration", "max_complexity": "moderate",
                     "timeout_ms": 15000},
    "event-driven": {"description": "Asynchronous event-driven integration", "max_complexity": "complex",
                     "timeout_ms": 30000},
    "hybrid": {"description": "Hybrid sync/async integration", "max_complexity": "complex", "timeout_ms": 20000},
}


@dataclass(frozen=True)
class Request:
    agents: tuple[str, ...] = ()
    external_apis: tuple[str, ...] = ()
    database_operations: int = 0
    real_time: bool = False

    @property
    def requires_multiple_agents(self) -> bool:
        return len(self.agents) > 1


@dataclass(frozen=True)
class Analysis:
    score: int
    complexity: str
    estimated_duration_ms: int
    agent_requirements: tuple[str, ...]
    required_integrations: tuple[str, ...]
    real_time: bool
    security_level: str
    strategy: str
    reasons: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["strategy_detail"] = STRATEGIES[self.strategy]
        return data


def analyze(request: Request) -> Analysis:
    score = 0
    reasons = []
    agent_requirements: tuple[str, ...] = ()
    if request.requires_multiple_agents:
        score += 3
        agent_requirements = request.agents
        reasons.append(f"+3 several agents ({', '.join(request.agents)})")
    if request.external_apis:
        score += 2 * len(request.external_apis)
        reasons.append(f"+{2 * len(request.external_apis)} external APIs ({', '.join(request.external_apis)})")
    if request.database_operations:
        score += request.database_operations
        reasons.append(f"+{request.database_operations} database operations")
    if request.real_time:
        score += 1
        reasons.append("+1 real time")
    complexity = "simple" if score <= 2 else "moderate" if score <= 6 else "complex"
    duration = score * 500
    if complexity == "simple" and not agent_requirements:
        strategy = "direct"
    elif complexity == "moderate" and len(agent_requirements) <= 2:
        strategy = "orchestrated"
    elif complexity == "complex" or duration > 10_000:
        strategy = "hybrid" if request.real_time else "event-driven"
    else:
        strategy = "orchestrated"
    return Analysis(score, complexity, duration, agent_requirements, request.external_apis, request.real_time,
                    "high" if request.real_time else "standard", strategy, tuple(reasons))


def request_for(steps: Iterable[Any], *, real_time: bool = False,
                providers: Mapping[str, list[str]] | None = None) -> Request:
    """The MCA request a workflow amounts to: its distinct agents, APIs and database operations.

    A step that names a capability counts as the agent the router would send it to when idle (the
    first provider, from ``providers``: capability -> agent ids), so `agent: npa` and
    `capability: meal-planning` served by npa are one agent; ``capability:<name>`` if none is known."""
    agents: dict[str, None] = {}
    apis: dict[str, None] = {}
    db_ops = 0

    def by_capability(capability: str) -> str:
        known = (providers or {}).get(capability)
        return known[0] if known else f"capability:{capability}"

    for step in steps:
        if step.type == "agent_call":
            agents[step.agent or by_capability(step.capability)] = None
        elif step.type == "consensus":
            for agent in step.agents or (providers or {}).get(step.capability) or [by_capability(step.capability)]:
                agents[agent] = None
        elif step.type == "api_call":
            apis[step.integration] = None
        elif step.type == "database_operation":
            db_ops += 1
    return Request(tuple(agents), tuple(apis), db_ops, real_time)
