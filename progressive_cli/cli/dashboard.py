"""`progressive dashboard`: the Textual dashboard (``tui/``), imported only when it starts."""

from __future__ import annotations

from typing import Annotated

import typer

from progressive_cli.cli.app import state
from progressive_cli.errors import UnavailableError


def dashboard(
    ctx: typer.Context,
    refresh: Annotated[float | None, typer.Option(
        "--refresh", min=0.1, metavar="SECONDS",
        help="Seconds between refreshes (default: dashboard.refresh, 1).")] = None,
    readonly: Annotated[bool, typer.Option("--readonly", help="Disable every action: look, do not touch.")] = False,
) -> None:
    """The live dashboard: overview, agents, executions, queues, circuit breakers, health and events, read
    from the state store (with or without a daemon). Keys follow k9s: ? help, / filter, : jump, esc back,
    ctrl+r refresh, space pause, ctrl+z faults only, ctrl+p command palette. Actions (cancel, retry,
    resume, replay, purge, breaker reset/open) are controls the daemon applies."""
    from importlib.util import find_spec

    if find_spec("textual") is None:
        raise UnavailableError("the dashboard needs textual: pip install 'progressive[tui]'")
    from tui.data import Source

    project = state(ctx).project()
    interval = refresh if refresh is not None else float(project.settings.dashboard.refresh)
    source = Source(project)
    source.prefetch(frozenset({"overview"}))  # the first snapshot is read while textual is imported
    from tui.app import Dashboard

    Dashboard(project, refresh=interval, readonly=readonly, source=source).run()


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
