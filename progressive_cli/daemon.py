"""The daemon: the worker loop plus APScheduler jobs, in one process, on one asyncio loop.

``progressive daemon run`` runs it in the foreground (systemd, containers). It holds the store's
worker lock, so it is the one worker of its store, and:

- **works the queue** (:class:`~progressive_cli.worker.Worker`): ``run --detach``, the event-driven
  strategy and triggers all queue runs; on start it also resumes the runs a crash interrupted (their
  items are still on the queue, leased by a dead process);
- **fires workflow triggers**: ``cron`` and ``interval`` ones are APScheduler jobs that queue a run;
  ``event`` ones are event-bus subscriptions that queue a run per matching event;
- **runs the health checks** every ``health.interval`` and the alert rules on their results;
- **pumps the event bus** (subscriptions, retry queue) every second;
- **applies retention** hourly: events (what the queues still need is kept), finished messages,
  health history;
- **applies operator controls** (``controls.py``) every half second: breaker reset and force-open,
  execution cancel, DLQ replay and purge, reload;
- **heartbeats** its ``daemons`` row every ``HEARTBEAT_EVERY`` seconds, with its jobs' figures (next
  run, runs, errors, misfires): how the CLI and the dashboard know a daemon is alive, on any host that
  shares the store, and what the ``scheduler`` health check reads. Agents' heartbeats are the health
  job's probes (``agent-communication``).

APScheduler job defaults, chosen deliberately: ``coalesce=True`` (a job that missed several runs
while the loop was busy or the machine asleep runs once, not in a burst), ``max_instances=1`` (a slow
health round is never run twice at once), ``misfire_grace_time=60`` s (a run up to a minute late still
fires; later than that it is skipped and the next one is awaited).

Every job is wrapped: its duration, runs and errors are counted, and an exception is logged (the
job runs again next time); a misfire (a run skipped because it was over a minute late, or because the
previous one still ran) is counted too. What libraries log (APScheduler, asyncio, Python warnings) goes
to the daemon's log in its format too, one line each: a ``logging.format: json`` log stays JSON lines.

SIGTERM or SIGINT: stop taking work, let the runs in flight go on for ``daemon.grace`` seconds, then
stop them at a step boundary (completed steps are kept; the next start resumes them), mark the
``daemons`` row stopped and exit 0. SIGHUP, or ``progressive daemon reload`` (a control), reloads the
project after validating it; an invalid one is refused and the old one kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from progressive_cli.controls import HEARTBEAT_EVERY, Applier
from progressive_cli.events.bus import Bus, Subscription
from progressive_cli.store.base import Event, new_id

JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}
RETENTION_EVERY = 3600.0
BUS_EVERY = 1.0
CONTROLS_EVERY = 0.5


class Daemon:
    def __init__(self, project: Any, store: Any, engine: Any, worker: Any, *,
                 reload: Callable[[], Any] | None = None) -> None:
        self.project = project
        self.reload_project = reload
        """Loads and validates the project again (SIGHUP); raises ConfigError when it is invalid."""
        self.store = store
        self.engine = engine
        self.worker = worker
        self.bus = Bus(store, rng=random.Random())
        self.stop = asyncio.Event()
        self.scheduler: Any = None
        self._trigger_jobs: list[str] = []
        self.id = new_id()
        self.started_at = time.time()
        self.jobs: dict[str, dict[str, Any]] = {}
        """Per job: runs, errors, missed, last_run, last_ms, last_error (what the heartbeat row carries)."""
        self.applier = Applier(store, f"daemon:{worker.worker_id}", reload=self._reload_control)

    def log(self, message: str, *, level: str = "info", **fields: Any) -> None:
        self.worker.log(message, level=level, **fields)

    # --- triggers ----------------------------------------------------------------------------------
    async def queue_run(self, workflow: str, inputs: dict[str, Any], why: str) -> str | None:
        from progressive_cli.errors import ProgressiveError
        from progressive_cli.worker import RUN

        try:
            execution = await self.engine.start(workflow, inputs, status="queued", queue=RUN)
        except ProgressiveError as exc:  # bad inputs, concurrency limit: logged, the daemon goes on
            self.log(f"trigger {why}: {workflow} not queued: {exc.message}")
            return None
        self.log(f"trigger {why}: queued {workflow} {execution.id[:12]}")
        return str(execution.id)

    def _schedule_triggers(self) -> None:
        from apscheduler.triggers.combining import OrTrigger
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        from progressive_cli.config.cron import apscheduler_fields
        from progressive_cli.engine.expressions import compile_condition

        for job_id in self._trigger_jobs:
            with contextlib.suppress(Exception):
                self.scheduler.remove_job(job_id)
        self._trigger_jobs = []
        for sub in [s for s in self.bus.subscriptions if s.startswith("trigger:")]:
            del self.bus.subscriptions[sub]
        for name, workflow in self.project.workflows.items():
            for n, trigger in enumerate(workflow.triggers):
                key = f"{name}#{n}:{trigger.type}"
                if trigger.type == "event":
                    self.bus.subscribe(Subscription(
                        f"trigger:{key}", (trigger.event,), self._on_event(name, dict(trigger.inputs), key),
                        filter=compile_condition(trigger.filter, frozenset({"event"})) if trigger.filter else None))
                    continue
                if trigger.type == "cron":
                    parts = [CronTrigger(timezone=trigger.timezone, **fields)
                             for fields in apscheduler_fields(trigger.cron)]
                    job_trigger: Any = parts[0] if len(parts) == 1 else OrTrigger(parts)
                else:
                    job_trigger = IntervalTrigger(seconds=float(trigger.every))
                self.scheduler.add_job(self._timed(key, self.queue_run), job_trigger,
                                       args=[name, dict(trigger.inputs), key], id=key)
                self._trigger_jobs.append(key)

    def _on_event(self, workflow: str, inputs: dict[str, Any], key: str) -> Callable[[Event], Any]:
        async def handle(event: Event) -> None:
            await self.queue_run(workflow, {**inputs}, f"{key} on {event.type} {event.id[:12]}")
        return handle

    # --- jobs --------------------------------------------------------------------------------------
    async def health_job(self) -> None:
        from progressive_cli.health.monitor import Monitor

        # alert notices go to the configured sinks (the `log` sink writes them to this daemon's log)
        await Monitor(self.project, self.store, self.engine.integrations, self.engine.agent_call).run_and_record()

    async def bus_job(self) -> None:
        for name in list(self.bus.subscriptions):
            while await self.bus.pump(name):
                if self.stop.is_set():
                    return

    async def controls_job(self) -> None:
        for row in await self.applier.apply():
            outcome = f"failed: {row['error']}" if row["error"] else "applied"
            self.log(f"control {row['kind']} {row['target']} from {row['requested_by']}: {outcome}",
                     level="warning" if row["error"] else "info", control=row["id"], kind=row["kind"],
                     target=row["target"], error=row["error"])

    async def heartbeat_job(self, *, stopped: bool = False) -> None:
        jobs = {}
        for job in self.scheduler.get_jobs() if self.scheduler is not None else []:
            when = getattr(job, "next_run_time", None)  # a job added before start() has none yet
            next_run = when.timestamp() if when else None
            jobs[job.id] = {**self._stats(job.id), "next_run": next_run}
        from progressive_cli.config.secrets import REDACTOR

        info = REDACTOR.redact_data({"jobs": jobs, "workers": self.worker.concurrency,
                                     "running": len(self.worker._active), "root": str(self.project.root),
                                     "store": self.store.url})
        host, _, pid = self.worker.worker_id.rpartition(":")
        await self.store.save_daemon(self.id, host, int(pid), self.started_at, info, stopped=stopped)

    async def retention_job(self) -> None:
        keep = float(self.project.settings.daemon.retention)
        pruned = await self.store.prune_events(time.time() - keep)
        if pruned:
            self.log(f"retention: {pruned} event(s) older than {keep / 86400:g} d removed")

    # --- lifecycle ---------------------------------------------------------------------------------
    async def run(self) -> None:
        with _library_logs(self.log):
            await self._run()

    async def _run(self) -> None:
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signalled, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.scheduler = AsyncIOScheduler(job_defaults=JOB_DEFAULTS, timezone="UTC")
        self.scheduler.add_listener(self._missed, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        health = self.project.settings.health
        for job_id, job, every, first in (
            ("heartbeat", self.heartbeat_job, HEARTBEAT_EVERY, None),
            ("controls", self.controls_job, CONTROLS_EVERY, None),
            ("health", self.health_job, float(health.interval), _now()),
            ("event-bus", self.bus_job, BUS_EVERY, None),
            ("retention", self.retention_job, RETENTION_EVERY, _now()),
        ):
            self.scheduler.add_job(self._timed(job_id, job), "interval", seconds=every, id=job_id,
                                   **({"next_run_time": first} if first else {}))
        self._schedule_triggers()
        await self.heartbeat_job()  # alive for the CLI before the first job runs
        self.scheduler.start()
        jobs = ", ".join(job.id for job in self.scheduler.get_jobs())
        self.log(f"daemon started: pid {os.getpid()}, jobs: {jobs}", jobs=jobs.split(", "))
        try:
            await self.worker.serve(stop=self.stop, grace=float(self.project.settings.daemon.grace))
        finally:
            self.scheduler.shutdown(wait=False)
            with contextlib.suppress(Exception):
                await self.engine.aclose()
            with contextlib.suppress(Exception):
                await self.heartbeat_job(stopped=True)
            self.log("daemon stopped")

    # --- job figures -------------------------------------------------------------------------------
    def _stats(self, job_id: str) -> dict[str, Any]:
        return self.jobs.setdefault(job_id, {"runs": 0, "errors": 0, "missed": 0, "last_run": None,
                                             "last_ms": None, "last_error": None, "last_missed": None})

    def _timed(self, job_id: str, job: Callable[..., Any]) -> Callable[..., Any]:
        """``job``, counted in ``self.jobs``; an exception is logged and kept as ``last_error`` (cleared by
        the next good run), never raised into APScheduler."""
        async def run(*args: Any) -> None:
            stats = self._stats(job_id)
            started = time.perf_counter()
            try:
                await job(*args)
                stats["last_error"] = None
            except asyncio.CancelledError:  # the daemon is stopping: the loop ends the runs still in flight
                pass
            except Exception as exc:
                from progressive_cli.config.secrets import REDACTOR
                from progressive_cli.errors import one_line

                stats["errors"] += 1
                stats["last_error"] = one_line(REDACTOR.redact(f"{type(exc).__name__}: {exc}"))
                self.log(f"job {job_id} failed: {stats['last_error']}", level="error", job=job_id)
            finally:
                stats["runs"] += 1
                stats["last_run"] = time.time()
                stats["last_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return run

    def _missed(self, event: Any) -> None:
        stats = self._stats(event.job_id)
        stats["missed"] += 1
        stats["last_missed"] = time.time()
        self.log(f"job {event.job_id}: a run was skipped (late or still running)", level="warning",
                 job=event.job_id)

    def reload(self) -> bool:
        """SIGHUP: load and validate the project again; if it is valid, use its workflows and triggers from
        now on (runs in flight keep the definition they started with); if not, keep the old one."""
        from progressive_cli.errors import ProgressiveError

        try:
            self.log(self._reload())
        except ProgressiveError as exc:
            self.log(f"reload refused, the running config is kept: {exc.message}", level="error")
            return False
        return True

    async def _reload_control(self) -> str:
        """``progressive daemon reload``: as SIGHUP; a refusal fails the control with the error."""
        from progressive_cli.errors import ProgressiveError

        try:
            message = self._reload()
        except ProgressiveError as exc:
            exc.message = f"reload refused, the running config is kept: {exc.message}"
            raise
        self.log(message)
        return message

    def _reload(self) -> str:
        if self.reload_project is None:
            from progressive_cli.errors import UnavailableError

            raise UnavailableError("this daemon was started without a project to reload")
        project = self.reload_project()
        self.project = project
        self.engine.workflows = project.workflows
        self.worker.log_format, self.worker.log_level = project.settings.logging.format, project.settings.logging.level
        self._schedule_triggers()
        return f"reloaded: {len(project.workflows)} workflow(s), {len(self._trigger_jobs)} scheduled trigger(s)"

    def _signalled(self, sig: int) -> None:
        self.log(f"{signal.Signals(sig).name}: no new work; finishing the runs in flight")
        self.stop.set()


class _LogBridge(logging.Handler):
    """Log records that no handler takes (APScheduler's, asyncio's, Python warnings): Python would print
    them bare on stderr, in the middle of the daemon's log; they become its own lines, in its format."""

    def __init__(self, log: Callable[..., None]) -> None:
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage().strip()
            if record.exc_info and record.exc_info[1] is not None:
                message += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            self.log(message, level="error" if record.levelno >= logging.ERROR else "warning", logger=record.name)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _library_logs(log: Callable[..., None]) -> Iterator[None]:
    """While the daemon runs, what libraries log goes through ``log``. APScheduler's warnings are left out:
    they are misfires, which ``Daemon._missed`` counts and logs."""
    bridge = _LogBridge(log)
    scheduler_logger, warnings_logger = logging.getLogger("apscheduler"), logging.getLogger("py.warnings")
    previous = logging.lastResort, scheduler_logger.level
    logging.lastResort = bridge
    scheduler_logger.setLevel(logging.ERROR)
    warnings_logger.addHandler(bridge)  # captured warnings never reach lastResort
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        warnings_logger.removeHandler(bridge)
        logging.lastResort, level = previous
        scheduler_logger.setLevel(level)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


__all__ = ["JOB_DEFAULTS", "Daemon"]
