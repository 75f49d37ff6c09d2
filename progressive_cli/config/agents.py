"""agents.yaml: the agents the MCA routes to."""


from typing import Annotated, Literal, Self, get_args

from pydantic import Field, model_validator

from progressive_cli.config.common import Duration, EnvStr, Identifier, Model, empty_list

BUILTIN_AGENTS: dict[str, tuple[str, ...]] = {
    # implementation name -> the capabilities it provides (seed: MCA Core Integration Engine)
    "mca": ("request-routing", "load-balancing", "coordination", "strategy-selection"),
    "npa": ("meal-planning", "nutrition-analysis", "dietary-recommendations"),
    "wpa": ("workout-design", "exercise-selection", "progress-tracking"),
    "bma": ("expense-tracking", "budget-optimization", "financial-planning"),
    "rpa": ("report-generation", "data-aggregation"),
    "ema": ("alert-evaluation", "incident-management", "escalation"),
}

LoadBalancing = Literal["round_robin", "least_in_flight", "weighted"]
Capability = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$")]
Channel = Literal["system-alerts", "coordination", "health-checks"]
"""The broadcast channels of agent messaging (the seed's Inter-Agent Communication Framework)."""


class Heartbeat(Model):
    interval: Duration = 15.0
    """How often the agent reports in."""
    degraded_after: Duration = 30.0
    """Heartbeat age after which the agent is shown as degraded."""
    offline_after: Duration = 60.0
    """Heartbeat age after which the agent is offline (the seed uses 60 s)."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.interval <= self.degraded_after <= self.offline_after:
            raise ValueError("heartbeat needs interval <= degraded_after <= offline_after")
        return self


class InstanceBreaker(Model):
    """A circuit breaker per instance: after `fail_max` failed calls in a row (network errors, timeouts,
    crashes, HTTP 5xx) the MCA stops routing to the instance for `reset_timeout`, then lets one trial call
    through (half-open)."""

    fail_max: int = Field(5, ge=1, le=1000)
    reset_timeout: Duration = 30.0


class Endpoint(Model):
    url: EnvStr
    """Base URL of one instance of an http agent."""
    weight: int = Field(1, ge=1, le=1000)


class _AgentBase(Model):
    id: Identifier
    name: str = ""
    description: str = ""
    capabilities: list[Capability] = Field(default_factory=empty_list)
    timeout: Duration = 30.0
    """Longest a single call may take."""
    concurrency: int = Field(10, ge=1, le=10_000)
    """Most calls in flight at once, per instance."""
    heartbeat: Heartbeat = Field(default_factory=Heartbeat)
    load_balancing: LoadBalancing = "round_robin"
    breaker: InstanceBreaker = Field(default_factory=InstanceBreaker)
    enabled: bool = True
    channels: list[Channel] = Field(default_factory=lambda: list(get_args(Channel)))
    """Broadcast channels the agent receives (progressive_cli/mca/messaging.py); [] for none."""


class BuiltinAgent(_AgentBase):
    kind: Literal["builtin"]
    builtin: str | None = None
    """Which built-in implementation (mca, npa, wpa, bma, rpa, ema); defaults to the id."""
    instances: int = Field(1, ge=1, le=1000)

    @property
    def implementation(self) -> str:
        return self.builtin or self.id


class PythonAgent(_AgentBase):
    kind: Literal["python"]
    entrypoint: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    """`package.module:callable_or_class`."""
    instances: int = Field(1, ge=1, le=1000)


class HttpAgent(_AgentBase):
    kind: Literal["http"]
    endpoints: list[Endpoint] = Field(min_length=1)
    headers: dict[str, EnvStr] = Field(default_factory=dict)
    health_path: str = "/health"


class CommandAgent(_AgentBase):
    kind: Literal["command"]
    command: list[EnvStr] = Field(min_length=1)
    """argv of a process that reads one JSON request on stdin and writes one JSON response."""
    cwd: str | None = None
    env: dict[str, EnvStr] = Field(default_factory=dict)
    instances: int = Field(1, ge=1, le=1000)


Agent = Annotated[BuiltinAgent | PythonAgent | HttpAgent | CommandAgent, Field(discriminator="kind")]


class AgentsFile(Model):
    """Schema of agents.yaml."""

    version: Literal[1] = 1
    agents: list[Agent] = Field(default_factory=empty_list)
