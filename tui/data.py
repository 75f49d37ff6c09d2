"""What the dashboard shows, read from the state store: one :class:`Snapshot` per refresh tick.

No Textual here: the app (``tui/app.py``) calls :meth:`Source.load` in a worker thread and patches its
tables from the snapshot. Every read is bounded (recent executions, a page of events, a window of
health history), so a tick stays cheap with thousands of agents and executions in the store.

The source never creates a store: a state file that does not exist yet, a locked one or an unreachable
server is a :class:`Snapshot` with ``error`` set, and the next tick tries again.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from progressive_cli.errors import ProgressiveError, one_line
from progressive_cli.store.base import FINISHED, Event

RECENT = 200
"""Finished executions shown (newest first); running and queued ones are always all shown."""
EVENTS_PAGE = 500
"""Events read per tick at most (the tail keeps the newest ``EVENTS_KEPT``)."""
EVENTS_KEPT = 1000
HISTORY_WINDOW = 3600.0
"""Health history shown: the last hour (sparkline and availability)."""
SPARK = 30
"""Points in a sparkline."""
BUSY_TIMEOUT = 0.5
"""How long a read waits for a locked SQLite file before the tick reports it (the next tick retries)."""
FAULTY = {"agents": {"offline", "degraded"}, "executions": {"failed", "timed_out", "cancelled"},
          "breakers": {"open", "half-open"}, "health": {"degraded", "unhealthy", "unknown"}}
"""Row states the 'faults only' toggle keeps, per view."""


@dataclass
class Snapshot:
    at: float
    error: str | None = None
    overall: str = "unknown"
    health: list[dict[str, Any]] = field(default_factory=list)
    agents: list[dict[str, Any]] = field(default_factory=list)
    executions: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    queues: list[dict[str, Any]] = field(default_factory=list)
    breakers: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    """Events new since the previous snapshot, oldest first."""
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    daemon: dict[str, Any] | None = None
    controls: list[dict[str, Any]] = field(default_factory=list)


def spark(values: list[float], width: int = SPARK) -> str:
    """A sparkline of the last ``width`` values (``▁`` to ``█``), empty for no values."""
    from progressive_cli.cli.health import sparkline

    return sparkline(values[-width:]) if values else ""


class Source:
    """Reads snapshots of one project's store. Keeps what spans ticks: the last event seen, and the queue
    depths of the last ``SPARK`` ticks for their sparklines and rates."""

    def __init__(self, project: Any, *, clock: Any = time.time) -> None:
        self.project = project
        self.clock = clock
        self.store: Any = None
        self.last_seq = 0
        self.depths: dict[str, deque[tuple[float, int]]] = {}

    # --- the store -------------------------------------------------------------------------------------
    def _open(self) -> Any:
        """The store the refresh reads (kept open between ticks)."""
        if self.store is None:
            self.store = self._connect()
        return self.store

    def _connect(self) -> Any:
        """A connection of its own to the project's store, never creating it."""
        from progressive_cli.config.secrets import resolve
        from progressive_cli.errors import UnavailableError
        from progressive_cli.store import open_store
        from progressive_cli.store.sqlite import SQLiteStore, path_from_url

        url = resolve(self.project.settings.state.url)
        if url.startswith("sqlite:///"):
            path = path_from_url(url, self.project.root)
            if not Path(path).exists():
                raise UnavailableError(f"no state store at {path} yet: run a workflow or start the daemon")
            return SQLiteStore(path, busy_timeout=BUSY_TIMEOUT)
        return open_store(url, self.project.root)

    async def close(self) -> None:
        if self.store is not None:
            store, self.store = self.store, None
            await store.close()

    async def load(self, views: frozenset[str] | None = None) -> Snapshot:
        """One snapshot; a store problem is the snapshot's ``error`` (and the store is reopened next time).
        ``views``: the views on screen; agents' call metrics and running executions' progress are read only
        for theirs (None: everything)."""
        import sqlite3

        t = self.clock()
        try:
            return await self._load(self._open(), t, views)
        except ProgressiveError as exc:
            await self.close()
            return Snapshot(at=t, error=one_line(exc.message))
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            return Snapshot(at=t, error=one_line(f"state store: {exc}"))

    async def _load(self, store: Any, t: float, views: frozenset[str] | None) -> Snapshot:
        from progressive_cli.controls import live_daemon
        from progressive_cli.health.monitor import worst

        snap = Snapshot(at=t)
        snap.health = await self._health(store, t)
        snap.overall = worst([h["status"] for h in snap.health]) if snap.health else "unknown"
        snap.agents = await self._agents(store, t, full=views is None or "agents" in views)
        snap.executions, snap.counts = await self._executions(store, progress=views is None or "executions" in views)
        snap.breakers = await self._breakers(store, t)
        snap.dead_letters = await store.dead_letters(limit=RECENT)
        snap.queues = await self._queues(store, t, snap)
        alerts = await store.load_alerts()
        snap.alerts = sorted((a for a in alerts.values() if a["firing"] or a["resolved_at"]),
                             key=lambda a: -(a["fired_at"] or 0))[:20]
        snap.events = await self._events(store)
        snap.daemon = await live_daemon(store)
        snap.controls = await store.controls(limit=50)
        return snap

    # --- the views' rows --------------------------------------------------------------------------------
    async def _health(self, store: Any, t: float) -> list[dict[str, Any]]:
        latest = await store.latest_health()
        history: dict[str, list[dict[str, Any]]] = {}
        for row in await store.health_history(t - HISTORY_WINDOW):
            history.setdefault(row["name"], []).append(row)
        out = []
        for row in latest:
            runs = history.get(row["name"], [])
            up = sum(1 for r in runs if r["status"] in ("healthy", "degraded"))
            out.append({**row, "age_s": round(t - row["at"], 1),
                        "availability_pct": round(100 * up / len(runs), 1) if runs else None,
                        "spark": spark([float(r["response_ms"] or 0) for r in runs])})
        return out

    async def _agents(self, store: Any, t: float, *, full: bool) -> list[dict[str, Any]]:
        """One row per agent: its status, instances, calls in flight, success rate and p95 over instances
        (without ``full``, the status and heartbeat only: what the overview and the palette need)."""
        from progressive_cli.mca.runtime import instance_report, status_of

        agents = self.project.agents.agents
        if not full:
            beats: dict[str, list[dict[str, Any]]] = {}
            for beat in await store.heartbeats():
                beats.setdefault(beat["agent"], []).append(beat)
            out = []
            for agent in agents:
                status, seen = status_of(agent, beats.get(agent.id, []), t)
                out.append({"id": agent.id, "kind": agent.kind, "status": status if agent.enabled else "disabled",
                            "heartbeat_age_s": None if seen is None else round(seen, 1)})
            return out
        rows = instance_report(agents, await store.heartbeats(), await store.agent_metrics(),
                               await store.breakers("agent:"), t)
        by_agent: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_agent.setdefault(row["agent"], []).append(row)
        out = []
        for agent in agents:
            inst = by_agent.get(agent.id, [])
            calls = sum(r["calls"] for r in inst)
            success = sum(r["success"] for r in inst)
            p95 = max((r["p95_ms"] for r in inst if r["p95_ms"] is not None), default=None)
            first = inst[0] if inst else {}
            out.append({"id": agent.id, "kind": agent.kind, "status": first.get("status", "offline"),
                        "heartbeat_age_s": first.get("heartbeat_age_s"), "instances": len(inst),
                        "in_flight": sum(r["in_flight"] for r in inst), "calls": calls,
                        "success_rate": round(success / calls, 4) if calls else None, "p95_ms": p95,
                        "capabilities": list(agent.capabilities),
                        "breakers_open": sum(1 for r in inst if r["breaker"] != "closed"),
                        "last_error": next((r["last_error"] for r in inst if r["last_error"]), None),
                        "instance_rows": inst})
        return out

    async def _executions(self, store: Any, *, progress: bool) -> tuple[list[dict[str, Any]], dict[str, int]]:
        live = await store.list_executions(statuses=["running", "queued", "waiting"], limit=RECENT)
        done = await store.list_executions(statuses=sorted(FINISHED), limit=RECENT)
        counts: dict[str, int] = {}
        for row in (await store.counts())["executions"]:
            counts[row["status"]] = counts.get(row["status"], 0) + int(row["count"])
        out = []
        for e in live + done:
            steps = e.definition.get("steps", []) if isinstance(e.definition, dict) else []
            total = len(steps)
            fraction = None
            if progress and e.status == "running" and total:
                records = await store.load_steps(e.id)
                top = {s.get("id") for s in steps}
                fraction = sum(1 for r in records.values() if r.key in top and r.status == "completed") / total
            ended = e.finished_at or self.clock()
            began = e.started_at or e.created_at
            error = e.error if isinstance(e.error, dict) else {}
            out.append({"id": e.id, "workflow": e.workflow, "status": e.status, "progress": fraction,
                        "steps": total, "created_at": e.created_at, "started_at": e.started_at,
                        "duration_s": round(ended - began, 1) if began else None,
                        "failed_step": error.get("step"), "error": error.get("message"),
                        "owner": e.owner})
        return out, counts

    async def _breakers(self, store: Any, t: float) -> list[dict[str, Any]]:
        from progressive_cli.integrations import breaker_rows

        return breaker_rows(self.project, await store.breakers(), t)

    async def _queues(self, store: Any, t: float, snap: Snapshot) -> list[dict[str, Any]]:
        bus = await store.bus_status()
        total_events, _newest = await store.event_stats()
        depths = {
            "event store": total_events,
            "work queue": await store.queue_depth(),
            "retry queue": sum(int(r["retry_queue"]) for r in bus),
            "dead letters": sum(int(r["dead_letters"]) for r in bus),
        }
        out = []
        for name, depth in depths.items():
            series = self.depths.setdefault(name, deque(maxlen=SPARK))
            if series and series[-1][0] == t:  # a refresh within the same instant replaces, not adds
                series.pop()
            series.append((t, depth))
            rate = None
            if len(series) > 1 and series[-1][0] > series[0][0]:
                rate = round((series[-1][1] - series[0][1]) / (series[-1][0] - series[0][0]), 2)
            out.append({"queue": name, "depth": depth, "rate_per_s": rate,
                        "spark": spark([float(d) for _, d in series])})
        return out

    async def _events(self, store: Any) -> list[Event]:
        if self.last_seq == 0:  # first tick: the newest page only
            _count, newest = await store.event_stats()
            self.last_seq = max(0, newest - EVENTS_PAGE)
        events: list[Event] = await store.list_events(after_seq=self.last_seq, limit=EVENTS_PAGE)
        if events:
            self.last_seq = max(self.last_seq, max(int(e.seq or 0) for e in events))
        return events

    async def execution_detail(self, execution_id: str) -> dict[str, Any]:
        """The step timeline of one run: each record with input, output, error and times, in start order."""
        store = self._connect()  # a detail is read in its own thread: its own connection
        try:
            return await self._execution_detail(store, execution_id)
        finally:
            await store.close()

    async def _execution_detail(self, store: Any, execution_id: str) -> dict[str, Any]:
        execution = await store.get_execution(execution_id)
        if execution is None:
            return {"id": execution_id, "missing": True, "steps": []}
        records = sorted((await store.load_steps(execution_id)).values(),
                         key=lambda r: (r.started_at or float("inf"), r.key))
        return {"id": execution.id, "workflow": execution.workflow, "status": execution.status,
                "inputs": execution.inputs, "outputs": execution.outputs, "error": execution.error,
                "definition": execution.definition,
                "steps": [{"key": r.key, "type": r.type, "status": r.status, "attempt": r.attempt,
                           "input": r.input, "output": r.output, "error": r.error, "started_at": r.started_at,
                           "finished_at": r.finished_at} for r in records]}

    async def agent_detail(self, agent_id: str) -> dict[str, Any]:
        """Recent messages to or from one agent."""
        store = self._connect()
        try:
            messages = await store.list_messages(agent=agent_id, limit=50)
        finally:
            await store.close()
        return {"id": agent_id, "messages": [m.as_dict() for m in messages]}


__all__ = ["FAULTY", "Snapshot", "Source", "spark"]
