"""The MCA's agent runtime: every agent call of the engine and the CLI goes through here.

A call names an agent or a capability. The runtime

1. picks an instance with the router (:mod:`progressive_cli.mca.router`), skipping instances whose
   breaker is open, whose latest heartbeat probe failed, or which are at their ``concurrency``
   limit (it waits for a free slot, within the call's timeout, when every instance is merely busy);
2. calls the agent in its kind (``builtin`` and ``python`` in process, ``command`` as a subprocess,
   ``http`` as a POST), within the call's timeout;
3. checks the answer (``output``, optional ``confidence`` in 0..1 and ``metadata`` mapping);
4. records the outcome: metrics per instance, the instance's breaker, and a heartbeat on success.

Metrics, in-flight counts, heartbeats and breaker changes are kept in memory and flushed to the
state store about once a second and on :meth:`AgentRuntime.aclose`: a routed call costs a few
microseconds, not a database write.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from progressive_cli.config.secrets import REDACTOR
from progressive_cli.errors import StepError, one_line
from progressive_cli.mca.metrics import Metrics
from progressive_cli.mca.router import Instance, NoInstanceAvailable, Router, capability_providers
from progressive_cli.store.base import Event

if TYPE_CHECKING:  # the engine is not loaded by callers that only probe agents (`progressive health`)
    from progressive_cli.engine.executor import AgentRequest

FLUSH_EVERY = 1.0
"""Seconds between flushes of metrics and heartbeats to the store."""
PROBES_REFRESH = 2.0
"""Seconds between reloads of the heartbeat probes (written by `agents status --check` and the daemon)."""
IN_PROCESS = frozenset({"builtin", "python"})
STATUSES = ("online", "degraded", "offline")


def counts_against_instance(error: StepError) -> bool:
    """Failures that say the instance is unwell (they trip its breaker); a bad request does not."""
    if error.kind in ("NETWORK_ERROR", "TIMEOUT"):
        return True
    details = error.details or {}
    status = details.get("status")
    return (isinstance(status, int) and status >= 500) or "exit_code" in details \
        or details.get("reason") in ("malformed_response", "cannot_start", "response_too_large")


@dataclass
class InstanceBreaker:
    """closed -> (fail_max failures in a row) -> open -> (reset_timeout) -> half_open -> one trial call."""

    fail_max: int
    reset_timeout: float
    state: str = "closed"
    failures: int = 0
    successes: int = 0
    opened_at: float | None = None
    last_error: str | None = None
    trial: bool = False
    changed: bool = False

    def blocked(self, now: float) -> str | None:
        if self.state == "open":
            if now - (self.opened_at or now) < self.reset_timeout:
                left = self.reset_timeout - (now - (self.opened_at or now))
                return f"circuit breaker open after {self.failures} failures (half-open in {left:.0f}s)"
            self._set("half_open")
        if self.state == "half_open" and self.trial:
            return "circuit breaker half-open, its trial call is in flight"
        return None

    def started(self) -> None:
        if self.state == "half_open":
            self.trial = True

    def success(self) -> None:
        self.trial = False
        self.successes += 1
        if self.state != "closed" or self.failures:
            self.failures = 0
            self._set("closed")

    def failure(self, error: str, now: float) -> None:
        self.trial = False
        self.failures += 1
        self.last_error = error
        self.changed = True
        if self.state == "half_open" or self.failures >= self.fail_max:
            self.opened_at = now
            self._set("open")

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
        self.changed = True


def status_of(agent: Any, rows: Iterable[dict[str, Any]], now: float) -> tuple[str, float | None]:
    """An agent's status by the age of its newest heartbeat: online, degraded or offline; and the age."""
    newest = max((r["at"] for r in rows if r.get("at")), default=None)
    if newest is None:
        return "offline", None
    age = max(0.0, now - newest)
    if age <= agent.heartbeat.degraded_after:
        return "online", age
    if age <= agent.heartbeat.offline_after:
        return "degraded", age
    return "offline", age


