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


class StateStore(Protocol):
    url: str

    async def close(self) -> None: ...

    # executions
    async def create_execution(self, execution: Execution, events: list[Event] | None = None) -> None: ...
    async def get_execution(self, execution_id: str) -> Execution | None: ...
    async def find_execution(self, prefix: str) -> list[Execution]: ...
    async def list_executions(
        self, *, workflow: str | None = None, statuses: list[str] | None = None, limit: int = 50
    ) -> list[Execution]: ...
    async def update_execution(
        self, execution_id: str, events: list[Event] | None = None, **fields: Any
    ) -> None: ...
    async def cancel_requested(self, execution_id: str) -> bool:
        """Cheap check between steps: has someone asked this run to stop?"""
        ...

    async def claim_execution(self, execution_id: str, owner: str, lease_seconds: float) -> bool:
        """Take the run's lease if it is free or expired; False if another live process holds it."""
        ...

    async def take_over_execution(self, execution_id: str, dead_owner: str, owner: str,
                                  lease_seconds: float) -> bool:
        """Take the lease from an owner known to be dead (its process is gone); False if it changed hands."""
        ...

    # steps
    async def load_steps(self, execution_id: str) -> dict[str, StepRecord]: ...
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
    async def finish_work(self, item_id: str) -> None: ...
    async def queue_depth(self) -> int: ...
