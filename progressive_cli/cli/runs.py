"""`run workflow` and `executions`: start, watch, inspect, cancel, resume and retry runs."""

import contextlib
import enum
import sys
from typing import Annotated, Any

import typer

from progressive_cli.cli.app import (
    ControlWaitOpt,
    InputFileOpt,
    InputsOpt,
    OutputOpt,
    apply_control,
    new_typer,
    read_inputs,
    state,
    with_store,
)
from progressive_cli.cli.output import OutputFormat, emit, is_tty, say, to_json_line, use_color
from progressive_cli.errors import ExitCode, NotFoundError, UnavailableError, UsageError

run_app = new_typer("Run a workflow in this process, or queue it for a worker.")
executions_app = new_typer("Inspect, cancel, resume and retry workflow runs.")

STATUS_EXIT = {"completed": ExitCode.OK, "failed": ExitCode.FAILED, "timed_out": ExitCode.TIMED_OUT,
               "cancelled": ExitCode.CANCELLED, "waiting": ExitCode.OK, "queued": ExitCode.OK,
               "running": ExitCode.OK}


class Reporter:
    """Step progress on stderr. On a terminal, a live Rich view: a spinner per running step, then
    its result and duration; off a terminal (cron, CI, pipes), one plain line per event."""

    SYMBOLS = {"step.completed": ("✓", "green"), "step.failed": ("✗", "red"), "step.retried": ("↻", "yellow")}

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = is_tty(sys.stderr)
        self.live: Any = None
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> "Reporter":
        if self.tty and not self.quiet:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            console = Console(file=sys.stderr, no_color=not use_color(sys.stderr), highlight=False)
            self.live = Progress(SpinnerColumn(finished_text=" "), TextColumn("{task.description}"),
                                 TimeElapsedColumn(), console=console, transient=False)
            self.live.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def __call__(self, event: Any) -> None:
        if self.quiet:
            return
        data = event.data
        if self.live is None:
            self._line(event, data)
            return
        key = data.get("key")
        if event.type == "step.started" and key not in self.tasks:
            self.tasks[key] = self.live.add_task(f"{key} [dim]({data.get('type')})[/]", total=None)
        elif event.type in self.SYMBOLS and key is not None:
            symbol, colour = self.SYMBOLS[event.type]
            text = f"[{colour}]{symbol}[/] {key}{self._detail(data, event.type, markup=True)}"
            task = self.tasks.get(key)
            if task is None:
                task = self.tasks[key] = self.live.add_task(text, total=None)
            finished = event.type != "step.retried"
            self.live.update(task, description=text, total=1 if finished else None, completed=1 if finished else 0)
        elif event.type.startswith("workflow.") and event.type != "workflow.started":
            self.live.console.print(f"[dim]{event.type} {data.get('workflow')} {event.execution_id}[/]")

    @staticmethod
    def _detail(data: dict[str, Any], kind: str, *, markup: bool = False) -> str:
        detail = f" {data['duration_ms']:.1f}ms" if "duration_ms" in data else ""
        if "error" in data:
            message = str(data["error"].get("message"))
            if markup:
                from rich.markup import escape

                message = escape(message)
            detail += f" {data['error'].get('kind')}: {message}"
        if kind == "step.retried":
            detail += f" (retry {data.get('next_attempt')} in {data.get('delay_s')}s)"
        return detail

    def _line(self, event: Any, data: dict[str, Any]) -> None:
        if event.type == "step.started":
            say(f"step.started {data.get('key')} ({data.get('type')}) attempt {data.get('attempt')}")
        elif event.type.startswith("step."):
            say(f"{event.type} {data.get('key')}{self._detail(data, event.type)}")
        elif event.type.startswith("workflow."):
            say(f"{event.type} {data.get('workflow')} {event.execution_id}")


def _engine(ctx: typer.Context, *, quiet: bool = False) -> Any:
    from progressive_cli.engine.executor import Engine
    from progressive_cli.integrations.hub import Integrations
    from progressive_cli.mca.runtime import AgentRuntime
    from progressive_cli.store import project_store

    project = state(ctx).project()
    store = project_store(project)
    agents = AgentRuntime(project.agents.agents, project.root, store=store)
    integrations = Integrations(project.integrations.integrations, store)
    engine = Engine(project.workflows, store, agent_call=agents, on_event=Reporter(quiet),
                    capability_providers=agents.capability_providers(), integrations=integrations)
    return project, store, engine


