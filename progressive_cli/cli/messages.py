"""`agents send`, `agents messages`, `agents deliver`: agent messaging from the command line.

The commands go through the MCA runtime (so delivery is an agent call with method ``message``) and
the project's state store (so a queued message waits there for any later process). The runtime
and the messaging module are imported inside the commands: ``--help`` stays light.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer

from progressive_cli.cli.app import OutputOpt, state
from progressive_cli.cli.catalog import agents_app
from progressive_cli.cli.output import OutputFormat, emit, iso_time, say
from progressive_cli.errors import ExitCode, UsageError

AgentArg = Annotated[str | None, typer.Argument(metavar="AGENT", show_default=False, help="An agent id.")]
ChannelOpt = Annotated[str | None, typer.Option(
    "--channel", "-c", metavar="CHANNEL", help="system-alerts, coordination or health-checks.")]
COLUMNS = [("id", "ID"), ("created", "CREATED"), ("from", "FROM"), ("to", "TO"), ("channel", "CHANNEL"),
           ("status", "STATUS"), ("attempts", "ATTEMPTS"), ("body", "BODY"), ("error", "ERROR")]
BODY_WIDTH = 40


def _flag(flag: str, check: Callable[[str], Any], value: str) -> Any:
    """Run a check whose UsageError should name the flag it came from."""
    try:
        return check(value)
    except UsageError as exc:
        raise UsageError(f"{flag}: {exc.message}") from None


def _time(t: float | None) -> str | None:
    return iso_time(t, "milliseconds")


def _show(messages: list[Any], fmt: OutputFormat) -> None:
    rows = [m.as_dict() for m in messages]
    for row in rows:
        row["created_at"], row["delivered_at"] = _time(row["created_at"]), _time(row["delivered_at"])
    if fmt is not OutputFormat.table:
        emit(rows, fmt)
        return
    for row in rows:
        body = json.dumps(row["body"], ensure_ascii=False, separators=(",", ":"), default=str)
        row.update(id=row["id"][:12], created=row["created_at"][:19].replace("T", " "), channel=row["channel"] or "-",
                   body=body if len(body) <= BODY_WIDTH else body[:BODY_WIDTH - 1] + "…")
    emit(rows, fmt, columns=COLUMNS)


def _messaging(ctx: typer.Context, use: Callable[[Any], Any]) -> Any:
    """Run ``use(messenger)`` with a Messenger over the MCA runtime and the project's store."""
    from progressive_cli.cli.catalog import _with_runtime
    from progressive_cli.mca.messaging import Messenger, probing_status, via_runtime
    from progressive_cli.util import run_async

    project = state(ctx).project()
    settings = project.settings.messages

    async def go(runtime: Any) -> Any:
        messenger = Messenger(runtime.store, project.agents.agents, via_runtime(runtime), probing_status(runtime),
                              retention=settings.retention, max_attempts=settings.max_attempts)
        return await use(messenger)

    try:
        return run_async(_with_runtime(ctx, go))
    except KeyboardInterrupt:
        say("interrupted")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


@agents_app.command("send")
def agents_send(
    ctx: typer.Context,
    agent: AgentArg = None,
    channel: ChannelOpt = None,
    *,
    body: Annotated[str, typer.Option("--body", "-b", metavar="JSON", help="The message: any JSON value.")],
    sender: Annotated[str, typer.Option("--from", metavar="SENDER", help="Who sends it.")] = "operator",
    output: OutputOpt = None,
) -> None:
    """Send a message to AGENT, or broadcast it to a channel's subscribers (--channel).

    A recipient that is offline gets it queued, delivered when it is back (`agents deliver`)."""
    from progressive_cli.mca.messaging import Messenger, enabled_agent

    if (agent is None) == (channel is None):
        raise UsageError("give AGENT or --channel CHANNEL (exactly one), e.g. agents send npa --body '{\"hi\": 1}'")
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--body: not JSON ({exc.msg} at column {exc.colno})") from None
    _flag("--from", Messenger.check_sender, sender)
    project = state(ctx).project()
    if agent is not None:
        enabled_agent(project.agents.agents, agent)
    else:
        _flag("--channel", Messenger.check_channel, str(channel))

    async def use(messenger: Any) -> list[Any]:
        if agent is not None:
            return [await messenger.send(sender, agent, data)]
        return list(await messenger.broadcast(sender, str(channel), data))

    messages = _messaging(ctx, use)
    if not messages:
        say(f"no enabled agent other than {sender} subscribes to {channel}; nothing was sent", style="warning")
    _show(messages, state(ctx).fmt(output))
    _summary(messages)


