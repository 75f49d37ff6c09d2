"""MCA routing: a request names an agent or a capability; the router picks an instance.

Load balancing is per agent (``load_balancing`` in agents.yaml): ``round_robin``,
``least_in_flight`` (fewest calls in progress; ties rotate), or ``weighted`` (smooth weighted
round-robin, as nginx does it: over any window each instance gets its weight's share, spread
out rather than in bursts). Unhealthy instances are skipped; when none is left the request
fails with :class:`NoInstanceAvailable`, which names the agent and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from progressive_cli.errors import StepError

HealthCheck = Callable[[str, str], str | None]
"""(agent id, instance name) -> None when healthy, else the reason it is not."""


class NoInstanceAvailable(StepError):
    def __init__(self, agent: str, reason: str) -> None:
        super().__init__("AGENT_ERROR", f"no instance of agent '{agent}' is available: {reason}",
                         {"agent": agent, "reason": reason})


@dataclass
class Instance:
    agent: str
    name: str
    weight: int = 1
    in_flight: int = 0
    current: int = 0  # smooth weighted round-robin state


@dataclass
class _Pool:
    agent: Any
    instances: list[Instance]
    cursor: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def instances_of(agent: Any) -> list[Instance]:
    if agent.kind == "http":
        return [Instance(agent.id, endpoint.url, endpoint.weight) for endpoint in agent.endpoints]
    return [Instance(agent.id, f"{agent.id}#{i}") for i in range(getattr(agent, "instances", 1))]


def capability_providers(agents: list[Any]) -> dict[str, list[str]]:
    """capability -> the enabled agents that offer it, in declaration order."""
    providers: dict[str, list[str]] = {}
    for agent in agents:
        if agent.enabled:
            for capability in agent.capabilities:
                providers.setdefault(capability, []).append(agent.id)
    return providers


class Router:
    def __init__(self, agents: list[Any], health: HealthCheck | None = None) -> None:
        self.pools = {a.id: _Pool(a, instances_of(a)) for a in agents if a.enabled}
        self.health = health

    def agent_for(self, agent: str | None, capability: str | None) -> Any:
        if agent is not None:
            pool = self.pools.get(agent)
            if pool is None:
                raise NoInstanceAvailable(agent, "it is not configured or is disabled")
            return pool.agent
        providers = [p.agent for p in self.pools.values() if capability in p.agent.capabilities]
        if not providers:
            raise StepError("AGENT_ERROR", f"no enabled agent provides capability '{capability}'")
        # several agents offer the capability: the least busy one, then the first declared
        return min(providers, key=lambda a: sum(i.in_flight for i in self.pools[a.id].instances))

    def pick(self, agent_id: str) -> Instance:
        pool = self.pools[agent_id]
        if pool.agent.load_balancing == "round_robin":
            # the hot path: ask about instances in turn from the cursor, stop at the first healthy one
            count = len(pool.instances)
            for step in range(count):
                candidate = pool.instances[(pool.cursor + step) % count]
                if self.health is None or self.health(agent_id, candidate.name) is None:
                    pool.cursor = (pool.cursor + step + 1) % count
                    pool.counts[candidate.name] = pool.counts.get(candidate.name, 0) + 1
                    return candidate
        healthy, reasons = [], []
        for instance in pool.instances:
            problem = self.health(agent_id, instance.name) if self.health else None
            if problem is None:
                healthy.append(instance)
            else:
                reasons.append(f"{instance.name}: {problem}")
        if not healthy:
            raise NoInstanceAvailable(agent_id, "; ".join(reasons) or "it has no instances")
        strategy = pool.agent.load_balancing
        if strategy == "least_in_flight":
            low = min(i.in_flight for i in healthy)
            tied = [i for i in healthy if i.in_flight == low]
            chosen = tied[pool.cursor % len(tied)]
            pool.cursor += 1
        else:  # weighted (round_robin has returned above, or found nothing healthy and raised)
            total = sum(i.weight for i in healthy)
            for instance in healthy:
                instance.current += instance.weight
            chosen = max(healthy, key=lambda i: i.current)
            chosen.current -= total
        pool.counts[chosen.name] = pool.counts.get(chosen.name, 0) + 1
        return chosen
