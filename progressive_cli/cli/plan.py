"""`plan workflow`: a dry run that shows what a run would do, without running anything."""

from typing import Annotated, Any

import typer

from progressive_cli.cli.app import InputFileOpt, InputsOpt, OutputOpt, new_typer, read_inputs, state
from progressive_cli.cli.output import OutputFormat, emit, say

plan_app = new_typer("Dry runs: what a run would do, without running it.")


def _touches(step: Any, project: Any) -> str:
    """The agent or integration a step reaches, as text (URLs keep ${env:...} references, never values)."""
    if step.type in ("agent_call", "consensus"):
        agents = getattr(step, "agents", None) or ([step.agent] if getattr(step, "agent", None) else [])
        if agents:
            return ", ".join(f"agent {a} ({project.agent(a).kind})" for a in agents if project.agent(a))
        providers = [a.id for a in project.agents.agents if step.capability in a.capabilities]
        return f"capability {step.capability}: {', '.join(providers)}"
    if step.type in ("api_call", "database_operation"):
        integration = project.integration(step.integration)
        where = getattr(integration, "base_url", None) or integration.type
        state_note = "" if integration.enabled else " [disabled]"
        return f"integration {step.integration} ({where}){state_note}"
    if step.type == "sub_workflow":
        return f"workflow {step.workflow}"
    if step.type == "emit":
        return f"event {step.event}"
    return ""


def _guard(step: Any, ctx: dict[str, Any]) -> str:
    if step.if_ is None:
        return "always"
    from progressive_cli.engine.expressions import DEFAULT_ROOTS, ExpressionError, compile_condition

    expr = compile_condition(step.if_, DEFAULT_ROOTS)
    if any(root in ("steps", "vars") for root, _ in expr.references):
        return f"at run time: {step.if_}"
    try:
        return "runs" if expr(ctx) else "skipped"
    except ExpressionError:
        return f"at run time: {step.if_}"


def workflow_analysis(workflow: Any, agents: list[Any]) -> Any:
    """The MCA's complexity analysis and strategy for a workflow: what `plan` shows and `run` follows."""
    from progressive_cli.cli.catalog import iter_steps
    from progressive_cli.mca.complexity import analyze, request_for
    from progressive_cli.mca.router import capability_providers

    return analyze(request_for((s for _, s in iter_steps(workflow.steps)), real_time=workflow.realtime,
                               providers=capability_providers(agents)))


@plan_app.command("workflow")
def plan_workflow(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="WORKFLOW")],
    inputs: InputsOpt = None,
    input_file: InputFileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Show the resolved inputs, every step that would run and what each touches; runs nothing."""
    from progressive_cli.cli.catalog import _lookup, iter_steps
    from progressive_cli.engine.inputs import resolve_inputs

    project = state(ctx).project()
    wf = _lookup(project.workflows, name, "workflow")
    resolved = resolve_inputs(wf.inputs, read_inputs(inputs, input_file), wf.name)
    ctx_data = {"inputs": resolved, "execution": {"id": "(plan)", "workflow": wf.name}}
    steps = [{"step": "  " * depth + step.id, "type": step.type, "touches": _touches(step, project),
              "if": _guard(step, ctx_data), "timeout_s": step.timeout,
              "retry": step.retry.max_attempts if step.retry else (wf.retry.max_attempts if wf.retry else 1),
              "on_error": step.on_error or wf.on_error}
             for depth, step in iter_steps(wf.steps)]
    analysis = workflow_analysis(wf, project.agents.agents)
    plan = {"workflow": wf.name, "inputs": resolved, "timeout_s": wf.timeout, "concurrency": wf.concurrency,
            "analysis": analysis.as_dict(), "strategy": analysis.strategy, "steps": steps}
    fmt = state(ctx).fmt(output)
    if fmt is not OutputFormat.table:
        emit(plan, fmt)
        return
    emit(resolved, fmt)
    emit(steps, fmt, columns=[("step", "STEP"), ("type", "TYPE"), ("touches", "TOUCHES"), ("if", "IF"),
                              ("retry", "ATTEMPTS"), ("on_error", "ON ERROR")])
    say(f"{wf.name}: {len(steps)} steps, timeout {wf.timeout:g}s; complexity {analysis.complexity} "
        f"(score {analysis.score}: {'; '.join(analysis.reasons) or 'nothing to add'}), estimated "
        f"{analysis.estimated_duration_ms} ms, MCA strategy {analysis.strategy}; nothing was run")


def register(app: typer.Typer) -> None:
    app.add_typer(plan_app, name="plan")
