"""`agents` and `workflows`: list and show what the project declares, and call agents."""


import enum
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

from progressive_cli.cli.app import OutputOpt, new_typer, state
from progressive_cli.cli.output import OutputFormat, emit
from progressive_cli.errors import NotFoundError

agents_app = new_typer("The agents the MCA routes to (agents.yaml).")
workflows_app = new_typer("The workflows in workflows/*.yaml.")


def _lookup(items: dict[str, Any], key: str, what: str) -> Any:
    if key in items:
        return items[key]
    import difflib

    close = difflib.get_close_matches(key, list(items), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f"; known: {', '.join(sorted(items)) or 'none'}"
    raise NotFoundError(f"no {what} '{key}'{hint}")


def _show(ctx: typer.Context, output: OutputFormat | None, data: dict[str, Any]) -> None:
    emit(data, state(ctx).fmt(output))


# --- agents -------------------------------------------------------------------------------------------
def _agent_row(agent: Any) -> dict[str, Any]:
    if agent.kind == "http":
        instances: Any = len(agent.endpoints)
    else:
        instances = agent.instances
    return {
        "id": agent.id,
        "kind": agent.kind,
        "name": agent.name,
        "capabilities": list(agent.capabilities),
        "instances": instances,
        "balancing": agent.load_balancing,
        "timeout_s": agent.timeout,
        "enabled": agent.enabled,
    }


@agents_app.command("list")
def agents_list(ctx: typer.Context, output: OutputOpt = None) -> None:
    """List agents with their kind, capabilities and instances."""
    project = state(ctx).project()
    rows = [_agent_row(a) for a in project.agents.agents]
    emit(rows, state(ctx).fmt(output), columns=[
        ("id", "ID"), ("kind", "KIND"), ("name", "NAME"), ("capabilities", "CAPABILITIES"),
        ("instances", "INSTANCES"), ("balancing", "BALANCING"), ("enabled", "ENABLED"),
    ])


@agents_app.command("status")
def agents_status(
    ctx: typer.Context,
    agent_ids: Annotated[list[str] | None, typer.Argument(metavar="[AGENT]...")] = None,
    check: Annotated[bool, typer.Option("--check", help="Probe the instances now and record heartbeats.")] = False,
    output: OutputOpt = None,
) -> None:
    """Each agent instance: status by heartbeat age (online, degraded, offline), last probe, calls in
    flight, success rate, average and p95 latency from every process, and its breaker."""
    import time

    from progressive_cli.mca.runtime import instance_report
    from progressive_cli.util import run_async

    project = state(ctx).project()
    known = {a.id: a for a in project.agents.agents}
    chosen = [_lookup(known, a, "agent") for a in agent_ids] if agent_ids else list(known.values())

    async def collect(runtime: Any) -> list[dict[str, Any]]:
        if check:
            await runtime.check([a.id for a in chosen if a.enabled])
        store = runtime.store
        return instance_report(chosen, await store.heartbeats(), await store.agent_metrics(),
                               await store.breakers("agent:"), time.time())

    rows = run_async(_with_runtime(ctx, collect))
    emit(rows, state(ctx).fmt(output), columns=[
        ("agent", "AGENT"), ("instance", "INSTANCE"), ("kind", "KIND"), ("status", "STATUS"),
        ("heartbeat_age_s", "HEARTBEAT_S"), ("probe", "PROBE"), ("in_flight", "IN_FLIGHT"), ("calls", "CALLS"),
        ("success_rate", "OK_RATE"), ("avg_ms", "AVG_MS"), ("p95_ms", "P95_MS"), ("breaker", "BREAKER"),
    ])


@agents_app.command("show")
def agents_show(ctx: typer.Context, agent_id: str = typer.Argument(..., metavar="AGENT"),
                output: OutputOpt = None) -> None:
    """Show one agent's full configuration."""
    project = state(ctx).project()
    agent = _lookup({a.id: a for a in project.agents.agents}, agent_id, "agent")
    _show(ctx, output, agent.dump())


# --- workflows ----------------------------------------------------------------------------------------
def iter_steps(steps: list[Any], depth: int = 0) -> Iterator[tuple[int, Any]]:
    """Every step of a workflow, nested ones included, with its depth."""
    for step in steps:
        yield depth, step
        children: list[list[Any]] = []
        if step.fallback is not None:
            children.append([step.fallback])
        if step.type == "condition":
            children += [step.then, step.else_, *(b.steps for b in step.branches)]
        elif step.type == "parallel":
            children += list(step.branches.values())
        elif step.type == "foreach":
            children.append(step.steps)
        for group in children:
            yield from iter_steps(group, depth + 1)


def _target(step: Any) -> str:
    getters: dict[str, Callable[[Any], str]] = {
        "agent_call": lambda s: f"{s.agent or 'capability:' + str(s.capability)}.{s.method}",
        "consensus": lambda s: f"{','.join(s.agents) or 'capability:' + str(s.capability)}.{s.method}",
        "api_call": lambda s: f"{s.integration} {s.method} {s.path}",
        "database_operation": lambda s: f"{s.integration}.{s.operation}",
        "sub_workflow": lambda s: s.workflow,
        "emit": lambda s: s.event,
        "foreach": lambda s: f"{s.items if isinstance(s.items, str) else len(s.items)} x{s.concurrency}",
        "parallel": lambda s: f"{len(s.branches)} branches, {s.join}",
        "wait": lambda s: str(s.until or f"{s.duration:g}s"),
        "condition": lambda s: str(s.condition or f"{len(s.branches)} branches"),
    }
    getter = getters.get(step.type)
    return getter(step) if getter else ""


@workflows_app.command("list")
def workflows_list(ctx: typer.Context, output: OutputOpt = None) -> None:
    """List workflows with their inputs, triggers and step counts."""
    project = state(ctx).project()
    rows = []
    for name, wf in sorted(project.workflows.items()):
        rows.append({
            "name": name,
            "steps": sum(1 for _ in iter_steps(wf.steps)),
            "inputs": [f"{k}{'*' if v.required and v.default is None else ''}" for k, v in wf.inputs.items()],
            "triggers": [t.type for t in wf.triggers],
            "description": wf.description,
            "file": str(project.workflow_files[name].relative_to(project.root)),
        })
    emit(rows, state(ctx).fmt(output), columns=[
        ("name", "NAME"), ("steps", "STEPS"), ("inputs", "INPUTS"), ("triggers", "TRIGGERS"),
        ("description", "DESCRIPTION"),
    ])


@workflows_app.command("show")
def workflows_show(ctx: typer.Context, name: str = typer.Argument(..., metavar="WORKFLOW"),
                   output: OutputOpt = None) -> None:
    """Show a workflow: its inputs, triggers and the tree of steps."""
    project = state(ctx).project()
    wf = _lookup(project.workflows, name, "workflow")
    fmt = state(ctx).fmt(output)
    if fmt is not OutputFormat.table:
        emit(wf.dump(), fmt)
        return
    rows = [
        {"step": "  " * depth + step.id, "type": step.type, "target": _target(step),
         "if": step.if_, "on_error": step.on_error or wf.on_error}
        for depth, step in iter_steps(wf.steps)
    ]
    emit(rows, fmt, columns=[("step", "STEP"), ("type", "TYPE"), ("target", "TARGET"), ("if", "IF"),
                             ("on_error", "ON ERROR")], title=f"{wf.name}: {wf.description}")


class GraphFormat(enum.StrEnum):
    mermaid = "mermaid"
    dot = "dot"


@workflows_app.command("graph")
def workflows_graph(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="WORKFLOW"),
    fmt: GraphFormat = typer.Option(GraphFormat.mermaid, "--format", "-f", help="mermaid or dot (Graphviz)."),
) -> None:
    """Print a workflow as a flow chart: Mermaid (paste into Markdown) or DOT (`| dot -Tsvg > flow.svg`)."""
    from progressive_cli.engine import graph

    project = state(ctx).project()
    wf = _lookup(project.workflows, name, "workflow")
    sys.stdout.write(graph.mermaid(wf) if fmt is GraphFormat.mermaid else graph.dot(wf))


