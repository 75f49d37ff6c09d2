"""Circuit breakers per integration: pybreaker, with its state kept in the state store.

pybreaker holds a breaker's state in a ``CircuitBreakerStorage``. :class:`StoreStorage` keeps it in
memory (a rejection while open costs a few microseconds and touches no disk) and the breaker
writes it to the store's ``breakers`` table as ``integration:<id>`` whenever it changes, together
with a ``breaker.state`` event for each transition. Every process that calls the integration, and
the CLI and dashboard that only look, share that row:

- :meth:`IntegrationBreaker.sync` re-reads the row at most once a second (before a call), so an
  operator's ``progressive breakers reset|open`` or another process's trip takes effect here too;
- a process that starts loads the row, so an open breaker stays open across runs.

pybreaker opens after ``fail_max`` consecutive counted failures, rejects calls until
``reset_timeout`` has passed, then lets calls through half-open and closes after
``success_threshold`` successes (a failure re-opens it). Which failures count is the
integration's ``circuit_breaker.count``; errors that do not count (a 404, a cancelled call) are,
for pybreaker, successes: the server answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pybreaker

from progressive_cli.config.secrets import REDACTOR
from progressive_cli.errors import StepError, one_line
from progressive_cli.integrations import FOREVER, breaker_name
from progressive_cli.store.base import Event, StateStore

SYNC_EVERY = 1.0
"""Seconds between re-reads of a breaker's row in the store."""


