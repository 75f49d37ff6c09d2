"""Operator controls: actions the CLI and the dashboard write to the store, for the daemon to apply.

A control is a row of the ``controls`` table: a ``kind`` (below), a ``target`` and a JSON ``payload``,
who asked and when, then who applied it, when, and its result or error. The row is the request, the
audit trail and the acknowledgement at once: a screen or a command that asked shows when it has taken
effect by reading it back.

Who applies it:

- **a daemon,** when one is alive on the store (it heartbeats a ``daemons`` row every few seconds):
  its ``controls`` job claims pending rows every half second and applies them in its own process, so a
  breaker reset reaches its in-memory breakers and a replay its bus at once;
- **the asking process itself,** when no daemon is alive, or when the daemon has not taken the
  control within the caller's wait (it is stuck or going down): ``daemon.reload`` is the exception,
  only a daemon can apply it.

Claims are atomic (``claim_controls``), so a control is applied by one process only. An applier that
dies half-way leaves its claim, which another applier takes over after a minute, or at once the asking
process when it sees that the daemon which took its control is gone: every action here is safe to apply
twice. Errors and results are stored redacted (``REDACTOR``), as everything the store keeps.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from progressive_cli.config.secrets import REDACTOR
from progressive_cli.errors import ExitCode, NotFoundError, ProgressiveError, UnavailableError, UsageError, one_line
from progressive_cli.store.base import FINISHED, Event, StateStore, now

KINDS: dict[str, str] = {
    "breaker.reset": "close a circuit breaker and clear its counters",
    "breaker.open": "force a circuit breaker open (payload: hold seconds, reset_timeout)",
    "execution.cancel": "cancel a run (a live one stops before its next step)",
    "execution.resume": "queue an interrupted or waiting run to go on (completed steps are not run again)",
    "execution.retry": "queue a failed run again from its failed step (payload: from_step)",
    "dlq.replay": "put dead letters back on their retry queue (payload: ids, or all)",
    "dlq.purge": "delete dead letters (payload: ids, or before)",
    "daemon.reload": "reload the project after validating it (a daemon only)",
}
DAEMON_ONLY = frozenset({"daemon.reload"})
DAEMON_STALE = 10.0
"""A daemon whose heartbeat row is older than this is taken for gone."""
HEARTBEAT_EVERY = 2.0
"""How often a daemon writes its heartbeat row (its ``heartbeat`` job)."""
CLAIM_STALE = 60.0
"""A claim older than this, not finished, is taken for its applier's death: another applier takes it over."""

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def whoami(role: str) -> str:
    """``role:user@host:pid``: who asked for, or applied, a control."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{role}:{user}@{socket.gethostname()}:{os.getpid()}"


async def request(store: StateStore, kind: str, target: str, payload: dict[str, Any] | None = None, *,
                  by: str) -> str:
    """Write a control (and a ``control.requested`` event); returns its id."""
    if kind not in KINDS:
        raise UsageError(f"unknown control '{kind}'; controls: {', '.join(KINDS)}")
    event = Event("control.requested", {"kind": kind, "target": target, "by": by}, subject=target)
    return await store.add_control(kind, target, payload or {}, by, [event])


async def live_daemon(store: StateStore) -> dict[str, Any] | None:
    """The daemon alive on ``store`` (its heartbeat is fresh and, on this host, its pid exists), or None."""
    alive = await live_daemons(store)
    return alive[0] if alive else None


async def live_daemons(store: StateStore) -> list[dict[str, Any]]:
    """Every daemon alive on ``store``, newest first (one, unless hosts that share a store each run one)."""
    from progressive_cli.engine.executor import _owner_is_dead

    t = now()
    return [row for row in await store.daemons()
            if row["stopped_at"] is None and t - row["seen_at"] <= DAEMON_STALE
            and not _owner_is_dead(f"{row['host']}:{row['pid']}")]


class Applier:
    """Applies controls in this process. The daemon makes one with its ``reload``; the CLI one without."""

    def __init__(self, store: StateStore, name: str, *, reload: Callable[[], Awaitable[str]] | None = None) -> None:
        self.store = store
        self.name = name
        self.handlers: dict[str, Handler] = {
            "breaker.reset": self._breaker_reset,
            "breaker.open": self._breaker_open,
            "execution.cancel": self._cancel,
            "execution.resume": self._resume,
            "execution.retry": self._retry,
            "dlq.replay": self._replay,
            "dlq.purge": self._purge,
        }
        if reload is not None:
            self.handlers["daemon.reload"] = lambda _row: reload()

    async def apply(self, ids: list[str] | None = None, *, stale_after: float = CLAIM_STALE) -> list[dict[str, Any]]:
        """Claim the pending controls (only ``ids`` if given) this applier can apply, and those claimed more
        than ``stale_after`` seconds ago and not finished; apply them in order, record each outcome
        (redacted); returns the rows as finished."""
        done = []
        for row in await self.store.claim_controls(self.name, ids=ids, kinds=list(self.handlers),
                                                   stale_after=stale_after):
            events = [Event("control.applied", {"kind": row["kind"], "target": row["target"], "by": self.name},
                            subject=row["target"])]
            try:
                row["result"], row["error"] = REDACTOR.redact_data(await self.handlers[row["kind"]](row)), None
            except ProgressiveError as exc:
                row["result"], row["error"] = {"exit_code": int(exc.exit_code)}, exc.message
            except Exception as exc:  # a control must never take its applier (the daemon) down
                row["result"] = {"exit_code": int(ExitCode.FAILED)}
                row["error"] = f"{type(exc).__name__}: {exc}"
            if row["error"] is not None:
                row["error"] = one_line(REDACTOR.redact(row["error"]))
                events[0].type = "control.failed"
                events[0].data["error"] = row["error"]
            await self.store.finish_control(row["id"], self.name, result=row["result"], error=row["error"],
                                            events=events)
            row["status"] = "failed" if row["error"] is not None else "applied"
            row["applied_by"] = self.name
            done.append(row)
        return done

    # --- the actions ---------------------------------------------------------------------------------
    async def _breaker_reset(self, row: dict[str, Any]) -> Any:
        from progressive_cli.integrations.breakers import operator_set

        return await operator_set(self.store, row["target"], "closed")

    async def _breaker_open(self, row: dict[str, Any]) -> Any:
        from progressive_cli.integrations.breakers import operator_set

        payload = row["payload"]
        return await operator_set(self.store, row["target"], "open", hold=payload.get("hold"),
                                  reset_timeout=float(payload.get("reset_timeout", 0.0)))

    async def _cancel(self, row: dict[str, Any]) -> Any:
        from progressive_cli.engine.executor import is_live

        store = self.store
        execution = await self._execution(row["target"])
        if execution.status in FINISHED:
            raise UsageError(f"execution {execution.id[:12]} already {execution.status}")
        if is_live(execution):
            await store.update_execution(execution.id, cancel_requested=True)
            return {"execution": execution.id, "status": execution.status, "cancel_requested": True,
                    "note": f"{execution.owner} stops it before its next step"}
        event = Event("workflow.cancelled", {"workflow": execution.workflow, "status": "cancelled"},
                      source=f"progressive/workflows/{execution.workflow}", subject=execution.id,
                      execution_id=execution.id)
        await store.update_execution(execution.id, [event], status="cancelled", cancel_requested=True,
                                     finished_at=now(), error={"kind": "CANCELLED", "message": "cancelled"})
        return {"execution": execution.id, "status": "cancelled", "cancel_requested": True}

    async def _resume(self, row: dict[str, Any]) -> Any:
        from progressive_cli.engine.executor import is_live
        from progressive_cli.worker import RUN

        execution = await self._execution(row["target"])
        if execution.status in FINISHED:
            raise UsageError(f"execution {execution.id[:12]} {execution.status}; retry it instead")
        if is_live(execution):
            raise UsageError(f"execution {execution.id[:12]} is already being run by {execution.owner}")
        await self.store.enqueue(RUN, {"execution": execution.id})
        return {"execution": execution.id, "status": execution.status, "queued": True}

    async def _retry(self, row: dict[str, Any]) -> Any:
        from progressive_cli.worker import RUN

        execution = await self._execution(row["target"])
        await prepare_retry(self.store, execution, row["payload"].get("from_step"), status="queued")
        await self.store.enqueue(RUN, {"execution": execution.id})
        return {"execution": execution.id, "status": "queued", "queued": True}

    async def _execution(self, execution_id: str) -> Any:
        execution = await self.store.get_execution(execution_id)
        if execution is None:
            raise NotFoundError(f"no execution {execution_id}")
        return execution

    async def _replay(self, row: dict[str, Any]) -> Any:
        ids = row["payload"].get("ids")
        return {"replayed": await self.store.replay_dead_letters(ids, time.time())}

    async def _purge(self, row: dict[str, Any]) -> Any:
        payload = row["payload"]
        return {"purged": await self.store.purge_dead_letters(payload.get("before"), payload.get("ids"))}


def retry_plan(steps: dict[str, Any], from_step: str | None) -> set[str]:
    """Records to drop so a run goes again: every unfinished one, ``from_step`` and all that began after it,
    and every enclosing step of those (whose stored result would otherwise be reused)."""
    drop = {k for k, r in steps.items() if r.status not in ("completed", "skipped")}
    if from_step is not None:
        matches = [r for k, r in steps.items() if k == from_step or r.step_id == from_step]
        if not matches:
            raise NotFoundError(f"no step '{from_step}' in this execution; see `progressive executions show`")
        start = min(r.started_at or 0 for r in matches)
        drop |= {k for k, r in steps.items() if (r.started_at or 0) >= start} | {r.key for r in matches}
    parents = {k for k in steps for d in drop if d.startswith(k + "/") or d.startswith(k + "[")}
    return drop | parents


async def prepare_retry(store: StateStore, execution: Any, from_step: str | None, *, status: str = "running") -> None:
    """Make a failed, timed-out or cancelled run (or, with ``from_step``, a completed or stopped one) ready
    to run again: the records of what goes again are dropped, earlier outputs kept, and the run gets the
    time limit it had, counted from now. Raises when it cannot be retried."""
    from progressive_cli.engine.executor import is_live

    if execution.status == "completed" and from_step is None:
        raise UsageError(f"execution {execution.id[:12]} completed; use --from-step to run part of it again")
    if execution.status not in FINISHED and from_step is None:
        raise UsageError(f"execution {execution.id[:12]} is {execution.status}; resume it instead")
    if is_live(execution):  # its owner would go on with records we are about to drop
        raise UnavailableError(f"execution {execution.id[:12]} is being run by {execution.owner}; cancel it first")
    steps = await store.load_steps(execution.id)
    await store.delete_steps(execution.id, sorted(retry_plan(steps, from_step)))
    began = execution.started_at or execution.created_at
    deadline = now() + (execution.deadline - began) if execution.deadline else None
    await store.update_execution(execution.id, status=status, error=None, outputs=None, finished_at=None,
                                 cancel_requested=False, owner=None, lease_until=None, deadline=deadline)


async def settle(store: StateStore, control_id: str, kind: str, *, wait: float, by: str,
                 poll: float = 0.05) -> dict[str, Any]:
    """See a control through: wait up to ``wait`` seconds for a live daemon to apply it, else (no daemon,
    or it did not take it in time) apply it here. Returns the finished row; raises what it failed with."""
    daemon = await live_daemon(store)
    if daemon is None and kind in DAEMON_ONLY:
        await _refuse(store, control_id, by, f"no daemon is running on {store.url}; {kind} needs one")
    gone = False
    if daemon is not None:
        deadline = time.monotonic() + wait
        while True:
            row = (await store.controls(ids=[control_id]))[0]
            if row["status"] in ("applied", "failed"):
                return _outcome(row)
            gone = await _applier_gone(store, row)
            if gone or time.monotonic() >= deadline:
                break
            await asyncio.sleep(poll)
        if kind in DAEMON_ONLY:
            if gone:
                await _refuse(store, control_id, by, f"{row['applied_by']} stopped while applying {kind} "
                                                     f"(control {control_id[:12]}); ask again when a daemon runs")
            raise UnavailableError(f"the daemon (pid {daemon['pid']}) has not applied {kind} within {wait:g}s; "
                                   f"the request {control_id[:12]} stays pending")
    rows = await Applier(store, by).apply([control_id], stale_after=0.0 if gone else CLAIM_STALE)
    deadline = time.monotonic() + max(wait, 10.0)  # the daemon took it at the last moment: await its outcome
    while not rows:
        row = (await store.controls(ids=[control_id]))[0]
        if row["status"] in ("applied", "failed"):
            return _outcome(row)
        if await _applier_gone(store, row):  # it died half-way: take the control over now, not in a minute
            rows = await Applier(store, by).apply([control_id], stale_after=0.0)
            if rows:
                break
        if time.monotonic() >= deadline:
            raise UnavailableError(f"{row['applied_by']} took {kind} {row['target']} (control {control_id[:12]}) "
                                   "but has not finished it")
        await asyncio.sleep(poll)
    return _outcome(rows[0])


async def _applier_gone(store: StateStore, row: dict[str, Any]) -> bool:
    """Whether ``row`` was claimed by a daemon that is no longer alive (it died, or stopped heartbeating,
    half-way through applying it). Daemons apply as ``daemon:HOST:PID``, their heartbeat row's host and pid."""
    applier = row["applied_by"] or ""
    if row["status"] != "applying" or not applier.startswith("daemon:"):
        return False
    return all(applier != f"daemon:{d['host']}:{d['pid']}" for d in await live_daemons(store))


async def _refuse(store: StateStore, control_id: str, by: str, message: str) -> None:
    """Finish a control that cannot be applied (failed, exit 5), and raise that."""
    if await store.claim_controls(by, ids=[control_id], stale_after=0.0):
        await store.finish_control(control_id, by, result={"exit_code": int(ExitCode.UNAVAILABLE)}, error=message)
    raise UnavailableError(message)


def _outcome(row: dict[str, Any]) -> dict[str, Any]:
    if row["status"] == "failed":
        error = ProgressiveError(row["error"])
        error.exit_code = ExitCode((row["result"] or {}).get("exit_code", ExitCode.FAILED))
        raise error
    return row


__all__ = ["DAEMON_ONLY", "DAEMON_STALE", "HEARTBEAT_EVERY", "KINDS", "Applier", "live_daemon", "live_daemons",
           "prepare_retry", "request", "retry_plan", "settle", "whoami"]