def _summary(execution: Any) -> dict[str, Any]:
    duration = None
    if execution.started_at and execution.finished_at:
        duration = round((execution.finished_at - execution.started_at) * 1000, 1)
    return {"execution": execution.id, "workflow": execution.workflow, "status": execution.status,
            "duration_ms": duration, "outputs": execution.outputs, "error": execution.error}


def _report(execution: Any, fmt: OutputFormat) -> None:
    """Print the run's result as data and exit with the code for its status."""
    if fmt is OutputFormat.table:
        if execution.outputs:
            emit(execution.outputs, fmt)
        style = "ok" if execution.status == "completed" else "error"
        error = execution.error or {}
        tail = f": {error.get('kind')}: {error.get('message')}" if error else ""
        say(f"{execution.status} {execution.workflow} {execution.id}{tail}", style=style)
    else:
        emit(_summary(execution), fmt)
    code = STATUS_EXIT.get(execution.status, ExitCode.FAILED)
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


def _run(coro: Any, reporter: Reporter | None = None) -> Any:
    """Run a coroutine to completion (asyncio is imported then, not with the module: `--help` must not pay for it)."""
    from progressive_cli.util import run_async

    try:
        with reporter or contextlib.nullcontext():
            return run_async(coro)
    except KeyboardInterrupt:
        say("interrupted")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


class RunMode(enum.StrEnum):
    sync = "sync"
    detach = "detach"
    hybrid = "hybrid"


# the MCA's integration strategy -> how `run` runs the workflow when --mode does not say
STRATEGY_MODE = {"direct": RunMode.sync, "orchestrated": RunMode.sync, "event-driven": RunMode.detach,
                 "hybrid": RunMode.hybrid}


def choose_mode(workflow: Any, agents: list[Any], mode: RunMode | None, detach: bool) -> tuple[RunMode, str]:
    """The run mode, and why: --mode (or --detach), else the MCA strategy for the workflow (as `plan` shows it)."""
    from progressive_cli.cli.plan import workflow_analysis

    analysis = workflow_analysis(workflow, agents)
    strategy = f"strategy {analysis.strategy}, complexity {analysis.score} {analysis.complexity}"
    if detach:
        if mode not in (None, RunMode.detach):
            raise UsageError(f"--detach and --mode {mode} disagree; give one of them")
        return RunMode.detach, f"--detach; {strategy}"
    if mode is not None:
        return mode, f"--mode; {strategy}"
    return STRATEGY_MODE[analysis.strategy], strategy