def _stamp(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class StoreStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker state in memory, marked dirty when it changes so the breaker can persist it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._state: str = pybreaker.STATE_CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at: datetime | None = None
        self.dirty = False

    def load(self, state: str, failures: int, successes: int, opened_at: float | None) -> None:
        self._state, self._failures, self._successes = state, failures, successes
        self._opened_at = _stamp(opened_at)
        self.dirty = False

    def snapshot(self) -> tuple[str, int, int, float | None]:
        opened = self._opened_at.timestamp() if self._opened_at else None
        return self._state, self._failures, self._successes, opened

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        if state != self._state:
            self._state, self.dirty = state, True

    def increment_counter(self) -> None:
        self._failures += 1
        self.dirty = True

    def reset_counter(self) -> None:
        if self._failures:
            self._failures, self.dirty = 0, True

    def increment_success_counter(self) -> None:
        self._successes += 1
        self.dirty = True

    def reset_success_counter(self) -> None:
        if self._successes:
            self._successes, self.dirty = 0, True

    @property
    def counter(self) -> int:
        return self._failures

    @property
    def success_counter(self) -> int:
        return self._successes

    @property
    def opened_at(self) -> datetime | None:
        return self._opened_at

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self._opened_at, self.dirty = value, True


class IntegrationBreaker(pybreaker.CircuitBreakerListener):
    """One integration's pybreaker, persisted to the store, with its events and counters."""

    def __init__(self, integration: str, config: Any, store: StateStore | None,
                 counts: Callable[[BaseException], bool], on_open: Callable[[], None] = lambda: None) -> None:
        self.integration = integration
        self.name = breaker_name(integration)
        self.store = store
        self.storage = StoreStorage(self.name)
        self.cb = pybreaker.CircuitBreaker(
            fail_max=config.fail_max, reset_timeout=float(config.reset_timeout),
            success_threshold=config.success_threshold,
            # pybreaker counts every exception raised in `calling()`; these do not count (and so reset
            # the failure streak, as a success does). A cancelled call is not the server's fault.
            exclude=[lambda exc: not isinstance(exc, Exception) or not counts(exc)],
            listeners=[self], state_storage=self.storage, name=self.name,
            throw_new_error_on_trip=False,  # the call that trips it fails with its own error
        )
        self.last_error: str | None = None
        self.trial = False
        """A half-open trial call is in flight in this process: other calls are rejected until it ends
        (pybreaker lets every caller through while half-open)."""
        self.events: list[Event] = []
        self.on_open = on_open
        """Called on every transition to open (the hub counts them)."""
        self._synced = float("-inf")
        self._seen: float | None = None
        """updated_at of the row as this process last wrote or read it."""

    # --- pybreaker listener ------------------------------------------------------------------------
    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        old = old_state.name if old_state is not None else None
        if old == new_state.name:
            return
        if new_state.name == pybreaker.STATE_OPEN:
            self.on_open()
        self.events.append(Event("breaker.state", {
            "breaker": self.name, "integration": self.integration, "state": new_state.name, "previous": old,
            "failures": self.storage.counter, "last_error": self.last_error}, subject=self.name))

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        # masked here, once: rejections quote it on every call while the breaker is open
        text = f"{exc.kind}: {exc.message}" if isinstance(exc, StepError) else type(exc).__name__
        self.last_error = one_line(REDACTOR.redact(text))

    # --- state ---------------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self.storage.state

    def blocked_for(self, now: float | None = None) -> float | None:
        """Seconds until a call may go through, or None if one may now (closed, half-open, or open with
        its reset timeout passed: the next call is the trial)."""
        if self.storage.state != pybreaker.STATE_OPEN:
            return None
        opened = self.storage.opened_at
        if opened is None:
            return None
        left = opened.timestamp() + self.cb.reset_timeout - (time.time() if now is None else now)
        return left if left > 0 else None

    def snapshot(self) -> tuple[tuple[str, int, int, float | None], int, bool]:
        return self.storage.snapshot(), len(self.events), self.storage.dirty

    def restore(self, snap: tuple[tuple[str, int, int, float | None], int, bool]) -> None:
        """Undo what one call did to the breaker: a call cancelled before the server answered (Ctrl-C, a
        step timeout) says nothing about the server, but pybreaker counts it as a success (it would close
        a half-open breaker and reset a failure streak)."""
        (state, failures, successes, opened_at), events, dirty = snap
        self.storage.load(state, failures, successes, opened_at)
        self.storage.dirty = dirty
        del self.events[events:]
        self.cb._state = self.cb._create_new_state(state)

    def admit(self) -> str | None:
        """Whether a call may go through now: ``"call"`` (closed), ``"trial"`` (it becomes this process's
        one half-open trial; call ``done()`` when it ends), or None (rejected)."""
        if self.storage.state == pybreaker.STATE_CLOSED:
            return "call"
        if self.trial or self.blocked_for() is not None:
            return None
        self.trial = True
        return "trial"

    def done(self) -> None:
        self.trial = False

    def rejection(self, left: float | None) -> StepError:
        if left is None:
            last = f"; last error: {self.last_error}" if self.last_error else ""
            return StepError("CIRCUIT_BREAKER_OPEN", f"integration '{self.integration}': circuit breaker half-open, "
                             f"its trial call is in flight{last}",
                             {"integration": self.integration, "breaker": self.name})
        held = left > FOREVER / 2
        when = "held open by an operator until reset" if held else f"half-open in {left:.1f}s"
        last = f"; last error: {self.last_error}" if self.last_error else ""
        details: dict[str, object] = {"integration": self.integration, "breaker": self.name}
        if not held:
            details["retry_after"] = round(left, 3)
        return StepError("CIRCUIT_BREAKER_OPEN", f"integration '{self.integration}': circuit breaker open "
                                                 f"({when}){last}", details)

    # --- store ---------------------------------------------------------------------------------------
    async def load(self) -> None:
        """Adopt the stored state (at start, and when another process or an operator changed it)."""
        if self.store is None:
            return
        rows = [r for r in await self.store.breakers(self.name) if r["name"] == self.name]
        self._synced = time.monotonic()
        if not rows or rows[0]["updated_at"] == self._seen:
            return
        row = rows[0]
        self._seen = row["updated_at"]
        self.storage.load(row["state"], row["failures"], row["successes"], row["opened_at"])
        self.last_error = row["last_error"] or self.last_error
        # the cached pybreaker state object follows without notifying: this change happened elsewhere
        self.cb._state = self.cb._create_new_state(row["state"])

    async def sync(self) -> None:
        if self.store is not None and time.monotonic() - self._synced >= SYNC_EVERY:
            await self.flush()
            await self.load()

    async def flush(self) -> None:
        """Write this process's changes, unless the row changed since it was last seen here (an operator's
        reset, another process's trip): then that state is adopted instead (compare-and-set). The events
        of what happened here are written either way."""
        if self.store is None or not (self.storage.dirty or self.events):
            return
        events, self.events = self.events, []
        self.storage.dirty = False
        state, failures, successes, opened_at = self.storage.snapshot()
        written = await self.store.save_breaker(self.name, state, failures, successes, opened_at, self.last_error,
                                                events, expected=self._seen)
        if written is None:
            await self.load()
        else:
            self._seen = written


async def operator_set(store: StateStore, name: str, state: str, *, hold: float | None = None,
                       reset_timeout: float = 0.0) -> dict[str, Any]:
    """An operator's reset (``closed``) or force-open of breaker ``name``, written to the store where every
    process picks it up within a second. Force-open lasts ``hold`` seconds (None: until reset)."""
    now = time.time()
    previous = {r["name"]: r for r in await store.breakers(name)}.get(name)
    if state == pybreaker.STATE_CLOSED:
        opened_at, note = None, None
    else:
        opened_at = now + (FOREVER if hold is None else hold) - reset_timeout
        note = "forced open by an operator" + ("" if hold is None else f" for {hold:g}s")
    event = Event("breaker.state", {"breaker": name, "state": state,
                                    "previous": previous["state"] if previous else pybreaker.STATE_CLOSED,
                                    "by": "operator", "failures": 0, "last_error": note}, subject=name)
    await store.save_breaker(name, state, 0, 0, opened_at, note, [event])
    return {"breaker": name, "state": state, "previous": event.data["previous"], "opened_at": opened_at}


__all__ = ["IntegrationBreaker", "StoreStorage", "operator_set"]