class AgentRuntime:
    """Routes and calls agents; an :data:`~progressive_cli.engine.executor.AgentCall` for the engine."""

    def __init__(self, agents: list[Any], root: Any = None, *, store: Any = None, owner: str | None = None) -> None:
        self.router = Router(agents, health=self._problem)
        self.root = str(root) if root is not None else None
        self.store = store
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = Metrics()
        self._agents = {p.agent.id: p.agent for p in self.router.pools.values()}
        self._instances: dict[tuple[str, str], Instance] = {
            (i.agent, i.name): i for p in self.router.pools.values() for i in p.instances}
        self._breakers = {key: InstanceBreaker(self._agents[key[0]].breaker.fail_max,
                                               float(self._agents[key[0]].breaker.reset_timeout))
                          for key in self._instances}
        self._callables: dict[str, Any] = {}
        self._probes: dict[tuple[str, str], dict[str, Any]] = {}
        self._probes_at = float("-inf")
        self._flushed_at = time.monotonic()
        self._alive: set[tuple[str, str]] = set()
        self._touched: set[tuple[str, str]] = set()

    # --- calls -----------------------------------------------------------------------------------------
    async def __call__(self, request: AgentRequest) -> Any:
        agent = self.router.agent_for(request.agent, request.capability)
        fn = self._callable(agent)
        timeout = request.timeout or agent.timeout
        if self.store is not None and time.monotonic() - self._probes_at > PROBES_REFRESH:
            await self._load_probes()
        instance = await self._pick(agent, timeout)
        key = (agent.id, instance.name)
        breaker = self._breakers[key]
        breaker.started()
        instance.in_flight += 1
        self._touched.add(key)
        started = time.perf_counter()
        context = {**request.context, "idempotency_key": request.idempotency_key}
        try:
            async with asyncio.timeout(timeout):
                raw = await fn(request.method, request.params, context, instance=instance.name)
            answer = _envelope(agent.id, raw)
        except TimeoutError:
            error = StepError("TIMEOUT", f"agent '{agent.id}' did not answer within {timeout:g}s")
            self._finished(key, started, error)
            raise error from None
        except StepError as exc:
            self._finished(key, started, exc)
            raise
        except asyncio.CancelledError:
            breaker.trial = False
            raise
        finally:
            instance.in_flight -= 1
        self._finished(key, started, None)
        if self.store is not None and time.monotonic() - self._flushed_at > FLUSH_EVERY:
            await self.flush()
        return answer if request.envelope else answer["output"]

    def _finished(self, key: tuple[str, str], started: float, error: StepError | None) -> None:
        now = time.time()
        latency_ms = (time.perf_counter() - started) * 1000
        breaker = self._breakers[key]
        if error is None:
            self.metrics.record(key[0], key[1], True, latency_ms, now)
            breaker.success()
            self._alive.add(key)
            return
        message = one_line(REDACTOR.redact(f"{error.kind}: {error.message}"))
        self.metrics.record(key[0], key[1], False, latency_ms, now, message)
        if counts_against_instance(error):
            breaker.failure(message, now)
        else:
            breaker.success()  # the instance answered; the request was at fault

    async def _pick(self, agent: Any, timeout: float) -> Instance:
        """An instance for the call; when every usable one is at its concurrency limit, wait for a free
        slot (the wait counts against the call's timeout, which then starts over: a simplification)."""
        deadline = None
        while True:
            try:
                return self.router.pick(agent.id)
            except NoInstanceAvailable:
                pool = self.router.pools[agent.id].instances
                if not any(i.in_flight >= agent.concurrency for i in pool):
                    raise
                now = time.monotonic()
                deadline = deadline or now + timeout
                if now >= deadline:
                    raise StepError("TIMEOUT", f"agent '{agent.id}': every usable instance stayed at its "
                                    f"concurrency limit ({agent.concurrency} calls in flight)") from None
                await asyncio.sleep(0.005)

    def _problem(self, agent_id: str, name: str) -> str | None:
        """Why an instance cannot take a call now, or None (the router's health check)."""
        key = (agent_id, name)
        agent = self._agents[agent_id]
        breaker = self._breakers[key]
        if breaker.state != "closed":
            blocked = breaker.blocked(time.time())
            if blocked:
                return blocked
        probe = self._probes.get(key)
        if probe and probe["status"] == "failed" and agent.kind not in IN_PROCESS:
            age = time.time() - (probe["checked_at"] or 0)
            if age <= agent.heartbeat.offline_after:
                return f"its heartbeat failed {age:.0f}s ago ({probe['detail']})"
        if self._instances[key].in_flight >= agent.concurrency:
            return f"at its concurrency limit ({agent.concurrency} calls in flight)"
        return None

    def _callable(self, agent: Any) -> Any:
        fn = self._callables.get(agent.id)
        if fn is not None:
            return fn
        if agent.kind in IN_PROCESS:
            from progressive_cli.agents.local import InProcessAgent

            table = {p.agent.id: list(p.agent.capabilities) for p in self.router.pools.values()}
            fn = InProcessAgent(agent, self.root, {"agents": table})
            if agent.kind == "builtin" and agent.implementation == "ema" and self.store is not None:
                fn = _WithIncidents(fn, self.store)
        elif agent.kind == "command":
            from progressive_cli.agents.remote import CommandAgent

            fn = CommandAgent(agent, self.root)
        else:
            from progressive_cli.agents.remote import HttpAgent

            fn = HttpAgent(agent)
        self._callables[agent.id] = fn
        return fn

    def capability_providers(self) -> dict[str, list[str]]:
        """capability -> the enabled agents that offer it, in declaration order (for consensus steps)."""
        return capability_providers(list(self._agents.values()))

    # --- status and heartbeats -------------------------------------------------------------------------
    async def status(self, agent_id: str) -> str:
        """Whether this process can reach the agent now: in-process kinds are online wherever they are
        loaded; remote ones by their heartbeats (``offline`` if none yet)."""
        agent = self._agents.get(agent_id)
        if agent is None:
            return "offline"
        if agent.kind in IN_PROCESS:
            return "online"
        if self.store is None:
            return "online"
        await self._load_probes()
        rows = [p for (a, _), p in self._probes.items() if a == agent_id]
        if rows and all(r["status"] == "failed" for r in rows):
            return "offline"
        return status_of(agent, rows, time.time())[0]

    async def check(self, agent_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Probe instances now (http: GET its health path; command: start it with method ``health``;
        in-process: load it) and record each result as a heartbeat."""
        wanted = list(agent_ids) if agent_ids is not None else list(self._agents)
        results = []
        for agent_id in wanted:
            agent = self._agents[agent_id]
            for instance in self.router.pools[agent_id].instances:
                started = time.perf_counter()
                ok, detail = await self._probe(agent, instance.name)
                results.append({"agent": agent_id, "instance": instance.name, "ok": ok, "detail": detail,
                                "response_ms": round((time.perf_counter() - started) * 1000, 2)})
                if self.store is not None:
                    await self.store.record_heartbeat(agent_id, instance.name, ok, detail)
        if self.store is not None:
            await self._load_probes()
        return results

    async def _probe(self, agent: Any, instance: str) -> tuple[bool, str]:
        try:
            fn = self._callable(agent)
        except StepError as exc:
            return False, exc.message
        if agent.kind == "command":
            try:
                async with asyncio.timeout(min(float(agent.timeout), 10.0)):
                    await fn("health", {}, {"source": "heartbeat"})
            except TimeoutError:
                return False, "no answer to a health request"
            except StepError as exc:
                if (exc.details or {}).get("reason") != "agent_error":
                    return False, exc.message  # it did not start, crashed or spoke nonsense
            return True, "answered a health request"
        ok, detail = await fn.health(instance)
        return bool(ok), str(detail)

    async def _load_probes(self) -> None:
        self._probes = {(r["agent"], r["instance"]): r for r in await self.store.heartbeats()}
        self._probes_at = time.monotonic()

    # --- persistence -----------------------------------------------------------------------------------
    async def flush(self) -> None:
        """Write metrics deltas, in-flight counts, heartbeats of instances that answered, and breaker
        changes (with a ``breaker.<state>`` event for each) to the store."""
        self._flushed_at = time.monotonic()
        if self.store is None:
            return
        deltas = [{"agent": a, "instance": i, "total": t.total, "success": t.success, "failure": t.failure,
                   "latency_sum_ms": t.latency_sum_ms, "buckets": t.buckets, "last_error": t.last_error,
                   "last_call_at": t.last_call_at} for (a, i), t in self.metrics.take().items()]
        in_flight = [(a, i, self.owner, self._instances[(a, i)].in_flight) for a, i in self._touched]
        self._touched = {k for k in self._touched if self._instances[k].in_flight}
        if deltas or in_flight:
            await self.store.merge_agent_metrics(deltas, in_flight)
        alive, self._alive = self._alive, set()
        for agent_id, name in alive:
            await self.store.record_heartbeat(agent_id, name, True, "answered a call")
        for (agent_id, name), breaker in self._breakers.items():
            if not breaker.changed:
                continue
            breaker.changed = False
            event = Event("breaker.state", {"breaker": f"agent:{agent_id}@{name}", "state": breaker.state,
                                             "failures": breaker.failures, "last_error": breaker.last_error},
                          source="progressive/mca", subject=f"agent:{agent_id}@{name}")
            await self.store.save_breaker(f"agent:{agent_id}@{name}", breaker.state, breaker.failures,
                                          breaker.successes, breaker.opened_at, breaker.last_error, [event])

    async def aclose(self) -> None:
        await self.flush()
        for fn in self._callables.values():
            close = getattr(fn, "aclose", None)
            if close is not None:
                await close()


def _envelope(agent_id: str, raw: Any) -> dict[str, Any]:
    """``{"output", "confidence"?, "metadata"?}`` from any agent's answer; a malformed one is a typed error."""
    if not (isinstance(raw, dict) and "output" in raw):
        return {"output": raw}
    answer = {"output": raw["output"]}
    if raw.get("confidence") is not None:
        confidence = raw["confidence"]
        if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
            raise StepError("AGENT_ERROR", f"agent '{agent_id}' answered a confidence of {confidence!r}; "
                            "expected a number from 0 to 1", {"reason": "malformed_response"})
        answer["confidence"] = float(confidence)
    if raw.get("metadata") is not None:
        if not isinstance(raw["metadata"], dict):
            raise StepError("AGENT_ERROR", f"agent '{agent_id}' answered metadata that is not a mapping",
                            {"reason": "malformed_response"})
        answer["metadata"] = raw["metadata"]
    return answer


class _WithIncidents:
    """EMA with its incidents in the state store: loaded before a call, changed records saved after it
    (with an ``incident.opened|reopened|resolved`` event each, for the alert sinks)."""

    def __init__(self, inner: Any, store: Any) -> None:
        self.inner = inner
        self.store = store

    async def __call__(self, method: str, params: Any, context: dict[str, Any], *,
                       instance: str | None = None) -> Any:
        incidents = await self.store.load_incidents()
        before = dict(incidents)
        result = await self.inner(method, params, {**context, "incidents": incidents}, instance=instance)
        changed = [record for key, record in incidents.items() if before.get(key) != record]
        if changed:
            events = []
            for record in changed:
                old = before.get(record["id"])
                kind = "resolved" if record.get("status") == "resolved" else \
                    "reopened" if old is not None else "opened"
                events.append(Event(f"incident.{kind}", dict(record), source="progressive/ema",
                                    subject=record["id"], execution_id=context.get("execution_id")))
            await self.store.save_incidents(changed, events)
        return result

    async def health(self, instance: str | None = None) -> tuple[bool, str]:
        result: tuple[bool, str] = await self.inner.health(instance)
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()


def instance_report(agents: list[Any], heartbeats: list[dict[str, Any]], metrics: list[dict[str, Any]],
                    breakers: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """One row per configured instance: the agent's status by heartbeat age, the instance's last probe,
    its call metrics (from every process) and its breaker. What `agents status` and the dashboard's agent
    detail show."""
    from progressive_cli.mca.metrics import summarise
    from progressive_cli.mca.router import instances_of

    beats = {(h["agent"], h["instance"]): h for h in heartbeats}
    figures = {(m["agent"], m["instance"]): m for m in metrics}
    states = {b["name"]: b for b in breakers}
    rows = []
    for agent in agents:
        instances = instances_of(agent)
        status, age = status_of(agent, [beats[k] for k in ((agent.id, i.name) for i in instances) if k in beats], now)
        if not agent.enabled:
            status = "disabled"
        for instance in instances:
            key = (agent.id, instance.name)
            beat = beats.get(key, {})
            breaker = states.get(f"agent:{agent.id}@{instance.name}", {})
            summary = summarise(figures.get(key, {}))
            rows.append({
                "agent": agent.id, "instance": REDACTOR.redact(instance.name), "kind": agent.kind,
                "status": status, "heartbeat_age_s": None if age is None else round(age, 1),
                "probe": beat.get("status"), "probe_detail": beat.get("detail"),
                "probe_failures": beat.get("failures", 0),
                "breaker": breaker.get("state", "closed"),
                "capabilities": list(agent.capabilities),
                **summary,
            })
    return rows