@run_app.command("workflow")
def run_workflow(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="WORKFLOW")],
    inputs: InputsOpt = None,
    input_file: InputFileOpt = None,
    timeout: Annotated[str | None, typer.Option("--timeout", help="Override the workflow timeout, e.g. 30s.")] = None,
    mode: Annotated[RunMode | None, typer.Option(
        "--mode", case_sensitive=False, show_default=False,
        help="sync: in this process; detach: queue it for a worker and print its id; hybrid: queue it, print "
             "its id, then stream its progress. Default: from the MCA strategy (see `plan workflow`).")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Same as --mode detach.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No step progress on stderr.")] = False,
    output: OutputOpt = None,
) -> None:
    """Run a workflow; exit 0 if it completed (or was queued), 1 failed, 6 timed out, 7 cancelled."""
    from progressive_cli.config.common import parse_duration

    fmt = state(ctx).fmt(output)
    given = read_inputs(inputs, input_file)
    try:
        limit = parse_duration(timeout) if timeout is not None else None
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from None
    from progressive_cli.cli.catalog import _lookup

    workflow = _lookup(state(ctx).project().workflows, name, "workflow")  # before the store is opened
    chosen, why = choose_mode(workflow, state(ctx).project().agents.agents, mode, detach)
    quiet = quiet or (fmt is not OutputFormat.table and not is_tty(sys.stderr))
    if not quiet:
        say(f"mode: {chosen} ({why})")
    project, store, engine = _engine(ctx, quiet=quiet)
    reporter = engine.on_event
    if chosen is RunMode.hybrid:
        engine.on_event = None  # its events are shown from the store, as the worker writes them

    async def go() -> Any:
        try:
            if chosen is RunMode.sync:
                execution = await engine.start(name, given, timeout=limit)
                holder.append(execution.id)
                return await engine.run(execution.id)
            from progressive_cli.worker import RUN, follow

            execution = await engine.start(name, given, timeout=limit, status="queued", queue=RUN)  # one commit
            holder.append(execution.id)
            nudge, note = _ensure_worker(ctx, project, store)  # after the enqueue: see progressive_cli/worker.py
            if chosen is RunMode.detach:
                if fmt is OutputFormat.table:
                    sys.stdout.write(execution.id + "\n")
                else:
                    emit(_summary(execution), fmt)
                if not quiet:
                    say(f"queued; {note}; check on it with: progressive executions show {execution.id}")
                return execution
            if fmt is OutputFormat.table:  # acknowledged: the id now, the result when the run ends
                sys.stdout.write(execution.id + "\n")
                sys.stdout.flush()
            if not quiet:
                say(f"accepted {execution.id}; {note}")
            return await follow(store, execution.id, reporter, nudge=nudge)
        finally:
            await engine.aclose()
            await store.close()

    holder: list[str] = []
    try:
        execution = _run(go(), reporter)
    except typer.Exit:
        if holder and chosen is RunMode.sync:
            say(f"continue it with: progressive executions resume {holder[0]}")
        elif holder and chosen is RunMode.hybrid:
            say(f"stopped following; the run goes on in the background: progressive executions show {holder[0]}")
        raise
    if chosen is not RunMode.detach:
        _report(execution, fmt)


def _ensure_worker(ctx: typer.Context, project: Any, store: Any) -> tuple[Any, str]:
    """Start a worker for the store's queue unless one is alive. Returns what to say about it, and a
    ``nudge`` for following a run: unless a worker, or some other live process, is on the run, it starts
    a worker again, and gives up (exit 5) after three that came and went without the run moving on."""
    from progressive_cli.engine.executor import is_live
    from progressive_cli.worker import WorkerLock, ensure_worker, worker_paths

    lock_path, log = worker_paths(store, project.root)
    lock = WorkerLock(lock_path)
    args = [arg for key, value in state(ctx).overrides.items() for arg in ("--set", f"{key}={value}")]
    proc, pid = ensure_worker(lock, project.root, log, args)
    note = f"started worker pid {pid} (log {log})" if proc else f"worker pid {pid} runs it (log {log})"
    children = [proc] if proc else []
    spawned = 0

    def nudge(execution: Any, progressed: bool) -> None:
        nonlocal spawned
        children[:] = [child for child in children if child.poll() is None]  # reap the ones that ended
        owned = execution.status == "running" and is_live(execution)
        if progressed or owned:
            spawned = 0
        if owned or lock.taken():
            return
        if spawned >= 3:
            raise UnavailableError(f"no worker keeps running the queue; see {log}")
        spawned += 1
        child, _pid = ensure_worker(lock, project.root, log, args)
        children.extend([child] if child else [])

    return nudge, note


def worker_command(
    ctx: typer.Context,
    drain: Annotated[bool, typer.Option(
        "--drain", help="Exit once the queue has nothing left to run (how `run --mode detach` starts one).")] = False,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", "-c", min=1, max=256, help="Runs at once (default: the daemon.workers setting, 4).")] = None,
) -> None:
    """Run queued workflow runs from the state store's work queue; one worker per store at a time."""
    import asyncio
    import signal

    from progressive_cli.worker import WorkerLock, worker_paths

    project, store, engine = _engine(ctx, quiet=True)
    lock = WorkerLock(worker_paths(store, project.root)[0])
    if not lock.acquire(wait=1.0):  # wait out a `run` that is checking the lock at this very moment
        say(f"a worker (pid {lock.holder()}) already runs the queue of {store.url}; nothing to do")
        _run(store.close())
        return
    worker = new_worker(project, store, engine, concurrency)

    async def go() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await worker.serve(drain=drain, lock=lock, stop=stop)
        finally:
            lock.release()
            await engine.aclose()
            await store.close()

    _run(go())


