"""What the dashboard shows, read from the state store: one :class:`Snapshot` per refresh tick.

No Textual here: the app (``tui/app.py``) calls :meth:`Source.load` in a worker thread for the view on
screen and patches that view's tables from the snapshot. Each view reads only what it shows
(:data:`READS`), and every read is bounded (recent executions, a page of events, a window of health
history), so a tick stays cheap with thousands of agents and executions in the store.

The source never creates a store: a state file that does not exist yet, a locked one or an unreachable
server is a :class:`Snapshot` with ``error`` set, and the next tick tries again.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
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


READS: dict[str, frozenset[str]] = {
    "overview": frozenset({"health", "agents", "counts", "breakers", "alerts"}),
    "agents": frozenset({"agents", "agent_figures"}),
    "executions": frozenset({"executions"}),
    "queues": frozenset({"dead_letters"}),
    "breakers": frozenset({"breakers"}),
    "health": frozenset({"health"}),
    "events": frozenset({"events"}),
}
"""What each view needs read. The queue depths (their trends and rates need every tick) and the daemon's
presence are read on every tick whatever the view."""
PARTS = frozenset().union(*READS.values())


@dataclass
class Snapshot:
    """One tick's read. A part that was not read for the views on screen is None: :meth:`merged` keeps the
    previous tick's value for it."""

    at: float
    error: str | None = None
    overall: str | None = None
    health: list[dict[str, Any]] | None = None
    agents: list[dict[str, Any]] | None = None
    """Without ``agent_figures`` read (``agents_full`` False), only id, kind, status and heartbeat age."""
    agents_full: bool = False
    executions: list[dict[str, Any]] | None = None
    counts: dict[str, int] | None = None
    queues: list[dict[str, Any]] = field(default_factory=list)
    breakers: list[dict[str, Any]] | None = None
    alerts: list[dict[str, Any]] | None = None
    events: list[Event] = field(default_factory=list)
    """Events new since the previous read of events, oldest first."""
    dead_letters: list[dict[str, Any]] | None = None
    daemon: dict[str, Any] | None = None

    def merged(self, previous: Snapshot | None) -> Snapshot:
        """This snapshot, with the parts it did not read taken from ``previous``."""
        if previous is None:
            return self
        fill = {name: getattr(previous, name) for name in ("overall", "health", "agents", "executions", "counts",
                                                              "breakers", "alerts", "dead_letters")
                if getattr(self, name) is None}
        if "agents" in fill:
            fill["agents_full"] = previous.agents_full
        return replace(self, **fill) if fill else self


def spark(values: list[float], width: int = SPARK) -> str:
    """A sparkline of the last ``width`` values (``▁`` to ``█``), empty for no values."""
    from progressive_cli.health.history import sparkline

    return sparkline(values[-width:]) if values else ""


