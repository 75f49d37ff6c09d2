"""`health` and `health history`: the health monitor's checks, with Nagios exit codes for cron and CI."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from progressive_cli.cli.app import OutputOpt, state, with_store
from progressive_cli.cli.output import OutputFormat, emit, is_tty, say
from progressive_cli.errors import ExitCode, UsageError
from progressive_cli.health.history import sparkline, trends

health_app = typer.Typer(
    help="Run the health checks (exit 0 healthy, 1 degraded, 2 unhealthy, 3 unknown), or show their history.",
    invoke_without_command=True, no_args_is_help=False, rich_markup_mode=None,
)
NAGIOS = {"healthy": 0, "degraded": 1, "unhealthy": 2, "unknown": 3}


def register(app: typer.Typer) -> None:
    app.add_typer(health_app, name="health")
    app.command("metrics")(metrics)


def metrics(ctx: typer.Context) -> None:
    """Print the state store as Prometheus text exposition: executions and steps by status, queue depths
    (work queue, event-bus retries, DLQ, lag), breaker states, integration and agent call counters, and the
    newest health check results. For a node_exporter textfile collector: progressive metrics > x.prom."""
    from progressive_cli.health.prometheus import exposition

    sys.stdout.write(with_store(ctx, exposition))


def _ago(at: float, now: float) -> str:
    seconds = max(0.0, now - at)
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


async def run_checks(project: Any, only: list[str] | None) -> list[dict[str, Any]]:
    """Run the checks in this process and record them (with retention) in the store."""
    from progressive_cli.health.monitor import Monitor
    from progressive_cli.integrations.hub import Integrations
    from progressive_cli.mca.runtime import AgentRuntime
    from progressive_cli.store import project_store

    store = project_store(project)
    hub = Integrations(project.integrations.integrations, store)
    runtime = AgentRuntime(project.agents.agents, project.root, store=store)
    try:
        results, _notices = await Monitor(project, store, hub, runtime).run_and_record(only)
        return results
    finally:
        try:
            await runtime.aclose()
            await hub.close()
        finally:
            await store.close()


@health_app.callback()
def health(
    ctx: typer.Context,
    check: Annotated[list[str] | None, typer.Option("--check", "-c", metavar="NAME",
                                                    help="Only this check or group (repeat for more).")] = None,
    fail_on: Annotated[str, typer.Option("--fail-on", metavar="degraded|unhealthy",
                                         help="The least status that exits non-zero.")] = "degraded",
    watch: Annotated[float | None, typer.Option("--watch", "-w", metavar="SECONDS", min=1.0,
                                                help="Run again every SECONDS until Ctrl-C.")] = None,
    cached: Annotated[bool, typer.Option("--cached", help="Show the newest recorded results (the daemon's) "
                                         "and their age instead of running the checks.")] = False,
    output: OutputOpt = None,
) -> None:
    """Run every health check now, in this process, and record the results: the state store, the MCA and
    agents, each database and API, and the event bus. Exit codes follow Nagios: 0 healthy, 1 degraded,
    2 unhealthy, 3 unknown (with --fail-on unhealthy, degraded exits 0)."""
    if ctx.invoked_subcommand is not None:
        return
    from progressive_cli.util import run_async

    if fail_on not in ("degraded", "unhealthy"):
        raise UsageError(f"--fail-on {fail_on!r}: expected degraded or unhealthy")
    project = state(ctx).project()
    fmt = state(ctx).fmt(output)
    while True:
        if cached:
            rows = _cached(ctx, check)
        else:
            try:
                rows = run_async(run_checks(project, check))
            except KeyboardInterrupt:
                raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        overall = _overall(rows)
        if watch and is_tty(sys.stdout) and fmt is OutputFormat.table:
            sys.stdout.write("\x1b[2J\x1b[H")
        _show(rows, overall, fmt, cached)
        if not watch:
            break
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            raise typer.Exit(int(ExitCode.OK)) from None
    code = NAGIOS[overall]
    if fail_on == "unhealthy" and overall == "degraded":
        code = 0
    if code:
        raise typer.Exit(code)


def _overall(rows: list[dict[str, Any]]) -> str:
    from progressive_cli.health.monitor import worst

    return worst([r["status"] for r in rows]) if rows else "unknown"


def _cached(ctx: typer.Context, only: list[str] | None) -> list[dict[str, Any]]:
    now = time.time()
    rows = [r for r in with_store(ctx, lambda store: store.latest_health())
            if not only or r["name"] in only or any(r["name"].startswith(n + "/") for n in only)]
    for row in rows:
        row["age_s"] = round(now - row["at"], 1)
    return rows


def _show(rows: list[dict[str, Any]], overall: str, fmt: OutputFormat, cached: bool) -> None:
    if fmt is not OutputFormat.table:
        emit({"status": overall, "checks": rows}, fmt)
        return
    marks = {"healthy": "✓ healthy", "degraded": "! degraded", "unhealthy": "✗ unhealthy", "unknown": "? unknown"}
    now = time.time()
    table = [{**r, "state": marks.get(r["status"], r["status"]), "age": _ago(r["at"], now)} for r in rows]
    columns = [("name", "CHECK"), ("state", "STATUS"), ("response_ms", "RESPONSE_MS")]
    if cached:
        columns.append(("age", "AGE"))
    emit(table, fmt, columns=[*columns, ("detail", "DETAIL")])
    say(f"overall: {marks.get(overall, overall)}", style="ok" if overall == "healthy" else "error")


@health_app.command("history")
def health_history(
    ctx: typer.Context,
    hours: Annotated[float, typer.Option("--hours", min=0.01, help="How far back to look.")] = 24.0,
    check: Annotated[list[str] | None, typer.Option("--check", "-c", metavar="NAME")] = None,
    output: OutputOpt = None,
) -> None:
    """Per check over the window: runs, availability % (healthy or degraded), average and worst response
    time, the last status, and a sparkline of response times on a terminal."""
    history = with_store(ctx, lambda store: store.health_history(time.time() - hours * 3600, check))
    rows = trends(history)
    fmt = state(ctx).fmt(output)
    if fmt is OutputFormat.table and is_tty(sys.stdout):
        for row in rows:
            row["trend"] = sparkline(row.pop("response_series"))
        columns = [("name", "CHECK"), ("runs", "RUNS"), ("availability_pct", "AVAIL_%"), ("avg_ms", "AVG_MS"),
                   ("max_ms", "MAX_MS"), ("last", "LAST"), ("trend", "RESPONSE TREND")]
    else:
        for row in rows:
            row.pop("response_series")
        columns = [("name", "CHECK"), ("runs", "RUNS"), ("availability_pct", "AVAIL_%"), ("avg_ms", "AVG_MS"),
                   ("max_ms", "MAX_MS"), ("last", "LAST")]
    emit(rows, fmt, columns=columns)