def new_worker(project: Any, store: Any, engine: Any, concurrency: int | None = None) -> Any:
    """A worker on ``engine`` with the project's settings, logging the engine's events."""
    from progressive_cli.worker import Worker

    settings = project.settings
    worker = Worker(store, engine, concurrency=concurrency or settings.daemon.workers,
                    poll_interval=settings.daemon.poll_interval, log_format=settings.logging.format,
                    log_level=settings.logging.level)
    engine.on_event = worker.on_event
    return worker


# --- executions -----------------------------------------------------------------------------------------
async def _find(store: Any, prefix: str) -> Any:
    matches = await store.find_execution(prefix)
    if not matches:
        raise NotFoundError(f"no execution '{prefix}'")
    exact = [m for m in matches if m.id == prefix]
    if exact:
        return exact[0]
    if len(matches) > 1:
        raise UsageError(f"execution id '{prefix}' is ambiguous: {', '.join(m.id[:12] for m in matches)}")
    return matches[0]


def _store(ctx: typer.Context) -> Any:
    from progressive_cli.store import project_store

    return project_store(state(ctx).project())


def _row(execution: Any) -> dict[str, Any]:
    from datetime import UTC, datetime

    started = execution.started_at or execution.created_at
    duration = (execution.finished_at - started) if execution.finished_at and started else None
    return {
        "id": execution.id, "workflow": execution.workflow, "status": execution.status,
        "started": datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M:%S") if started else None,
        "duration_s": round(duration, 3) if duration is not None else None,
        "failed_step": (execution.error or {}).get("step"),
    }