def _summary(messages: list[Any]) -> None:
    """One stderr line per message that did not get through; exit 1 if any failed for good."""
    for m in messages:
        if m.status == "queued":
            why = f": {m.error}" if m.error else f" ({m.recipient} is offline)"
            say(f"queued {m.id[:12]} for {m.recipient}{why}; `progressive agents deliver` retries", style="warning")
        elif m.status == "failed":
            say(f"failed {m.id[:12]} to {m.recipient} after {m.attempts} attempt(s): {m.error}", style="error")
    if any(m.status == "failed" for m in messages):
        raise typer.Exit(int(ExitCode.FAILED))


@agents_app.command("messages")
def agents_messages(
    ctx: typer.Context,
    agent: AgentArg = None,
    channel: ChannelOpt = None,
    status: Annotated[str | None, typer.Option(
        "--status", "-s", metavar="STATUS", help="queued, delivering, delivered or failed.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10000, help="How many, newest first.")] = 20,
    output: OutputOpt = None,
) -> None:
    """List messages newest first: all, or those to or from AGENT."""
    from progressive_cli.mca.messaging import Messenger, enabled_agent

    if channel is not None:
        _flag("--channel", Messenger.check_channel, channel)
    if status is not None:
        _flag("--status", Messenger.check_status, status)
    project = state(ctx).project()
    if agent is not None and agent not in {a.id for a in project.agents.agents}:
        enabled_agent(project.agents.agents, agent)  # raises NotFoundError with the closest id

    async def use(messenger: Any) -> list[Any]:
        return list(await messenger.history(agent, channel=channel, status=status, limit=limit))

    _show(_messaging(ctx, use), state(ctx).fmt(output))


@agents_app.command("deliver")
def agents_deliver(ctx: typer.Context, agent: AgentArg = None, output: OutputOpt = None) -> None:
    """Deliver queued messages (to AGENT, or to everyone) whose recipients are online now, oldest first.

    Messages older than messages.retention expire first. Exit 1 if a message failed for good."""
    from progressive_cli.mca.messaging import enabled_agent

    if agent is not None:
        enabled_agent(state(ctx).project().agents.agents, agent)

    async def use(messenger: Any) -> tuple[int, list[Any], list[Any]]:
        pruned = await messenger.prune()
        tried = list(await messenger.deliver_pending(agent, prune=False))
        return pruned, tried, list(await messenger.store.pending_messages(agent, limit=10_000))

    pruned, messages, waiting = _messaging(ctx, use)
    if pruned:
        say(f"pruned {pruned} message(s) older than messages.retention", style="dim")
    _show(messages, state(ctx).fmt(output))
    delivered = sum(m.status == "delivered" for m in messages)
    if messages:
        say(f"delivered {delivered} of {len(messages)} tried", style="ok" if delivered == len(messages) else "warning")
    untried = sorted({m.recipient for m in waiting} - {m.recipient for m in messages})
    if untried:
        say(f"{sum(m.recipient in untried for m in waiting)} message(s) still wait for {', '.join(untried)} "
            "(offline or disabled)", style="warning")
    elif not messages:
        say("nothing to deliver")
    _summary(messages)
