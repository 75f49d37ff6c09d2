"""`progressive dashboard`: the Textual dashboard (``tui/``), imported only when it starts.

Start-up does two things that do not depend on each other, each ~200 ms with a large project: loading
and validating the project (then reading the first snapshot from the store), and importing Textual.
Where the OS can fork, a child process does the first while this one does the second, so the two run
on two cores; the child hands the loaded project, the source and its first snapshot back through a pipe
(pickled: ~7 ms to take for 1,000 agents). The child only saves time: if it fails in any way (a
configuration error included) or takes longer than ``CHILD_TIMEOUT``, this process loads the project
itself, and an error is raised here as it would be without the child.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from progressive_cli.cli.app import state
from progressive_cli.errors import UnavailableError

if TYPE_CHECKING:
    from tui.data import Source

FIRST = frozenset({"overview"})
"""The view on screen when the dashboard starts."""
CHILD_TIMEOUT = 5.0
"""Seconds the dashboard waits for the child that loads the project before it does that itself."""


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
    import progressive_cli.config.project  # noqa: F401 (before the fork: imported once, for both processes)

    child = _fork(lambda: _prepare(ctx, read=True))
    try:
        from tui.app import Dashboard  # imported here while the child loads the project
    except ImportError as exc:
        raise UnavailableError(f"the dashboard needs textual: pip install 'progressive[tui]' ({exc})") from None
    finally:
        prepared = _collect(child) if child is not None else None
    project, source = prepared if prepared is not None else _prepare(ctx, read=False)
    interval = refresh if refresh is not None else float(project.settings.dashboard.refresh)
    Dashboard(project, refresh=interval, readonly=readonly, source=source).run()


def _prepare(ctx: typer.Context, *, read: bool) -> tuple[Any, Source]:
    """The project, and a source whose first snapshot is read (``read``) or being read in a thread."""
    from progressive_cli.util import run_async
    from tui.data import Source

    project = state(ctx).project()
    source = Source(project)
    if read:
        async def first() -> Any:
            try:
                return await source.load(FIRST)
            finally:
                await source.close()

        source.keep(run_async(first()))
    else:
        source.prefetch(FIRST)  # read while textual's import finishes and the app starts
    return project, source


def _fork(work: Any) -> tuple[int, int] | None:
    """Run ``work()`` in a child process that pickles its result into a pipe: (pid, read end), or None
    where there is no ``fork``."""
    if not hasattr(os, "fork"):
        return None
    import pickle

    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:  # no process to be had (EAGAIN, ENOMEM): do it all here
        os.close(read_end)
        os.close(write_end)
        return None
    if pid == 0:  # the child: no output of its own, no exit handlers, whatever happens
        import gc

        gc.disable()  # it lives for a fraction of a second: collecting would only cost (~10 ms of a big load)
        code = 1
        try:
            os.close(read_end)
            data = pickle.dumps(work(), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_end, "wb") as out:
                out.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    return pid, read_end


def _collect(child: tuple[int, int], timeout: float = CHILD_TIMEOUT) -> Any:
    """What the child made, or None if it failed or took longer than ``timeout`` seconds (it is then
    killed, and the caller does the work itself, with the dashboard on screen while the store is read)."""
    import pickle
    import signal
    import time

    pid, read_end = child
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while chunk := _read(read_end, deadline):
            chunks.append(chunk)
        if chunk is None:
            os.kill(pid, signal.SIGKILL)
            chunks = []
    finally:
        os.close(read_end)
        _pid, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    if not data or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return None
    try:
        return pickle.loads(data)
    except Exception:  # a result that does not load here is a result not made
        return None


def _read(fd: int, deadline: float) -> bytes | None:
    """The next chunk from ``fd`` (b"" at its end), or None once ``deadline`` (monotonic) has passed."""
    import select
    import time

    left = deadline - time.monotonic()
    if left <= 0 or not select.select([fd], [], [], left)[0]:
        return None
    return os.read(fd, 1 << 20)


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
