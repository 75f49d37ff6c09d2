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
  health history.

APScheduler job defaults, chosen deliberately: ``coalesce=True`` (a job that missed several runs
while the loop was busy or the machine asleep runs once, not in a burst), ``max_instances=1`` (a slow
health round is never run twice at once), ``misfire_grace_time=60`` s (a run up to a minute late still
fires; later than that it is skipped and the next one is awaited).

SIGTERM or SIGINT: stop taking work, let the runs in flight go on for ``daemon.grace`` seconds, then
stop them at a step boundary (completed steps are kept; the next start resumes them) and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

from progressive_cli.events.bus import Bus, Subscription
from progressive_cli.store.base import Event

JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}
RETENTION_EVERY = 3600.0
BUS_EVERY = 1.0


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

    def log(self, message: str) -> None:
        self.worker.log(message)

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
                self.scheduler.add_job(self.queue_run, job_trigger, args=[name, dict(trigger.inputs), key], id=key)
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

    async def retention_job(self) -> None:
        keep = float(self.project.settings.daemon.retention)
        pruned = await self.store.prune_events(time.time() - keep)
        if pruned:
            self.log(f"retention: {pruned} event(s) older than {keep / 86400:g} d removed")

    # --- lifecycle ---------------------------------------------------------------------------------
    async def run(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signalled, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.scheduler = AsyncIOScheduler(job_defaults=JOB_DEFAULTS, timezone="UTC")
        health = self.project.settings.health
        self.scheduler.add_job(self.health_job, "interval", seconds=float(health.interval), id="health",
                               next_run_time=_now())
        self.scheduler.add_job(self.bus_job, "interval", seconds=BUS_EVERY, id="event-bus")
        self.scheduler.add_job(self.retention_job, "interval", seconds=RETENTION_EVERY, id="retention",
                               next_run_time=_now())
        self._schedule_triggers()
        self.scheduler.start()
        jobs = ", ".join(job.id for job in self.scheduler.get_jobs())
        self.log(f"daemon started: pid {os.getpid()}, jobs: {jobs}")
        try:
            await self.worker.serve(stop=self.stop, grace=float(self.project.settings.daemon.grace))
        finally:
            self.scheduler.shutdown(wait=False)
            with contextlib.suppress(Exception):
                await self.engine.aclose()
            self.log("daemon stopped")

    def reload(self) -> bool:
        """SIGHUP: load and validate the project again; if it is valid, use its workflows and triggers from
        now on (runs in flight keep the definition they started with); if not, keep the old one."""
        if self.reload_project is None:
            return False
        from progressive_cli.errors import ProgressiveError

        try:
            project = self.reload_project()
        except ProgressiveError as exc:
            self.log(f"reload refused, the running config is kept: {exc.message}")
            return False
        self.project = project
        self.engine.workflows = project.workflows
        self._schedule_triggers()
        self.log(f"reloaded: {len(project.workflows)} workflow(s), {len(self._trigger_jobs)} scheduled trigger(s)")
        return True

    def _signalled(self, sig: int) -> None:
        self.log(f"{signal.Signals(sig).name}: no new work; finishing the runs in flight")
        self.stop.set()


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


__all__ = ["JOB_DEFAULTS", "Daemon"]
