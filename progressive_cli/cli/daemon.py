"""`daemon run|start|stop|status|reload`: the daemon in the foreground or the background."""

from __future__ import annotations

import contextlib
import time
from typing import Annotated, Any

import typer

from progressive_cli.cli.app import ControlWaitOpt, OutputOpt, apply_control, new_typer, state, with_store
from progressive_cli.cli.output import OutputFormat, emit, iso_time, say
from progressive_cli.cli.runs import _engine, _run, new_worker
from progressive_cli.errors import ExitCode, UnavailableError

daemon_app = new_typer("The daemon: the worker, workflow triggers, health checks and the event bus in one process.")


@daemon_app.command("run")
def daemon_run(
    ctx: typer.Context,
    log_format: Annotated[str | None, typer.Option(
        "--log-format", metavar="text|json", help="Log lines as text or one JSON object each "
        "(default: the logging.format setting, text).")] = None,
) -> None:
    """Run the daemon in the foreground (for systemd and containers): work the queue, fire cron, interval
    and event triggers, run the health checks every health.interval with alerts, pump the event bus,
    apply retention. SIGHUP reloads the project after validating it (an invalid one is refused and the
    old one kept). SIGTERM or Ctrl-C: the runs in flight get daemon.grace seconds, then it exits 0.
    Exits 5 if a daemon or worker already works this store."""
    import asyncio
    import os

    from progressive_cli.daemon import Daemon
    from progressive_cli.errors import UsageError
    from progressive_cli.worker import WorkerLock, worker_paths

    if log_format not in (None, "text", "json"):
        raise UsageError(f"--log-format {log_format!r}: expected text or json")
    if log_format is not None:
        state(ctx).overrides["logging.format"] = log_format
    project, store, engine = _engine(ctx, quiet=True)
    lock = WorkerLock(worker_paths(store, project.root)[0])
    if not lock.acquire(wait=1.0):
        _run(store.close())
        raise UnavailableError(f"a daemon or worker (pid {lock.holder()}) already works {store.url}")
    worker = new_worker(project, store, engine)

    def reload() -> Any:
        from progressive_cli.config.project import load_project

        return load_project(project.root, overrides=state(ctx).overrides)

    daemon = Daemon(project, store, engine, worker, reload=reload)
    pidfile = _pidfile(project)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(f"{os.getpid()}\n")

    async def go() -> None:
        try:
            await daemon.run()
        finally:
            lock.release()
            await store.close()

    try:
        asyncio.run(go())
    finally:
        with contextlib.suppress(OSError):
            if pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink()


def _pidfile(project: Any) -> Any:
    from pathlib import Path

    path = Path(project.settings.daemon.pidfile)
    return path if path.is_absolute() else project.root / path


