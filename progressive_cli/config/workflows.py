"""workflows/*.yaml: one workflow per file.

Strings anywhere in ``params``, ``value``, ``data``, ``path``, ``query``, ``headers``, ``json``,
``inputs``, ``until``, literal ``items`` lists and ``outputs`` may hold ``${{ expression }}``
parts; fields that are always expressions (``if``, ``condition``, ``branches[].when``, string
``items``, trigger ``filter``) may also be written bare. See docs/workflows.md.
"""


from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from progressive_cli.config.common import Backoff, Duration, Identifier, Model, empty_list
from progressive_cli.config.integrations import ERROR_KINDS, ErrorKind

StepErrorKind = Literal[
    "API_ERROR", "RATE_LIMITED", "CIRCUIT_BREAKER_OPEN", "NETWORK_ERROR", "TIMEOUT",
    "AGENT_ERROR", "STEP_ERROR", "DATABASE_ERROR",
]
STEP_ERROR_KINDS = (*ERROR_KINDS, "AGENT_ERROR", "STEP_ERROR", "DATABASE_ERROR")
OnError = Literal["fail", "continue", "fallback"]
InputType = Literal["string", "number", "integer", "boolean", "object", "list"]
Expr = Annotated[str, Field(min_length=1, description="an expression, bare or as ${{ ... }}")]


_RETRIED: tuple[StepErrorKind, ...] = ("RATE_LIMITED", "NETWORK_ERROR", "TIMEOUT", "CIRCUIT_BREAKER_OPEN")


class RetryPolicy(Backoff):
    max_attempts: int = Field(1, ge=1, le=100)
    """Attempts in all; 1 (the default) means no retry."""
    max_delay: Duration = 60.0
    retry_on: list[StepErrorKind] = Field(default_factory=lambda: list(_RETRIED))


class _StepBase(Model):
    id: Identifier
    name: str = ""
    if_: Expr | None = Field(None, alias="if")
    """Run the step only when this expression is true; otherwise it is skipped."""
    output: Identifier | None = None
    """Also publish the step's result as `vars.<output>`."""
    timeout: Duration | None = None
    retry: RetryPolicy | None = None
    on_error: OnError | None = None
    """fail (default) stops the run; continue records the error and goes on; fallback runs `fallback`."""
    fallback: "Step | None" = None

    @model_validator(mode="after")
    def _fallback(self) -> Self:
        if self.on_error == "fallback" and self.fallback is None:
            raise ValueError("on_error: fallback needs a 'fallback' step")
        if self.fallback is not None and self.on_error not in (None, "fallback"):
            raise ValueError(f"'fallback' is set but on_error is '{self.on_error}'")
        return self


class TransformStep(_StepBase):
    type: Literal["transform"]
    value: Any
    """Any YAML value; strings in it may hold ${{ }} expressions."""


class AgentCallStep(_StepBase):
    type: Literal["agent_call"]
    agent: Identifier | None = None
    capability: str | None = None
    method: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _target(self) -> Self:
        if (self.agent is None) == (self.capability is None):
            raise ValueError("an agent_call needs exactly one of 'agent' or 'capability'")
        return self


class ApiCallStep(_StepBase):
    type: Literal["api_call"]
    integration: Identifier
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    path: str = "/"
    query: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    json_: Any = Field(None, alias="json")
    idempotent: bool | None = None
    """Override whether the call may be retried (defaults to the HTTP method's semantics)."""
    idempotency_key: bool = False
    """Send `Idempotency-Key: <execution id>:<step key>`, the same on every retry and resume, so the API can
    drop duplicates; a POST that sends it is retried like an idempotent method."""


class DatabaseStep(_StepBase):
    type: Literal["database_operation"]
    integration: Identifier
    operation: str
    """Depends on the database: query/execute/transaction, get/set/..., find/insert_one/..., add/search/..."""
    params: dict[str, Any] = Field(default_factory=dict)


class Branch(Model):
    when: Expr
    steps: list["Step"] = Field(min_length=1)


class ConditionStep(_StepBase):
    type: Literal["condition"]
    condition: Expr | None = None
    then: list["Step"] = Field(default_factory=empty_list)
    else_: list["Step"] = Field(default_factory=empty_list, alias="else")
    branches: list[Branch] = Field(default_factory=empty_list)
    """Switch form: the first branch whose `when` is true runs; `else` runs if none is."""

    @model_validator(mode="after")
    def _form(self) -> Self:
        if self.condition is not None and self.branches:
            raise ValueError("use either 'condition' with 'then'/'else' or 'branches', not both")
        if self.branches and self.then:
            raise ValueError("'then' is for the 'condition' form; with 'branches' put the steps in each branch "
                             "and the default in 'else'")
        if self.condition is None and not self.branches:
            raise ValueError("a condition step needs 'condition' (with 'then') or 'branches'")
        if self.condition is not None and not self.then and not self.else_:
            raise ValueError("a condition step needs 'then' or 'else' steps")
        return self


