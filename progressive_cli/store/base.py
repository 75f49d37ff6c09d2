"""The state store contract shared by the CLI, the dashboard and daemons.

Every backend (SQLite now, PostgreSQL later) implements :class:`StateStore`. Methods are
async so a networked backend can be truly asynchronous; the SQLite backend runs each call
synchronously (they take microseconds). Each method that takes ``events`` writes them in
the same transaction as its own change, so a state change and its event are never seen
apart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

EXECUTION_STATUSES = ("queued", "running", "waiting", "completed", "failed", "cancelled", "timed_out")
FINISHED = frozenset({"completed", "failed", "cancelled", "timed_out"})
STEP_STATUSES = ("running", "completed", "failed", "skipped", "waiting")


def new_id() -> str:
    """128 random bits as 32 hex characters (uuid4's randomness, a fifth of its cost)."""
    return os.urandom(16).hex()


def now() -> float:
    return time.time()


@dataclass
class Execution:
    id: str
    workflow: str
    status: str
    inputs: dict[str, Any]
    definition: dict[str, Any]
    """The workflow as validated when the run started; a resumed run uses this, not today's file."""
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    parent_id: str | None = None
    parent_step: str | None = None
    created_at: float = field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = field(default_factory=now)
    wake_at: float | None = None
    """When a durable `wait` is due; the run sleeps in the store, not in a process."""
    deadline: float | None = None
    owner: str | None = None
    lease_until: float | None = None
    cancel_requested: bool = False


@dataclass
class StepRecord:
    execution_id: str
    key: str
    """Unique within the execution: the step's path, e.g. ``prepare/progress/one_rep_max[2]/estimate``."""
    step_id: str
    type: str
    status: str
    attempt: int = 1
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    wake_at: float | None = None


@dataclass
class Event:
    """A CloudEvents-shaped record (specversion 1.0)."""

    type: str
    data: dict[str, Any]
    source: str = "progressive"
    subject: str | None = None
    execution_id: str | None = None
    id: str = field(default_factory=new_id)
    time: float = field(default_factory=now)
    seq: int | None = None

    def cloudevent(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        return {
            "specversion": "1.0",
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "subject": self.subject,
            "time": datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds"),
            "datacontenttype": "application/json",
            "data": self.data,
            "seq": self.seq,
        }


@dataclass
class WorkItem:
    id: str
    kind: str
    payload: dict[str, Any]
    available_at: float
    attempts: int = 0
    leased_by: str | None = None
    lease_until: float | None = None


MESSAGE_STATUSES = ("queued", "delivering", "delivered", "failed")


@dataclass
class Message:
    """One agent message: a direct message, or one recipient's copy of a channel broadcast.

    ``status`` moves ``queued`` -> ``delivering`` (claimed by one process) -> ``delivered``, back to
    ``queued`` after a retryable failure, or to ``failed``. While ``delivering``, ``delivered_at``
    holds when the claim lapses (a process that died mid-delivery gives the message back then).
    """

    id: str
    sender: str
    recipient: str
    body: Any
    channel: str | None = None
    status: str = "queued"
    attempts: int = 0
    created_at: float = field(default_factory=now)
    delivered_at: float | None = None
    error: str | None = None
    reply: Any = None

    def as_dict(self) -> dict[str, Any]:
        """The message as the CLI and events show it (``from``/``to``, not sender/recipient)."""
        return {"id": self.id, "from": self.sender, "to": self.recipient, "channel": self.channel,
                "body": self.body, "status": self.status, "attempts": self.attempts,
                "created_at": self.created_at,
                "delivered_at": self.delivered_at if self.status == "delivered" else None,
                "error": self.error, "reply": self.reply}


class StateStore(Protocol):
    url: str

    async def close(self) -> None: ...

    # executions
    async def create_execution(self, execution: Execution, events: list[Event] | None = None, *,
                               work: tuple[str, dict[str, Any]] | None = None) -> str | None:
        """Record a new run, with its events; ``work`` (kind, payload): also put an item on the work queue,
        available now, in the same transaction (a queued run is never seen without its item), and return
        the item's id (None without ``work``)."""
        ...

    async def get_execution(self, execution_id: str) -> Execution | None: ...
    async def find_execution(self, prefix: str) -> list[Execution]: ...
    async def list_executions(
        self, *, workflow: str | None = None, statuses: list[str] | None = None, limit: int = 50
    ) -> list[Execution]: ...
    async def update_execution(
        self, execution_id: str, events: list[Event] | None = None, *, finish_work: str | None = None,
        **fields: Any
    ) -> None:
        """Change fields of a run, with its events; ``finish_work``: delete that work-queue item in the same
        transaction (a run's item, with the run's final status: the item goes exactly when the run ends)."""
        ...

    async def cancel_requested(self, execution_id: str) -> bool:
        """Cheap check between steps: has someone asked this run to stop?"""
        ...

    async def claim_execution(self, execution_id: str, owner: str, lease_seconds: float,
                              events: list[Event] | None = None, **fields: Any) -> bool:
        """Take the run's lease if it is free or expired; False if another live process holds it. When it
        is taken, and only then, ``fields`` (not the lease's own: owner, lease_until, updated_at) are set
        and ``events`` written in the same transaction (a queued run starts as it is claimed)."""
        ...

    async def take_over_execution(self, execution_id: str, dead_owner: str, owner: str,
                                  lease_seconds: float, events: list[Event] | None = None, **fields: Any) -> bool:
        """Take the lease from an owner known to be dead (its process is gone); False if it changed hands.
        ``fields`` and ``events`` as for :meth:`claim_execution`."""
        ...

    # steps
    async def load_steps(self, execution_id: str) -> dict[str, StepRecord]: ...
    async def completed_steps(self, execution_ids: list[str]) -> dict[str, set[str]]:
        """The keys of the completed steps of each of these runs (one read for many: progress bars)."""
        ...
    async def save_step(self, record: StepRecord, events: list[Event] | None = None) -> None: ...
    async def delete_steps(self, execution_id: str, keys: list[str]) -> None: ...

    # events
    async def append_events(self, events: list[Event]) -> None: ...
    async def list_events(
        self, *, after_seq: int = 0, execution_id: str | None = None, type_prefix: str | None = None,
        limit: int = 100,
    ) -> list[Event]: ...

    # work queue
    async def enqueue(self, kind: str, payload: dict[str, Any], available_at: float | None = None) -> str: ...
    async def claim_work(self, worker: str, lease_seconds: float) -> WorkItem | None: ...
    async def claim_work_batch(self, worker: str, lease_seconds: float, limit: int) -> list[WorkItem]:
        """Up to ``limit`` items claimed at once, in one transaction, oldest available first, each as
        :meth:`claim_work` would claim it (leased to ``worker``, one more attempt)."""
        ...

    async def finish_work(self, item_id: str) -> None: ...
    async def queue_depth(self) -> int: ...
    async def list_work(self, *, limit: int = 1000) -> list[WorkItem]:
        """The queue, soonest available first, with each item's lease (who holds it, until when)."""
        ...

    async def extend_work(self, item_id: str, worker: str, lease_seconds: float) -> bool:
        """Renew ``worker``'s lease on an item it claimed; False if the item is gone or another worker has it."""
        ...

    async def release_work(self, item_id: str, worker: str, available_at: float | None = None) -> bool:
        """Give back an item leased by ``worker`` (itself, or a worker known to be dead), claimable again
        from ``available_at`` (default: as before); False if ``worker`` does not hold it."""
        ...

    # agents (the MCA): metrics merged from every process, heartbeats, instance breakers, incidents
    async def merge_agent_metrics(self, deltas: list[dict[str, Any]],
                                  in_flight: list[tuple[str, str, str, int]]) -> None: ...
    async def agent_metrics(self, *, fresh_within: float = 300.0) -> list[dict[str, Any]]: ...
    async def record_heartbeat(self, agent: str, instance: str, ok: bool, detail: str | None = None) -> None: ...
    async def heartbeats(self) -> list[dict[str, Any]]: ...
    async def save_breaker(self, name: str, state: str, failures: int, successes: int, opened_at: float | None,
                           last_error: str | None, events: list[Event] | None = None, *,
                           expected: float | bool | None = True) -> float | None:
        """Write a breaker's row with its events; returns the row's new ``updated_at``. Given ``expected``
        (the ``updated_at`` last seen, None: no row), a row changed since is left alone (compare-and-set)
        and None is returned; the events are written either way."""
        ...
    async def breakers(self, prefix: str = "") -> list[dict[str, Any]]: ...
    async def load_incidents(self) -> dict[str, dict[str, Any]]: ...
    async def save_incidents(self, records: list[dict[str, Any]], events: list[Event] | None = None) -> None: ...

    # integrations: request metrics merged from every process (breakers share the table above)
    async def merge_integration_metrics(self, deltas: list[dict[str, Any]]) -> None: ...
    async def integration_metrics(self) -> list[dict[str, Any]]: ...

    async def counts(self) -> dict[str, Any]:
        """Executions by workflow and status, steps by type and status, work-queue depth (for metrics)."""
        ...

    async def execution_counts(self) -> dict[str, int]:
        """Executions by status (what `counts` has, without the scan of every step)."""
        ...

    # --- health history (progressive_cli/health) ------------------------------------------------------------
    async def save_health(self, results: list[dict[str, Any]], before: float | None = None) -> None: ...
    async def health_history(self, since: float, names: list[str] | None = None) -> list[dict[str, Any]]: ...
    async def latest_health(self) -> list[dict[str, Any]]: ...
    async def load_alerts(self) -> dict[str, dict[str, Any]]: ...
    async def save_alerts(self, rows: list[dict[str, Any]], events: list[Event] | None = None) -> None:
        """Alert states, with the events of what they fired or resolved, in one transaction."""
        ...

    # --- operator controls and daemons (progressive_cli/controls.py, progressive_cli/daemon.py) -------------
    async def add_control(self, kind: str, target: str, payload: dict[str, Any], requested_by: str,
                          events: list[Event] | None = None) -> str: ...
    async def claim_controls(self, applier: str, *, ids: list[str] | None = None, kinds: list[str] | None = None,
                             stale_after: float = 60.0, limit: int = 100) -> list[dict[str, Any]]: ...
    async def finish_control(self, control_id: str, applier: str, *, result: Any = None, error: str | None = None,
                             events: list[Event] | None = None) -> bool: ...
    async def controls(self, *, ids: list[str] | None = None, statuses: list[str] | None = None,
                       limit: int = 100) -> list[dict[str, Any]]: ...
    async def save_daemon(self, daemon_id: str, host: str, pid: int, started_at: float, info: dict[str, Any], *,
                          stopped: bool = False) -> None: ...
    async def daemons(self) -> list[dict[str, Any]]: ...

    # --- the event bus (progressive_cli/events/bus.py) -------------------------------------------------------
    async def publish(self, events: list[Event]) -> int:
        """Append events in one transaction; returns the newest ``seq``."""
        ...

    async def get_events(self, seqs: list[int]) -> dict[int, Event]: ...
    async def event_stats(self) -> tuple[int, int]:
        """(events kept, newest ``seq``)."""
        ...
    async def prune_events(self, before: float) -> int:
        """Retention: delete events older than ``before`` that no retry queue or dead letter needs."""
        ...
    async def bus_offset(self, subscription: str) -> int | None: ...
    async def bus_commit(self, subscription: str, *, offset: int | None, done: list[int],
                         retries: list[tuple[int, int, float, str]], dead: list[tuple[Event, int, str]],
                         counts: dict[str, int]) -> None:
        """A batch's outcome in one transaction: offset, retry rows done or scheduled, dead letters, counters."""
        ...

    async def due_retries(self, subscription: str, at: float, limit: int) -> list[tuple[int, int]]: ...
    async def bus_status(self) -> list[dict[str, Any]]: ...
    async def dead_letters(self, *, subscription: str | None = None, limit: int = 100,
                           letter_id: str | None = None) -> list[dict[str, Any]]: ...
    async def replay_dead_letters(self, ids: list[str] | None, at: float) -> int: ...
    async def purge_dead_letters(self, before: float | None, ids: list[str] | None = None) -> int: ...

    # --- messages (agent messaging, progressive_cli/mca/messaging.py) ---------------------------------
    async def insert_messages(self, messages: list[Message], events: list[Event] | None = None) -> None:
        """Several messages (a broadcast's copies) in one transaction, with their events."""
        ...

    async def get_message(self, message_id: str) -> Message | None: ...
    async def list_messages(
        self, *, agent: str | None = None, recipient: str | None = None, sender: str | None = None,
        channel: str | None = None, statuses: list[str] | None = None, limit: int = 50,
    ) -> list[Message]:
        """History, newest first. ``agent`` matches either end (an agent's history); the rest narrow it."""
        ...

    async def pending_messages(self, recipient: str | None = None, *, limit: int = 100) -> list[Message]:
        """Messages awaiting delivery, oldest first: queued, or delivering under a claim that has lapsed."""
        ...

    async def claim_message(self, message_id: str, claim_until: float) -> Message | None:
        """Take a pending message for delivery until ``claim_until``; None if it is not pending any more
        (another process claimed or finished it)."""
        ...

    async def mark_message_delivered(self, message_id: str, reply: Any, events: list[Event] | None = None) -> None:
        """A claimed message reached its recipient: one more attempt, its reply, no error."""
        ...

    async def mark_message_failed(self, message_id: str, error: str, *, requeue: bool,
                                  events: list[Event] | None = None) -> None:
        """A delivery attempt of a claimed message failed: one more attempt and the error; back to
        ``queued`` when ``requeue``, else ``failed`` for good."""
        ...

    async def release_message(self, message_id: str) -> None:
        """Give a claimed message back to the queue without counting an attempt (delivery was interrupted)."""
        ...

    async def prune_messages(self, before: float,
                             expired: Callable[[Message], list[Event]] | None = None) -> int:
        """Delete messages created before ``before``, whatever their status, except those being delivered
        under a live claim; ``expired(message)`` gives the events written, in the same transaction, for each
        deleted message that was still waiting for delivery. Returns how many were deleted."""
        ...
