"""The health monitor: the seed's check groups, run concurrently, each healthy, degraded or unhealthy.

Groups (seed: "Integration Health Monitor", plus ``state-store``):

- ``state-store``: a read of the store;
- ``mca-coordination``: the in-process agents (the MCA among them) load and answer their probe;
- ``agent-communication``: each remote agent's instances are probed (http GET, command ``health``)
  and the result is recorded as a heartbeat; an agent none of whose instances answer is unhealthy,
  one with some down is degraded;
- ``database-connectivity/<id>``: each enabled database's ping;
- ``external-apis/<id>``: each enabled API's breaker, and its ``health`` request with its gatus-style
  conditions when one is configured (APIs without one are not called: third-party quotas);
- ``event-bus``: the error rate of the subscriptions and their dead letters;
- ``scheduler``: the daemon's APScheduler, read from its heartbeat row: unhealthy when its heartbeat
  stopped without a clean shutdown (it crashed or hangs) while workflows have cron or interval
  triggers (degraded when nothing is scheduled), degraded when a job's last run failed or skipped a run
  in the last 10 minutes (misfires), or when triggers are declared and no daemon runs; healthy
  otherwise (a daemon stopped cleanly and nothing scheduled included).

A check slower than ``health.response_time`` is degraded; a check that does not finish within
``health.timeout`` is unhealthy. Results are kept in the store (``health_results``) for
``health.history``, for trends and for the alert rules (``alerts.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from progressive_cli.config.integrations import HttpIntegration

ORDER = {"healthy": 0, "unknown": 1, "degraded": 2, "unhealthy": 3}
"""Severity, for the overall status: a check that could not run (unknown) hides nothing worse."""


@dataclass
class CheckResult:
    name: str
    group: str
    status: str
    response_ms: float
    detail: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def worst(statuses: list[str]) -> str:
    return max(statuses, key=lambda s: ORDER.get(s, 1), default="unknown")


Check = Callable[[], Awaitable[tuple[str, str]]]
MISSED_WINDOW = 600.0
"""A scheduler job that skipped a run within this many seconds makes the ``scheduler`` check degraded."""


class Monitor:
    """Runs the checks of one project against its store, its integrations and its agents."""

    def __init__(self, project: Any, store: Any, hub: Any, runtime: Any) -> None:
        self.project = project
        self.settings = project.settings.health
        self.store = store
        self.hub = hub
        self.runtime = runtime

    def checks(self) -> dict[str, tuple[str, Check]]:
        """name -> (group, check) for everything this project has."""
        out: dict[str, tuple[str, Check]] = {
            "state-store": ("state-store", self._state_store),
            "mca-coordination": ("mca-coordination", self._mca),
            "agent-communication": ("agent-communication", self._agents),
            "event-bus": ("event-bus", self._event_bus),
            "scheduler": ("scheduler", self._scheduler),
        }
        for item in self.project.integrations.integrations:
            if not item.enabled:
                continue
            if isinstance(item, HttpIntegration):
                out[f"external-apis/{item.id}"] = ("external-apis", self._api(item))
            else:
                out[f"database-connectivity/{item.id}"] = ("database-connectivity", self._database(item.id))
        return out

    async def run(self, only: list[str] | None = None) -> list[CheckResult]:
        chosen = self.checks()
        if only:
            unknown = [n for n in only if n not in chosen and not any(k.startswith(n + "/") for k in chosen)]
            if unknown:
                from progressive_cli.errors import NotFoundError

                raise NotFoundError(f"no health check '{unknown[0]}'; checks: {', '.join(chosen)}")
            chosen = {k: v for k, v in chosen.items() if k in only or any(k.startswith(n + "/") for n in only)}
        return list(await asyncio.gather(*(self._one(name, group, check) for name, (group, check) in chosen.items())))

    async def run_and_record(self, only: list[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Run the checks, keep the results in the store (dropping history older than ``health.history``)
        and apply the alert rules: what `progressive health` and the daemon's health job do. Returns the
        results and the alert notices sent."""
        from progressive_cli.health.alerts import process

        results = [r.as_dict() for r in await self.run(only)]
        await self.store.save_health(results, before=time.time() - float(self.settings.history))
        return results, await process(self.project, self.store, results)

    async def _one(self, name: str, group: str, check: Check) -> CheckResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(float(self.settings.timeout)):
                status, detail = await check()
        except TimeoutError:
            status, detail = "unhealthy", f"no result within {float(self.settings.timeout):g}s"
        except Exception as exc:  # a check must never take the monitor down with it
            status, detail = "unhealthy", f"{type(exc).__name__}: {exc}"
        elapsed = (time.perf_counter() - started) * 1000
        if status == "healthy" and elapsed > float(self.settings.response_time) * 1000:
            status, detail = "degraded", f"{detail}; slow: {elapsed:.0f} ms > {float(self.settings.response_time):g}s"
        from progressive_cli.config.secrets import REDACTOR
        from progressive_cli.errors import one_line

        return CheckResult(name, group, status, round(elapsed, 3), one_line(REDACTOR.redact(detail)), time.time())

    # --- the checks ---------------------------------------------------------------------------------
    async def _state_store(self) -> tuple[str, str]:
        await self.store.list_executions(limit=1)
        return "healthy", f"{self.store.url}: readable"

    async def _mca(self) -> tuple[str, str]:
        local = [a.id for a in self.project.agents.agents if a.enabled and a.kind in ("builtin", "python")]
        if not local:
            return "healthy", "no in-process agents"
        results = await self.runtime.check(local)
        failed = [f"{r['agent']}: {r['detail']}" for r in results if not r["ok"]]
        if not failed:
            return "healthy", f"{len(local)} in-process agent(s) answer"
        broken_mca = any(r["agent"] == "mca" and not r["ok"] for r in results)
        return ("unhealthy" if broken_mca or len(failed) == len(results) else "degraded"), "; ".join(failed)

    async def _agents(self) -> tuple[str, str]:
        remote = [a.id for a in self.project.agents.agents if a.enabled and a.kind in ("http", "command")]
        if not remote:
            return "healthy", "no remote agents"
        results = await self.runtime.check(remote)
        down = sorted({r["agent"] for r in results if not r["ok"]})
        dead = [a for a in down if all(not r["ok"] for r in results if r["agent"] == a)]
        ok = sum(1 for r in results if r["ok"])
        detail = f"{ok}/{len(results)} instance(s) answer" + (f"; down: {', '.join(down)}" if down else "")
        return ("unhealthy" if dead else "degraded" if down else "healthy"), detail

    def _database(self, name: str) -> Check:
        async def check() -> tuple[str, str]:
            result = await self.hub.test(name)
            return _status(result), str(result["detail"])
        return check

    def _api(self, item: Any) -> Check:
        async def check() -> tuple[str, str]:
            from progressive_cli.integrations import breaker_name

            rows = {r["name"]: r for r in await self.store.breakers(breaker_name(item.id))}
            breaker = rows.get(breaker_name(item.id), {}).get("state", "closed")
            notes = [f"breaker {breaker}"]
            status = "degraded" if breaker != "closed" else "healthy"
            if item.health is not None:
                result = await self.hub.test(item.id)
                notes.insert(0, str(result["detail"]))
                if not result["ok"]:
                    status = _status(result)
            return status, "; ".join(notes)
        return check

    async def _event_bus(self) -> tuple[str, str]:
        rows = await self.store.bus_status()
        if not rows:
            return "healthy", "no subscriptions yet"
        processed = sum(r["processed"] for r in rows)
        failed = sum(r["failed"] for r in rows)
        dead = sum(r["dead_letters"] for r in rows)
        retrying = sum(r["retry_queue"] for r in rows)
        rate = failed / (processed + failed) if processed + failed else 0.0
        detail = f"error rate {rate:.1%}, retry queue {retrying}, dead letters {dead}"
        degraded = rate > float(self.settings.error_rate) or dead > 0
        return ("degraded" if degraded else "healthy"), detail

    async def _scheduler(self) -> tuple[str, str]:
        from progressive_cli.controls import live_daemon

        scheduled = sum(1 for w in self.project.workflows.values() for t in w.triggers if t.type != "event")
        triggers = f"{scheduled} cron/interval trigger(s)" if scheduled else "no cron/interval triggers"
        daemon = await live_daemon(self.store)
        if daemon is None:
            rows = await self.store.daemons()
            crashed = rows[0] if rows and rows[0]["stopped_at"] is None else None
            idle = triggers + (" do not fire" if scheduled else "")
            if crashed is not None:
                ago = time.time() - crashed["seen_at"]
                note = (f"the daemon (pid {crashed['pid']} on {crashed['host']}) stopped heartbeating {ago:.0f}s "
                        f"ago without a clean shutdown; {idle}")
                return ("unhealthy" if scheduled else "degraded"), note
            return ("degraded" if scheduled else "healthy"), f"no daemon is running; {idle}"
        jobs = daemon["info"].get("jobs", {})
        failing = [f"{name}: {job['last_error']}" for name, job in sorted(jobs.items()) if job.get("last_error")]
        missed = sorted(name for name, job in jobs.items()
                        if job.get("last_missed") and time.time() - job["last_missed"] < MISSED_WINDOW)
        detail = (f"daemon pid {daemon['pid']} on {daemon['host']}, heartbeat "
                  f"{time.time() - daemon['seen_at']:.1f}s ago, {len(jobs)} job(s), {triggers}")
        if failing:
            return "degraded", f"{detail}; failing: {'; '.join(failing)}"
        if missed:
            return "degraded", f"{detail}; runs skipped in the last {MISSED_WINDOW / 60:g} min (late or " \
                f"overlapping): {', '.join(missed)}"
        return "healthy", detail


def _status(result: dict[str, Any]) -> str:
    """A live test's status: a configuration problem (an unset secret, a missing driver) means the check
    could not run (unknown), anything else that failed is unhealthy."""
    if result["ok"]:
        return "healthy"
    return "unknown" if result["error"] in ("STEP_ERROR", "DISABLED") else "unhealthy"


__all__ = ["ORDER", "CheckResult", "Monitor", "worst"]