class Source:
    """Reads snapshots of one project's store. Keeps what spans ticks: the last event seen, the queue
    depths of the last ``SPARK`` ticks for their sparklines and rates, each agent instance's summarised
    metrics (summarised again only when its counters move), and the first snapshot when it was read ahead.
    It pickles (the start-up child hands one over) once its store is closed."""

    def __init__(self, project: Any, *, clock: Any = time.time) -> None:
        self.project = project
        self.clock = clock
        self.store: Any = None
        self.last_seq = 0
        self.depths: dict[str, deque[tuple[float, int]]] = {}
        self.figures: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = {}  # agents' metrics, summarised
        self._names: dict[str, list[tuple[str, str]]] = {}
        self._first: Any = None  # the first snapshot read ahead (or a Future of it), until taken

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
        """One snapshot of what ``views`` show (None: everything); a store problem is the snapshot's
        ``error`` (and the store is reopened next time)."""
        import sqlite3

        t = self.clock()
        parts = PARTS if views is None else frozenset().union(*(READS[v] for v in views))
        try:
            return await self._load(self._open(), t, parts)
        except ProgressiveError as exc:
            await self.close()
            return Snapshot(at=t, error=one_line(exc.message))
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            return Snapshot(at=t, error=one_line(f"state store: {exc}"))

    def prefetch(self, views: frozenset[str]) -> None:
        """Start reading the first snapshot in a thread now: the dashboard's first frame then need not wait
        for it after the app has started (SQLite releases the GIL while it reads)."""
        import asyncio
        import threading
        from concurrent.futures import Future

        future: Future[Snapshot] = Future()

        def read() -> None:
            try:
                future.set_result(asyncio.run(self.load(views)))
            except BaseException as exc:  # handed to whoever takes it
                future.set_exception(exc)

        self._first = future
        threading.Thread(target=read, name="dashboard-prefetch", daemon=True).start()

    def keep(self, snapshot: Snapshot) -> None:
        """Take ``snapshot`` (read elsewhere: a child process at start-up) as the first one."""
        self._first = snapshot

    def prefetched(self, *, wait: bool) -> Snapshot | None:
        """The first snapshot, read ahead (:meth:`prefetch`, :meth:`keep`), once; ``wait``: until it is read,
        else None while it is still being read."""
        first, self._first = self._first, None
        if first is None or isinstance(first, Snapshot):
            return first
        if not wait and not first.done():
            self._first = first
            return None
        return first.result()

    async def _load(self, store: Any, t: float, parts: frozenset[str]) -> Snapshot:
        from progressive_cli.controls import live_daemon
        from progressive_cli.health.monitor import worst

        snap = Snapshot(at=t)
        if "health" in parts:
            snap.health = await self._health(store, t)
            snap.overall = worst([h["status"] for h in snap.health]) if snap.health else "unknown"
        if "agents" in parts:
            snap.agents_full = "agent_figures" in parts
            snap.agents = await self._agents(store, t, full=snap.agents_full)
        if "executions" in parts:
            snap.executions = await self._executions(store)
        if "counts" in parts:
            snap.counts = await store.execution_counts()
        if "breakers" in parts:
            snap.breakers = await self._breakers(store, t)
        if "dead_letters" in parts:
            snap.dead_letters = await store.dead_letters(limit=RECENT)
        if "alerts" in parts:
            alerts = await store.load_alerts()
            snap.alerts = sorted((a for a in alerts.values() if a["firing"] or a["resolved_at"]),
                                 key=lambda a: -(a["fired_at"] or 0))[:20]
        total_events, newest = await store.event_stats()
        snap.queues = await self._queues(store, t, total_events)
        if "events" in parts:
            snap.events = await self._events(store, newest)
        snap.daemon = await live_daemon(store)
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
        """One row per agent: its status by the age of its newest heartbeat and, with ``full`` (the agents
        view), over its instances: calls in flight, calls, success rate, the worst p95, open breakers and the
        last error. (What each instance did is read when its detail opens: :meth:`agent_detail`.)"""
        from progressive_cli.mca.metrics import summarise_cached
        from progressive_cli.mca.runtime import status_of

        beats: dict[tuple[str, str], dict[str, Any]] = {(b["agent"], b["instance"]): b
                                                        for b in await store.heartbeats()}
        if full:
            figures = {(m["agent"], m["instance"]): m for m in await store.agent_metrics()}
            tripped = {b["name"] for b in await store.breakers("agent:") if b["state"] != "closed"}
        out = []
        for agent in self.project.agents.agents:
            names = self._instances(agent)
            status, seen = status_of(agent, [beats[k] for k in names if k in beats], t)
            row: dict[str, Any] = {"id": agent.id, "kind": agent.kind,
                                   "status": status if agent.enabled else "disabled",
                                   "heartbeat_age_s": None if seen is None else round(seen, 1)}
            if full:
                calls = success = in_flight = breakers_open = 0
                p95: float | None = None
                last_error = None
                for key in names:
                    figure = summarise_cached(self.figures, key, figures.get(key, {}))
                    calls += figure["calls"]
                    success += figure["success"]
                    in_flight += figure["in_flight"]
                    if figure["p95_ms"] is not None and (p95 is None or figure["p95_ms"] > p95):
                        p95 = figure["p95_ms"]
                    last_error = last_error or figure["last_error"]
                    breakers_open += f"agent:{key[0]}@{key[1]}" in tripped
                row.update(instances=len(names), in_flight=in_flight, calls=calls,
                           success_rate=round(success / calls, 4) if calls else None, p95_ms=p95,
                           capabilities=agent.capabilities, breakers_open=breakers_open, last_error=last_error)
            out.append(row)
        return out

    def _instances(self, agent: Any) -> list[tuple[str, str]]:
        """(agent, instance) of each configured instance (the config does not change while it runs)."""
        names = self._names.get(agent.id)
        if names is None:
            from progressive_cli.mca.router import instances_of

            names = self._names[agent.id] = [(agent.id, i.name) for i in instances_of(agent)]
        return names

    async def _executions(self, store: Any) -> list[dict[str, Any]]:
        """Running, queued and waiting runs, then the newest finished ones; a running run's progress is the
        share of its top-level steps completed."""
        live = await store.list_executions(statuses=["running", "queued", "waiting"], limit=RECENT)
        done = await store.list_executions(statuses=sorted(FINISHED), limit=RECENT)
        completed = await store.completed_steps([e.id for e in live if e.status == "running"])
        now = self.clock()
        out = []
        for e in live + done:
            steps = e.definition.get("steps", []) if isinstance(e.definition, dict) else []
            total = len(steps)
            fraction = None
            if e.status == "running" and total:
                keys = completed.get(e.id, set())
                fraction = sum(1 for s in steps if s.get("id") in keys) / total
            ended = e.finished_at or now
            began = e.started_at or e.created_at
            error = e.error if isinstance(e.error, dict) else {}
            out.append({"id": e.id, "workflow": e.workflow, "status": e.status, "progress": fraction,
                        "steps": total, "created_at": e.created_at, "started_at": e.started_at,
                        "duration_s": round(ended - began, 1) if began else None,
                        "failed_step": error.get("step"), "error": error.get("message"),
                        "owner": e.owner})
        return out

    async def _breakers(self, store: Any, t: float) -> list[dict[str, Any]]:
        from progressive_cli.integrations import breaker_rows

        return breaker_rows(self.project, await store.breakers(), t)

    async def _queues(self, store: Any, t: float, total_events: int) -> list[dict[str, Any]]:
        bus = await store.bus_status()
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

    async def _events(self, store: Any, newest: int) -> list[Event]:
        """The events after the last one read; after a while unread (another view was on screen), the
        newest page only."""
        if newest - self.last_seq > EVENTS_PAGE:
            self.last_seq = max(0, newest - EVENTS_PAGE)
        events: list[Event] = await store.list_events(after_seq=self.last_seq, limit=EVENTS_PAGE)
        if events:
            self.last_seq = max(self.last_seq, max(int(e.seq or 0) for e in events))
        return events

    @contextlib.asynccontextmanager
    async def _own(self) -> AsyncIterator[Any]:
        """A connection of its own, for a read in another thread than the ticks' (details, the palette)."""
        store = self._connect()
        try:
            yield store
        finally:
            await store.close()

    async def execution_detail(self, execution_id: str) -> dict[str, Any]:
        """The step timeline of one run: each record with input, output, error and times, in start order."""
        async with self._own() as store:
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
        """Each instance of one agent (probe, calls, breaker: what `agents status` shows) and its recent
        messages."""
        from progressive_cli.mca.runtime import instance_report

        agents = [a for a in self.project.agents.agents if a.id == agent_id]
        async with self._own() as store:
            instances = instance_report(agents, await store.heartbeats(), await store.agent_metrics(),
                                        await store.breakers("agent:"), self.clock())
            messages = await store.list_messages(agent=agent_id, limit=50)
        return {"id": agent_id, "instances": instances, "messages": [m.as_dict() for m in messages]}

    async def recent_executions(self) -> list[dict[str, Any]]:
        """The runs the executions view lists (for the command palette, from any view)."""
        async with self._own() as store:
            return await self._executions(store)


__all__ = ["FAULTY", "Snapshot", "Source", "spark"]