class ParallelStep(_StepBase):
    type: Literal["parallel"]
    branches: dict[Identifier, list["Step"]] = Field(min_length=1)
    join: Literal["fail_fast", "collect_all"] = "fail_fast"
    """fail_fast cancels the others when one branch fails; collect_all waits and reports each."""
    min_success: int | None = Field(None, ge=1)
    """collect_all: the step fails when fewer branches than this succeed (default 1: only if all fail)."""
    combine: Expr | None = None
    """An expression whose value is the step's output, over `branches` (branch -> output, null if it
    failed), `succeeded` (branch names) and `failed` (branch -> error). Default: the `branches` mapping."""

    @model_validator(mode="after")
    def _enough_branches(self) -> Self:
        if self.min_success is not None and self.min_success > len(self.branches):
            raise ValueError(f"min_success is {self.min_success} but there are {len(self.branches)} branch(es)")
        if self.min_success is not None and self.join != "collect_all":
            raise ValueError("min_success needs join: collect_all")
        return self


class ForeachStep(_StepBase):
    type: Literal["foreach"]
    items: Expr | list[Any]
    as_: Identifier = Field("item", alias="as")
    """The name each item has inside the loop body (its position is `<as>_index`)."""
    concurrency: int = Field(1, ge=1, le=1000)
    steps: list["Step"] = Field(min_length=1)


class WaitStep(_StepBase):
    type: Literal["wait"]
    duration: Duration | None = None
    until: datetime | str | None = None
    """An ISO-8601 timestamp such as `2026-12-01T09:00:00Z`, or a `${{ }}` expression giving one."""

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.duration is None) == (self.until is None):
            raise ValueError("a wait step needs exactly one of 'duration' or 'until'")
        return self


class EmitStep(_StepBase):
    type: Literal["emit"]
    event: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$")
    data: Any = None


class SubWorkflowStep(_StepBase):
    type: Literal["sub_workflow"]
    workflow: str
    inputs: dict[str, Any] = Field(default_factory=dict)


class ConsensusStep(_StepBase):
    type: Literal["consensus"]
    agents: list[Identifier] = Field(default_factory=empty_list)
    capability: str | None = None
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    strategy: Literal["highest_confidence", "majority", "weighted"] = "highest_confidence"
    min_agents: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _who(self) -> Self:
        if bool(self.agents) == (self.capability is not None):
            raise ValueError("a consensus step needs exactly one of 'agents' or 'capability'")
        return self


Step = Annotated[
    TransformStep | AgentCallStep | ApiCallStep | DatabaseStep | ConditionStep | ParallelStep
    | ForeachStep | WaitStep | EmitStep | SubWorkflowStep | ConsensusStep,
    Field(discriminator="type"),
]
STEP_TYPES = (
    "transform", "agent_call", "api_call", "database_operation", "condition", "parallel",
    "foreach", "wait", "emit", "sub_workflow", "consensus",
)


class Input(Model):
    type: InputType = "string"
    description: str = ""
    required: bool = False
    default: Any = None
    enum: list[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None


class CronTrigger(Model):
    type: Literal["cron"]
    cron: str
    """Five fields: minute hour day-of-month month day-of-week, or @daily, @hourly, ..."""
    timezone: str = "UTC"
    inputs: dict[str, Any] = Field(default_factory=dict)


class IntervalTrigger(Model):
    type: Literal["interval"]
    every: Duration = Field(gt=0)
    inputs: dict[str, Any] = Field(default_factory=dict)


class EventTrigger(Model):
    type: Literal["event"]
    event: str = Field(pattern=r"^[a-z*][a-z0-9_.*-]*$")
    """An event type or pattern such as `integration.alert` or `workflow.*`."""
    filter: Expr | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)


Trigger = Annotated[CronTrigger | IntervalTrigger | EventTrigger, Field(discriminator="type")]


class WorkflowFile(Model):
    """Schema of one workflows/*.yaml file."""

    name: Identifier
    description: str = ""
    version: str = "1"
    inputs: dict[Identifier, Input] = Field(default_factory=dict)
    triggers: list[Trigger] = Field(default_factory=empty_list)
    timeout: Duration = 300.0
    """The whole run's limit (the seed's default is 5 minutes)."""
    realtime: bool = False
    """Callers need the answer in real time: the MCA scores +1 and picks hybrid over event-driven."""
    concurrency: int | None = Field(None, ge=1)
    """Most runs of this workflow at once; unlimited when unset."""
    on_error: Literal["fail", "continue"] = "fail"
    """Default error policy for steps that do not set one."""
    retry: RetryPolicy | None = None
    """Default retry policy for steps that do not set one."""
    steps: list["Step"] = Field(min_length=1)
    outputs: dict[str, Any] = Field(default_factory=dict)




__all__ = ["STEP_ERROR_KINDS", "STEP_TYPES", "ErrorKind", "Step", "WorkflowFile"]