def register(app: typer.Typer) -> None:
    app.add_typer(agents_app, name="agents")
    app.add_typer(workflows_app, name="workflows")


@agents_app.command("call")
def agents_call(
    ctx: typer.Context,
    first: str = typer.Argument(..., metavar="AGENT", help="Agent id (omit with --capability)."),
    second: str | None = typer.Argument(None, metavar="METHOD"),
    capability: str | None = typer.Option(None, "--capability", "-c", help="Route by capability instead."),
    params: str = typer.Option("{}", "--params", help="Parameters as a JSON object."),
    output: OutputOpt = None,
) -> None:
    """Send one request through the MCA to an agent (or any agent with a capability) and print its answer."""
    import json

    from progressive_cli.errors import StepError, UsageError
    from progressive_cli.util import run_async

    if capability is not None and second is not None:
        raise UsageError("with --capability give only METHOD, e.g. agents call --capability meal-planning "
                         "meal-planning --params '{...}'")
    if capability is None and second is None:
        raise UsageError("give AGENT and METHOD, e.g. agents call npa calorie-targets --params '{...}'")
    agent, method = (None, first) if capability is not None else (first, second)
    try:
        data = json.loads(params)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--params: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise UsageError("--params: expected a JSON object")
    from progressive_cli.engine.executor import AgentRequest
    from progressive_cli.store.base import new_id

    request = AgentRequest(agent=agent, capability=capability, method=str(method), params=data,
                           idempotency_key=f"cli:{new_id()}", timeout=None, context={"source": "cli"})
    try:
        result = run_async(_with_runtime(ctx, lambda runtime: runtime(request)))
    except StepError as exc:
        from progressive_cli.errors import ProgressiveError

        error = ProgressiveError(f"{exc.kind}: {exc.message}")
        raise error from None
    fmt = state(ctx).fmt(output)
    if fmt is OutputFormat.table and not isinstance(result, dict | list):
        sys.stdout.write(f"{result}\n")
    else:
        emit(result if isinstance(result, dict | list) else {"result": result}, fmt)


async def _with_runtime(ctx: typer.Context, use: Any) -> Any:
    """Run ``use(runtime)`` with the MCA runtime on the project's store; metrics and heartbeats are
    flushed and the store closed whatever happens."""
    from progressive_cli.mca.runtime import AgentRuntime
    from progressive_cli.store import project_store

    project = state(ctx).project()
    store = project_store(project)
    runtime = AgentRuntime(project.agents.agents, project.root, store=store)
    try:
        return await use(runtime)
    finally:
        try:
            await runtime.aclose()
        finally:
            await store.close()