def _daemon_pid(project: Any) -> int | None:
    """The pid in the daemon's pidfile if that process is alive (and not a zombie), else None."""
    import os

    from progressive_cli.util import is_zombie

    try:
        pid = int(_pidfile(project).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return None if is_zombie(pid) else pid


@daemon_app.command("start")
def daemon_start(
    ctx: typer.Context,
    wait: Annotated[float, typer.Option("--wait", min=0.5, help="Seconds to wait for it to start.")] = 15.0,
) -> None:
    """Start the daemon in the background, logging to daemon.logfile; exits 5 if one is already running."""
    from pathlib import Path

    from progressive_cli.worker import spawn_worker

    project = state(ctx).project()
    pid = _daemon_pid(project)
    if pid is not None:
        raise UnavailableError(f"a daemon is already running (pid {pid}, pidfile {_pidfile(project)})")
    log = Path(project.settings.daemon.logfile)
    log = log if log.is_absolute() else project.root / log
    args = [arg for key, value in state(ctx).overrides.items() for arg in ("--set", f"{key}={value}")]
    proc = spawn_worker(project.root, log, args, command=("daemon", "run"))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise UnavailableError(f"the daemon exited at once ({proc.returncode}): {tail[0] if tail else log}")
        if _daemon_pid(project) == proc.pid:
            say(f"daemon started: pid {proc.pid}, log {log}", style="ok")
            return
        time.sleep(0.1)
    raise UnavailableError(f"the daemon (pid {proc.pid}) did not start within {wait:g}s; see {log}")


@daemon_app.command("stop")
def daemon_stop(
    ctx: typer.Context,
    wait: Annotated[float | None, typer.Option(
        "--wait", min=0.5, help="Seconds to wait (default: daemon.grace + 10).")] = None,
) -> None:
    """Stop the background daemon with SIGTERM (runs in flight get daemon.grace to finish) and wait for it."""
    import os
    import signal

    project = state(ctx).project()
    pid = _daemon_pid(project)
    if pid is None:
        say("no daemon is running")
        return
    os.kill(pid, signal.SIGTERM)
    limit = wait if wait is not None else float(project.settings.daemon.grace) + 10.0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if _daemon_pid(project) is None:
            say(f"daemon stopped (pid {pid})", style="ok")
            return
        time.sleep(0.1)
    raise UnavailableError(f"the daemon (pid {pid}) is still running after {limit:g}s")


@daemon_app.command("status")
def daemon_status(ctx: typer.Context, output: OutputOpt = None) -> None:
    """Whether a daemon runs on this store (pid, host, since when, last heartbeat), its scheduler's jobs
    (next run, runs, errors, misfires), the queue and the age of the newest health results; exits 5 if
    none runs."""
    from progressive_cli.controls import live_daemon

    project = state(ctx).project()

    async def read(store: Any) -> tuple[Any, int, list[dict[str, Any]]]:
        return await live_daemon(store), await store.queue_depth(), await store.latest_health()

    daemon, depth, health = with_store(ctx, read)
    pid = _daemon_pid(project)
    newest = max((h["at"] for h in health), default=None)
    t = time.time()
    jobs = (daemon or {}).get("info", {}).get("jobs", {})
    data = {"running": daemon is not None or pid is not None,
            "pid": daemon["pid"] if daemon else pid,
            "host": daemon["host"] if daemon else None,
            "since": iso_time(daemon["started_at"] if daemon else None),
            "heartbeat_age_s": round(t - daemon["seen_at"], 1) if daemon else None,
            "queue_depth": depth,
            "health_age_s": round(t - newest, 1) if newest else None,
            "pidfile": str(_pidfile(project)),
            "jobs": [{"job": name, **{k: iso_time(v) if k in ("next_run", "last_run", "last_missed") else v
                                      for k, v in job.items()}} for name, job in sorted(jobs.items())]}
    fmt = state(ctx).fmt(output)
    if fmt is OutputFormat.table:
        emit({k: v for k, v in data.items() if k != "jobs"}, fmt)
        if data["jobs"]:
            emit(data["jobs"], fmt, columns=[("job", "JOB"), ("next_run", "NEXT_RUN"), ("last_run", "LAST_RUN"),
                                              ("last_ms", "LAST_MS"), ("runs", "RUNS"), ("errors", "ERRORS"),
                                              ("missed", "MISSED"), ("last_error", "LAST_ERROR")])
    else:
        emit(data, fmt)
    if not data["running"]:
        raise typer.Exit(int(ExitCode.UNAVAILABLE))


@daemon_app.command("reload")
def daemon_reload(ctx: typer.Context, wait: ControlWaitOpt = 10.0) -> None:
    """Ask the running daemon to reload the project (as SIGHUP does, from any host that shares the
    store): it validates it first; an invalid one is refused (exit 2, with the error) and the old one kept."""
    row = apply_control(ctx, "daemon.reload", "daemon", wait=wait)
    say(str(row["result"]), style="ok")


def register(app: typer.Typer) -> None:
    app.add_typer(daemon_app, name="daemon")