@executions_app.command("list")
def executions_list(
    ctx: typer.Context,
    workflow: Annotated[str | None, typer.Option("--workflow", "-w", help="Only this workflow.")] = None,
    status: Annotated[list[str] | None, typer.Option("--status", "-s", help="Only these statuses.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10000, help="How many, newest first.")] = 20,
    output: OutputOpt = None,
) -> None:
    """List recent runs, newest first."""
    async def go() -> list[Any]:
        store = _store(ctx)
        try:
            return await store.list_executions(workflow=workflow, statuses=status, limit=limit)
        finally:
            await store.close()

    rows = [_row(e) for e in _run(go())]
    fmt = state(ctx).fmt(output)
    if fmt is OutputFormat.table:
        for row in rows:
            row["id"] = row["id"][:12]
    emit(rows, fmt, columns=[("id", "ID"), ("workflow", "WORKFLOW"), ("status", "STATUS"), ("started", "STARTED"),
                             ("duration_s", "DURATION S"), ("failed_step", "FAILED STEP")])


@executions_app.command("show")
def executions_show(ctx: typer.Context, execution_id: Annotated[str, typer.Argument(metavar="ID")],
                    output: OutputOpt = None) -> None:
    """Show a run: status, inputs, outputs, and every step with its input, output, error, attempts and time."""

    async def go() -> tuple[Any, Any]:
        store = _store(ctx)
        try:
            execution = await _find(store, execution_id)
            return execution, await store.load_steps(execution.id)
        finally:
            await store.close()

    execution, steps = _run(go())
    records = sorted(steps.values(), key=lambda r: (r.started_at or 0, r.key))
    fmt = state(ctx).fmt(output)
    step_rows = [{
        "key": r.key, "type": r.type, "status": r.status, "attempt": r.attempt,
        "duration_ms": round((r.finished_at - r.started_at) * 1000, 2) if r.finished_at and r.started_at else None,
        "input": r.input, "output": r.output, "error": r.error,
    } for r in records]
    if fmt is not OutputFormat.table:
        emit({**_summary(execution), "inputs": execution.inputs, "steps": step_rows}, fmt)
        return
    emit({**_row(execution), "inputs": execution.inputs, "outputs": execution.outputs, "error": execution.error}, fmt)
    sys.stdout.write("\n")
    for row in step_rows:
        row["error"] = (row["error"] or {}).get("message")
    emit(step_rows, fmt, columns=[("key", "STEP"), ("type", "TYPE"), ("status", "STATUS"), ("attempt", "ATTEMPT"),
                                  ("duration_ms", "MS"), ("output", "OUTPUT"), ("error", "ERROR")])


@executions_app.command("logs")
def executions_logs(ctx: typer.Context, execution_id: Annotated[str, typer.Argument(metavar="ID")],
                    output: OutputOpt = None) -> None:
    """Print a run's events in order (CloudEvents-shaped with -o json)."""

    async def go() -> list[Any]:
        store = _store(ctx)
        try:
            execution = await _find(store, execution_id)
            events, after = [], 0
            while True:
                batch = await store.list_events(execution_id=execution.id, after_seq=after, limit=1000)
                events.extend(batch)
                if len(batch) < 1000:
                    return events
                after = batch[-1].seq
        finally:
            await store.close()

    events = _run(go())
    fmt = state(ctx).fmt(output)
    if fmt is not OutputFormat.table:
        emit([e.cloudevent() for e in events], fmt)
        return
    from datetime import UTC, datetime

    emit([{"time": datetime.fromtimestamp(e.time, UTC).strftime("%H:%M:%S.%f")[:-3], "type": e.type,
           "subject": e.subject, "data": to_json_line(e.data)[:200]} for e in events], fmt,
         columns=[("time", "TIME"), ("type", "TYPE"), ("subject", "SUBJECT"), ("data", "DATA")])


@executions_app.command("cancel")
def executions_cancel(ctx: typer.Context, execution_id: Annotated[str, typer.Argument(metavar="ID")],
                      wait: ControlWaitOpt = 10.0, output: OutputOpt = None) -> None:
    """Cancel a run: a live run stops before its next step; a stopped or queued one is marked cancelled.
    Applied by the daemon when one runs (else by this command)."""
    from progressive_cli.store.base import FINISHED

    async def find(store: Any) -> Any:
        return await _find(store, execution_id)

    execution = with_store(ctx, find)
    if execution.status in FINISHED:
        raise UsageError(f"execution {execution.id[:12]} already {execution.status}")
    result = apply_control(ctx, "execution.cancel", execution.id, wait=wait)["result"]
    fmt = state(ctx).fmt(output)
    if fmt is not OutputFormat.table:
        emit(result, fmt)
    elif result["status"] == "cancelled":
        say(f"cancelled {execution.id[:12]}", style="ok")
    else:
        say(f"cancel requested; {result['note']}", style="ok")


def _continue(ctx: typer.Context, execution_id: str, from_step: str | None, output: OutputFormat | None,
              *, retry: bool) -> None:
    from progressive_cli.controls import prepare_retry
    from progressive_cli.store.base import FINISHED

    _project, store, engine = _engine(ctx)
    fmt = state(ctx).fmt(output)

    async def go() -> Any:
        try:
            execution = await _find(store, execution_id)
            if not retry:
                if execution.status == "completed":
                    say(f"execution {execution.id[:12]} had already completed")
                    return execution
                if execution.status in FINISHED:
                    raise UsageError(f"execution {execution.id[:12]} {execution.status}; "
                                     f"run it again with: progressive executions retry {execution.id[:12]}")
                return await engine.run(execution.id)
            await prepare_retry(store, execution, from_step)
            return await engine.run(execution.id)
        finally:
            await engine.aclose()
            await store.close()

    _report(_run(go(), engine.on_event), fmt)


@executions_app.command("resume")
def executions_resume(ctx: typer.Context, execution_id: Annotated[str, typer.Argument(metavar="ID")],
                      output: OutputOpt = None) -> None:
    """Continue an interrupted, waiting or queued run; completed steps are not run again."""
    _continue(ctx, execution_id, None, output, retry=False)


@executions_app.command("retry")
def executions_retry(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(metavar="ID")],
    from_step: Annotated[str | None, typer.Option("--from-step", help="Re-run from this step (id or key).")] = None,
    output: OutputOpt = None,
) -> None:
    """Run a failed, timed-out or cancelled run again from its failed step (or --from-step), reusing earlier outputs."""
    _continue(ctx, execution_id, from_step, output, retry=True)


def register(app: typer.Typer) -> None:
    app.add_typer(run_app, name="run")
    app.add_typer(executions_app, name="executions")
    app.command("worker")(worker_command)

