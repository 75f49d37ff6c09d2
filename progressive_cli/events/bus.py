"""The event bus: durable publish and subscribe over the state store's ``events`` table.

Every event is appended to ``events`` (CloudEvents-shaped, ordered by ``seq``). A *subscription* is a
named handler with type patterns (``workflow.*``, fnmatch-style) and an optional filter expression
over ``event`` (``event.data.status == 'failed'``). Each subscription keeps its own position
(``bus_offsets``), so a new subscription starts at the newest event and a restarted process goes on
where it stopped.

Delivery is at-least-once, and nothing is lost: :meth:`Bus.pump` takes a batch of events after the
subscription's position, runs the handler on each that matches, then commits, in one transaction,
the new position together with what failed — a row in the **retry queue** (``bus_retries``, due after
exponential backoff with full jitter) or, once ``max_attempts`` is spent or the error is not worth
retrying, a **dead letter** (``dead_letters``, with the error and the attempt count). A process killed
before that commit runs the batch again. Due retries are run the same way, before new events.

Retryable failures are the transient kinds (NETWORK_ERROR, TIMEOUT, RATE_LIMITED,
CIRCUIT_BREAKER_OPEN, a DATABASE_ERROR that lost its connection) and any exception that is not a
:class:`StepError`; other step errors (bad input, a 4xx) go to the DLQ at once. ``progressive dlq
replay`` moves dead letters back to the retry queue with a fresh attempt count.
"""

from __future__ import annotations

import fnmatch
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from progressive_cli.config.common import Backoff
from progressive_cli.config.secrets import REDACTOR
from progressive_cli.errors import StepError, one_line
from progressive_cli.store.base import Event, StateStore

Handler = Callable[[Event], Awaitable[Any]]
TRANSIENT = frozenset({"NETWORK_ERROR", "TIMEOUT", "RATE_LIMITED", "CIRCUIT_BREAKER_OPEN"})
BATCH = 500


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, StepError):
        return exc.kind in TRANSIENT or (exc.kind == "DATABASE_ERROR" and "connection" in exc.message.lower())
    return True


def _pattern(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@dataclass
class Subscription:
    name: str
    patterns: tuple[str, ...]
    handler: Handler
    filter: Callable[[dict[str, Any]], Any] | None = None
    """Compiled expression over ``{"event": <cloudevent>}``; the handler runs only where it is true."""
    max_attempts: int = 5
    from_start: bool = False
    """A subscription seen for the first time starts at the oldest event kept, not the newest."""
    backoff: Backoff = field(default_factory=lambda: Backoff(initial_delay=1.0, max_delay=300.0))
    matcher: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        self.matcher = _pattern(self.patterns)

    def matches(self, event: Event) -> bool:
        if not self.matcher.fullmatch(event.type):
            return False
        return self.filter is None or bool(self.filter({"event": event.cloudevent()}))


class Bus:
    """The subscriptions of one process, pumped against one store."""

    def __init__(self, store: StateStore, *, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.clock = clock
        self.rng = rng or random.Random()
        self.subscriptions: dict[str, Subscription] = {}

    def subscribe(self, subscription: Subscription) -> None:
        self.subscriptions[subscription.name] = subscription

    async def publish(self, type_: str, data: dict[str, Any], *, source: str = "progressive",
                      subject: str | None = None) -> Event:
        event = Event(type_, data, source=source, subject=subject)
        event.seq = await self.store.publish([event])
        return event

    async def pump(self, name: str, *, limit: int = BATCH) -> int:
        """One round for subscription ``name``: due retries, then up to ``limit`` new events. Returns how
        many events it looked at (0: nothing to do)."""
        sub = self.subscriptions[name]
        seen = await self._retries(sub, limit)
        offset = await self.store.bus_offset(name)
        if offset is None:  # a new subscription starts at the newest event (or the oldest kept)
            start = 0 if sub.from_start else await self.store.publish([])
            await self.store.bus_commit(name, offset=start, done=[], retries=[], dead=[], counts={})
            if not sub.from_start:
                return seen
            offset = 0
        events = await self.store.list_events(after_seq=offset, limit=limit)
        if not events:
            return seen
        retries: list[tuple[int, int, float, str]] = []
        dead: list[tuple[Event, int, str]] = []
        counts = {"processed": 0, "failed": 0, "retried": 0, "dead_lettered": 0, "skipped": 0}
        for event in events:
            try:
                if not sub.matches(event):
                    counts["skipped"] += 1
                    continue
            except Exception as exc:  # a filter that cannot be evaluated on this event: dead-letter it
                self._failed(sub, event, 1, exc, retries, dead, counts, force_dead=True)
                continue
            try:
                await sub.handler(event)
            except Exception as exc:
                self._failed(sub, event, 1, exc, retries, dead, counts)
            else:
                counts["processed"] += 1
        await self.store.bus_commit(name, offset=int(events[-1].seq or offset), done=[], retries=retries,
                                    dead=dead, counts=counts)
        return seen + len(events)

    async def _retries(self, sub: Subscription, limit: int) -> int:
        due = await self.store.due_retries(sub.name, self.clock(), limit)
        if not due:
            return 0
        events = await self.store.get_events([seq for seq, _ in due])
        done: list[int] = []
        retries: list[tuple[int, int, float, str]] = []
        dead: list[tuple[Event, int, str]] = []
        counts = {"processed": 0, "failed": 0, "retried": 0, "dead_lettered": 0}
        for seq, attempts in due:
            event = events.get(seq)
            if event is None:  # pruned by retention while waiting: nothing left to deliver
                done.append(seq)
                continue
            try:
                await sub.handler(event)
            except Exception as exc:
                self._failed(sub, event, attempts + 1, exc, retries, dead, counts)
            else:
                done.append(seq)
                counts["processed"] += 1
        await self.store.bus_commit(sub.name, offset=None, done=done, retries=retries, dead=dead, counts=counts)
        return len(due)

    def _failed(self, sub: Subscription, event: Event, attempt: int, exc: BaseException,
                retries: list[tuple[int, int, float, str]], dead: list[tuple[Event, int, str]],
                counts: dict[str, int], *, force_dead: bool = False) -> None:
        error = one_line(REDACTOR.redact(f"{exc.kind}: {exc.message}" if isinstance(exc, StepError)
                                         else f"{type(exc).__name__}: {exc}"))[:1000]
        counts["failed"] += 1
        if force_dead or attempt >= sub.max_attempts or not retryable(exc):
            dead.append((event, attempt, error))
            counts["dead_lettered"] += 1
        else:
            assert event.seq is not None
            retries.append((event.seq, attempt, self.clock() + sub.backoff.delay(attempt, self.rng), error))
            counts["retried"] += 1


__all__ = ["BATCH", "Bus", "Subscription", "retryable"]
