"""The durable workflow engine.

A run is a tree walk over the workflow's steps. Every step has a *key* (its path, with
``[i]`` for foreach iterations) and a record in the state store. Before a step starts, a
step with side effects commits a ``running`` record; when it ends, its result and its
events are committed in one transaction before the next step starts. Running the same
execution again (``resume``) walks the same tree and reuses every completed record, so
completed steps are not re-run and the run ends with the outputs an uninterrupted run
would have had. Decisions that must not change on replay (the branch a condition took,
the items of a foreach, the id of a child execution, a wait's wake-up time) are stored in
the step's ``running`` record.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from progressive_cli.config.workflows import STEP_ERROR_KINDS, RetryPolicy, WorkflowFile
from progressive_cli.engine.expressions import (
    ExpressionError,
    Template,
    compile_condition,
    compile_template,
    is_template,
)
from progressive_cli.engine.inputs import resolve_inputs
from progressive_cli.errors import InputError, StepError, UnavailableError
from progressive_cli.store.base import FINISHED, Event, Execution, StateStore, StepRecord, new_id
from progressive_cli.util import Periodic, is_iso_time

PURE_STEPS = frozenset({"transform"})  # no side effects and no children: no `running` record needed
LEASE_SECONDS = 60.0

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
AgentCall = Callable[["AgentRequest"], Awaitable[Any]]


@dataclass
class AgentRequest:
    """What an agent_call hands the agent runtime (the MCA, once it lands)."""

    agent: str | None
    capability: str | None
    method: str
    params: dict[str, Any]
    idempotency_key: str
    timeout: float | None
    context: dict[str, Any]
    envelope: bool = False
    """Return ``{"output", "confidence", "metadata"}`` rather than the bare output (consensus needs it)."""


class Cancelled(Exception):
    pass


class _Stop(Exception):
    """The run cannot go on in this process (a durable wait it must not sleep through)."""


@dataclass
class _Scope:
    """Expression context of a run or of one foreach iteration (steps and vars layer over the parent)."""

    ctx: dict[str, Any]
    prefix: str = ""

    def child(self, prefix: str, extra: Mapping[str, Any]) -> _Scope:
        ctx = dict(self.ctx)
        ctx.update(extra)
        ctx["steps"] = dict(self.ctx["steps"])
        ctx["vars"] = dict(self.ctx["vars"])
        return _Scope(ctx, prefix)


@dataclass
class _Run:
    execution: Execution
    workflow: WorkflowFile
    records: dict[str, StepRecord]
    scope: _Scope
    events: list[Event] = field(default_factory=list)
    lease_lost: bool = False
    queue_item: str | None = None
    """The work-queue item to delete with the final status (see :meth:`Engine.run`)."""


class Engine:
    """Runs workflows of one project against one state store."""

    def __init__(
        self,
        workflows: Mapping[str, WorkflowFile],
        store: StateStore,
        *,
        agent_call: AgentCall | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        wait_inline: bool = True,
        on_event: Callable[[Event], None] | None = None,
        owner: str | None = None,
        capability_providers: Mapping[str, list[str]] | None = None,
        integrations: Any = None,
    ) -> None:
        self.workflows = workflows
        self.capability_providers = dict(capability_providers or {})
        self.store = store
        self.agent_call = agent_call
        self.integrations = integrations
        """A :class:`progressive_cli.integrations.hub.Integrations` for api_call and database_operation."""
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()
        self.wait_inline = wait_inline
        self.on_event = on_event
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self._templates: dict[str, Template] = {}
        self._definitions: dict[str, tuple[dict[str, Any], WorkflowFile]] = {}

    # --- public ------------------------------------------------------------------------------------
    async def start(
        self, name: str, inputs: Mapping[str, Any], *, parent: tuple[str, str] | None = None,
        timeout: float | None = None, status: str = "running", queue: str | None = None,
    ) -> Execution:
        """Validate inputs and create the execution record (committed before anything runs). ``queue``: the
        kind of a work-queue item ``{"execution": ID}`` put on the queue with the record, in the same
        transaction (``run --detach``: a ``queued`` run and the item a worker runs it from)."""
        workflow = self.workflows[name]
        resolved = resolve_inputs(workflow.inputs, inputs, name)
        if workflow.concurrency is not None and status == "running" and parent is None:
            busy = await self.in_progress(name)
            if busy >= workflow.concurrency:
                raise UnavailableError(
                    f"workflow '{name}' already has {busy} run(s) in progress (concurrency: {workflow.concurrency}); "
                    "wait, or queue this one with --detach")
        started = self.clock()
        execution = Execution(
            id=new_id(), workflow=name, status=status, inputs=resolved,
            definition=workflow.model_dump(mode="json", by_alias=True),
            parent_id=parent[0] if parent else None, parent_step=parent[1] if parent else None,
            created_at=started, started_at=started if status == "running" else None, updated_at=started,
            deadline=started + (timeout or workflow.timeout),
        )
        event = self._event("workflow.started" if status == "running" else "workflow.queued", execution,
                            {"workflow": name, "inputs": resolved})
        if queue is None:
            await self.store.create_execution(execution, [event])
        else:
            await self.store.create_execution(execution, [event], work=(queue, {"execution": execution.id}))
        self._emitted([event])
        return execution

    async def in_progress(self, name: str, *, also: set[str] | frozenset[str] = frozenset()) -> int:
        """Runs of ``name`` that count against its concurrency: running with a live owner, or waiting;
        ``also``: ids of runs to count as well (ones the caller is starting), each once."""
        runs = await self.store.list_executions(workflow=name, statuses=["running", "waiting"], limit=10_000)
        now = self.clock()
        return len(also | {r.id for r in runs if r.status == "waiting" or (
            r.owner is not None and (r.lease_until or 0) > now and not _owner_is_dead(r.owner))})

    async def run(self, execution_id: str, *, queue_item: str | None = None,
                  execution: Execution | None = None) -> Execution:
        """Run (or resume) an execution until it finishes, or until a durable wait it may not sleep through.

        ``queue_item``: the work-queue item the run came from (the worker's). When the run finishes here,
        the item is deleted in the same transaction as the final status; when it is found finished (before,
        or by the process that took it over), the item is deleted before this returns. Otherwise it is left
        alone: the caller gives it back. ``execution``: the record as the caller has just read it from the
        store (it is not read again; the lease decides who runs it, as when it is read here)."""
        if execution is None or execution.id != execution_id:
            execution = await self.store.get_execution(execution_id)
        if execution is None:
            raise KeyError(execution_id)
        if execution.status in FINISHED:
            if queue_item is not None:
                await self.store.finish_work(queue_item)
            return execution
        return await self._run(execution, queue_item)

    async def _run(self, execution: Execution, queue_item: str | None) -> Execution:
        workflow = self._workflow(execution)
        # A run that is not `running` starts (again) now, in the transaction that claims it; a queued
        # one says so, as a run started directly does.
        start: dict[str, Any] = {}
        started = None
        if execution.status != "running":
            start = {"status": "running", "started_at": execution.started_at or self.clock()}
            if execution.status == "queued":
                started = [self._event("workflow.started", execution, {"workflow": execution.workflow,
                                                                        "inputs": execution.inputs})]
        if not await self.store.claim_execution(execution.id, self.owner, LEASE_SECONDS, started, **start):
            dead = execution.owner is not None and _owner_is_dead(execution.owner)
            if not (dead and await self.store.take_over_execution(execution.id, execution.owner or "", self.owner,
                                                                  LEASE_SECONDS, started, **start)):
                raise UnavailableError(f"execution {execution.id[:12]} is being run by {execution.owner}")
        for key, value in start.items():
            setattr(execution, key, value)
        if started:
            self._emitted(started)
        records = await self.store.load_steps(execution.id)
        ctx = {
            "inputs": execution.inputs,
            "steps": {},
            "vars": {},
            "execution": {
                "id": execution.id, "workflow": execution.workflow,
                "started_at": _iso(execution.started_at or execution.created_at),
            },
        }
        run = _Run(execution, workflow, records, _Scope(ctx), queue_item=queue_item)
        remaining = (execution.deadline - self.clock()) if execution.deadline else None
        try:
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            keeper = self._keep_lease(run, asyncio.current_task())
            try:
                async with asyncio.timeout(remaining):
                    await self._steps(run, workflow.steps, run.scope)
            finally:
                keeper.cancel()
                await self._flush_agents()
            outputs = self._render(workflow.outputs, run.scope.ctx, "outputs", run)
        except asyncio.CancelledError:
            if not run.lease_lost:
                raise
            return await self._reread(run)  # another process owns the run now: leave it to that one
        except _Stop:
            return await self._reread(run)
        except TimeoutError:
            return await self._finish(run, "timed_out", error={
                "kind": "TIMEOUT", "message": f"workflow '{workflow.name}' timed out after {workflow.timeout:g}s"})
        except Cancelled:
            return await self._finish(run, "cancelled", error={"kind": "CANCELLED", "message": "cancelled"})
        except StepError as exc:
            return await self._finish(run, "failed", error=exc.as_dict())
        return await self._finish(run, "completed", outputs=outputs)

    async def run_workflow(self, name: str, inputs: Mapping[str, Any], *, timeout: float | None = None) -> Execution:
        execution = await self.start(name, inputs, timeout=timeout)
        return await self.run(execution.id)

    # --- bookkeeping -------------------------------------------------------------------------------
    def _workflow(self, execution: Execution) -> WorkflowFile:
        """The run's stored definition, validated; the last one per workflow is kept (models are frozen),
        so the runs of an unchanged workflow are not validated again and again."""
        cached = self._definitions.get(execution.workflow)
        if cached is not None and cached[0] == execution.definition:
            return cached[1]
        workflow = WorkflowFile.model_validate(execution.definition)
        self._definitions[execution.workflow] = (copy.deepcopy(execution.definition), workflow)
        return workflow

    def _event(self, type_: str, execution: Execution, data: dict[str, Any], subject: str | None = None) -> Event:
        return Event(type=type_, data=data, source=f"progressive/workflows/{execution.workflow}",
                     subject=subject or execution.id, execution_id=execution.id, time=self.clock())

    def _emitted(self, events: list[Event]) -> None:
        if self.on_event:
            for event in events:
                self.on_event(event)

    async def _get(self, execution_id: str) -> Execution:
        execution = await self.store.get_execution(execution_id)
        assert execution is not None
        return execution

    async def _reread(self, run: _Run) -> Execution:
        """The run as the store has it now, when it stopped short here; if it has finished all the same
        (by the process that took it over), its queue item goes (see :meth:`run`)."""
        execution = await self._get(run.execution.id)
        if run.queue_item is not None and execution.status in FINISHED:
            await self.store.finish_work(run.queue_item)
        return execution

    async def _update(self, run: _Run, events: list[Event] | None = None, *, finish_work: str | None = None,
                      **changes: Any) -> None:
        await self.store.update_execution(run.execution.id, events, finish_work=finish_work, **changes)
        for key, value in changes.items():
            setattr(run.execution, key, value)
        if events:
            self._emitted(events)

    async def _finish(self, run: _Run, status: str, *, outputs: Any = None, error: Any = None) -> Execution:
        kind = {"completed": "workflow.completed", "cancelled": "workflow.cancelled"}.get(status, "workflow.failed")
        data: dict[str, Any] = {"workflow": run.workflow.name, "status": status}
        if outputs is not None:
            data["outputs"] = outputs
        if error is not None:
            data["error"] = error
        finished = self.clock()
        data["duration_ms"] = round((finished - (run.execution.started_at or finished)) * 1000, 3)
        await self._update(run, [self._event(kind, run.execution, data)], finish_work=run.queue_item,
                           status=status, outputs=outputs, error=error, finished_at=finished, owner=None,
                           lease_until=None, wake_at=None)
        return run.execution

    async def _checkpoint(self, run: _Run) -> None:
        """Between steps: honour a cancel request."""
        if await self.store.cancel_requested(run.execution.id):
            raise Cancelled

    async def _flush_agents(self) -> None:
        """Persist the agent runtime's and the integrations' metrics when a run stops (they flush about
        once a second on their own); a store hiccup here must not change the run's outcome."""
        for owner in (self.agent_call, self.integrations):
            flush = getattr(owner, "flush", None)
            if flush is not None:
                with contextlib.suppress(Exception):
                    await flush()

    async def aclose(self) -> None:
        """Flush and close the agent runtime's and the integrations' clients (the store stays open)."""
        for owner in (self.agent_call, self.integrations):
            close = getattr(owner, "aclose", None) or getattr(owner, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    def _keep_lease(self, run: _Run, main: asyncio.Task[Any] | None) -> Periodic:
        """Renew the run's lease every third of it while it runs, however long one step takes; if another
        process has taken the run over (our lease had expired), stop this one rather than run it twice.
        A renewal the store refuses for a moment (busy) is tried again at the next one."""

        async def renew() -> bool:
            try:
                if await self.store.claim_execution(run.execution.id, self.owner, LEASE_SECONDS):
                    return True
            except UnavailableError:
                return True
            run.lease_lost = True
            if main is not None:
                main.cancel()
            return False

        return Periodic(LEASE_SECONDS / 3, renew)

    # --- expressions -------------------------------------------------------------------------------
    def _template(self, source: str) -> Template:
        template = self._templates.get(source)
        if template is None:
            template = self._templates[source] = compile_template(source, _ALL_ROOTS)
        return template

    def _render(self, value: Any, ctx: Mapping[str, Any], where: str, run: _Run) -> Any:
        try:
            return _render(value, ctx, self._template)
        except ExpressionError as exc:
            raise StepError("STEP_ERROR", f"workflow '{run.workflow.name}', {where}: {exc.message}") from None

    def _condition(self, source: Any, ctx: Mapping[str, Any], where: str, run: _Run) -> Any:
        if not isinstance(source, str):
            return source
        key = "\0cond:" + source
        compiled = self._templates.get(key)
        try:
            if compiled is None:
                compiled = self._templates[key] = Template(source, [compile_condition(source, _ALL_ROOTS)])
            return compiled.render(ctx)
        except ExpressionError as exc:
            raise StepError("STEP_ERROR", f"workflow '{run.workflow.name}', {where}: {exc.message}") from None

    # --- steps -------------------------------------------------------------------------------------
    async def _steps(self, run: _Run, steps: list[Any], scope: _Scope) -> Any:
        last = None
        for step in steps:
            last = await self._step(run, step, scope)
        return last

    async def _step(self, run: _Run, step: Any, scope: _Scope, key: str | None = None) -> Any:
        key = key or f"{scope.prefix}{step.id}"
        where = f"step '{step.id}'"
        record = run.records.get(key)
        on_error = step.on_error or run.workflow.on_error
        if record is not None and record.status in ("completed", "skipped"):
            self._replay(run, step, scope, key)
            return record.output
        if record is not None and record.status == "failed":
            # It failed and the run went on (on_error continue or fallback, a collect_all branch): replay
            # that outcome rather than run the step again, as for a completed one.
            error = dict(record.error or {})
            stored = StepError(str(error.pop("kind", "STEP_ERROR")), str(error.pop("message", "")), error)
            self._replay_children(run, step, scope, key)
            return await self._failed(run, step, scope, key, stored, on_error)
        await self._checkpoint(run)
        ctx = scope.ctx
        if step.if_ is not None and not self._condition(step.if_, ctx, f"{where}, field 'if'", run):
            skipped = StepRecord(run.execution.id, key, step.id, step.type, "skipped",
                                 started_at=self.clock(), finished_at=self.clock())
            await self.store.save_step(skipped)
            run.records[key] = skipped
            self._publish(scope, step, None, "skipped", None)
            return None
        policy: RetryPolicy | None = step.retry or run.workflow.retry
        attempts = policy.max_attempts if policy else 1
        attempt = record.attempt if record is not None and record.status == "running" else 1
        while True:
            started = self.clock()
            try:
                output = await self._attempt(run, step, scope, key, attempt, record)
            except StepError as exc:
                exc.details.setdefault("step", key)  # the innermost step: enclosing steps keep it
                retry = policy is not None and attempt < attempts and exc.kind in policy.retry_on
                failed = StepRecord(run.execution.id, key, step.id, step.type, "running" if retry else "failed",
                                    attempt=attempt, error=exc.as_dict(), started_at=started,
                                    finished_at=self.clock())
                if retry:
                    assert policy is not None
                    delay = policy.delay(attempt, self.rng)
                    event = self._event("step.retried", run.execution, {
                        "step": step.id, "key": key, "attempt": attempt, "next_attempt": attempt + 1,
                        "delay_s": round(delay, 3), "error": exc.as_dict()}, subject=key)
                    failed.attempt = attempt + 1
                    await self.store.save_step(failed, [event])
                    self._emitted([event])
                    run.records[key] = record = failed
                    await self.sleep(delay)
                    attempt += 1
                    continue
                event = self._event("step.failed", run.execution, {
                    "step": step.id, "key": key, "attempt": attempt, "error": exc.as_dict()}, subject=key)
                await self.store.save_step(failed, [event])
                self._emitted([event])
                run.records[key] = failed
                return await self._failed(run, step, scope, key, exc, on_error)
            began = record.started_at if record and record.started_at else started
            ended = self.clock()
            current = run.records.get(key)  # the `running` record holds the step's decision (items, child, ...)
            done = StepRecord(run.execution.id, key, step.id, step.type, "completed", attempt=attempt,
                              input=(current.input if current else None), output=output,
                              started_at=began, finished_at=ended)
            events = []
            if step.type in PURE_STEPS and record is None:
                events.append(self._event("step.started", run.execution,
                                          {"step": step.id, "key": key, "type": step.type, "attempt": attempt},
                                          subject=key))
            events.append(self._event("step.completed", run.execution, {
                "step": step.id, "key": key, "type": step.type, "attempt": attempt,
                "duration_ms": round((ended - began) * 1000, 3)}, subject=key))
            events.extend(run.events)
            run.events.clear()
            await self.store.save_step(done, events)
            self._emitted(events)
            run.records[key] = done
            self._publish(scope, step, output, "completed", None)
            return output

    async def _failed(self, run: _Run, step: Any, scope: _Scope, key: str, exc: StepError, on_error: str) -> Any:
        """A step failed for good (or is replayed as such): apply its on_error."""
        if on_error == "fallback" and step.fallback is not None:
            output = await self._step(run, step.fallback, scope, key=f"{key}/fallback")
            self._publish(scope, step, output, "completed", None)
            return output
        exc.details.setdefault("step", key)
        self._publish(scope, step, None, "failed", exc.as_dict())  # visible to a collect_all's later steps
        if on_error == "continue":
            return None
        raise exc

    def _replay(self, run: _Run, step: Any, scope: _Scope, key: str) -> None:
        """Publish a finished step's stored result, and those of the steps inside it that share its scope
        (a condition's and a parallel's), as the first run published them."""
        record = run.records[key]
        self._publish(scope, step, record.output, record.status, record.error)
        self._replay_children(run, step, scope, key)

    def _replay_children(self, run: _Run, step: Any, scope: _Scope, key: str) -> None:
        children: list[tuple[Any, _Scope]] = []
        if step.type == "condition":
            inner = [*step.then, *step.else_, *(s for branch in step.branches for s in branch.steps)]
            children = [(child, scope) for child in inner]
        elif step.type == "parallel":
            for name, steps in step.branches.items():
                branch = _Scope(scope.ctx, f"{key}/{name}/")
                children.extend((child, branch) for child in steps)
        for child, child_scope in children:
            child_key = f"{child_scope.prefix}{child.id}"
            record = run.records.get(child_key)
            if record is None or record.status not in ("completed", "skipped", "failed"):
                continue
            fallback = run.records.get(f"{child_key}/fallback")
            if record.status == "failed" and child.fallback is not None and fallback is not None \
                    and fallback.status == "completed":
                self._replay(run, child.fallback, child_scope, f"{child_key}/fallback")
                self._publish(child_scope, child, fallback.output, "completed", None)
                self._replay_children(run, child, child_scope, child_key)
            else:
                self._replay(run, child, child_scope, child_key)

    def _publish(self, scope: _Scope, step: Any, output: Any, status: str, error: Any) -> None:
        scope.ctx["steps"][step.id] = {"output": output, "status": status, "error": error}
        if step.output and status != "skipped":
            scope.ctx["vars"][step.output] = output

    async def _mark_running(self, run: _Run, step: Any, key: str, attempt: int, decision: Any = None) -> StepRecord:
        record = StepRecord(run.execution.id, key, step.id, step.type, "running", attempt=attempt,
                            input=decision, started_at=self.clock())
        event = self._event("step.started", run.execution,
                            {"step": step.id, "key": key, "type": step.type, "attempt": attempt}, subject=key)
        await self.store.save_step(record, [event])
        self._emitted([event])
        run.records[key] = record
        return record

    async def _attempt(self, run: _Run, step: Any, scope: _Scope, key: str, attempt: int,
                       record: StepRecord | None) -> Any:
        handler = getattr(self, f"_do_{step.type}", None)
        if handler is None:
            raise StepError("STEP_ERROR", f"step type '{step.type}' is not available yet")
        decision = record.input if record is not None else None
        if step.type not in PURE_STEPS and (record is None or record.status != "running"):
            record = await self._mark_running(run, step, key, attempt, decision)
        coro = handler(run, step, scope, key, attempt, decision)
        if step.timeout is None or step.type in ("wait",):
            return await coro
        try:
            async with asyncio.timeout(step.timeout):
                return await coro
        except TimeoutError:
            if run.execution.deadline and self.clock() >= run.execution.deadline:
                raise  # the workflow's own timeout, not the step's
            raise StepError("TIMEOUT", f"step '{step.id}' timed out after {step.timeout:g}s") from None

    async def _remember(self, run: _Run, key: str, decision: Any) -> None:
        record = run.records[key]
        record.input = decision
        await self.store.save_step(record)

    # --- step types --------------------------------------------------------------------------------
    async def _do_transform(self, run: _Run, step: Any, scope: _Scope, key: str, attempt: int, _d: Any) -> Any:
        return self._render(step.value, scope.ctx, f"step '{step.id}', field 'value'", run)

    async def _do_condition(self, run: _Run, step: Any, scope: _Scope, key: str, attempt: int,
                            decision: Any) -> Any:
        where = f"step '{step.id}'"
        if isinstance(decision, dict) and "branch" in decision:
            choice = decision["branch"]  # the branch the first run took
        else:
            if step.condition is not None:
                test = self._condition(step.condition, scope.ctx, f"{where}, field 'condition'", run)
                choice = "then" if test else "else"
            else:
                choice = "else"
                for i, branch in enumerate(step.branches):
                    if self._condition(branch.when, scope.ctx, f"{where}, field 'branches[{i}].when'", run):
                        choice = i
                        break
            await self._remember(run, key, {"branch": choice})
        chosen = step.then if choice == "then" else step.else_ if choice == "else" else step.branches[choice].steps
        return await self._steps(run, chosen, scope)

    async def _do_parallel(self, run: _Run, step: Any, scope: _Scope, key: str, attempt: int, _d: Any) -> Any:
        names = list(step.branches)
        scopes = {name: _Scope(scope.ctx, f"{key}/{name}/") for name in names}

        async def branch(name: str) -> Any:
            return await self._steps(run, step.branches[name], scopes[name])

        if step.join == "fail_fast":
            results = dict(zip(names, await _all_or_first_error([branch(n) for n in names]), strict=True))
            return self._combine(run, step, scope, results, list(names), {})
        outcomes = await asyncio.gather(*(branch(n) for n in names), return_exceptions=True)
        results = {}
        errors: dict[str, Any] = {}
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, StepError):
                errors[name] = outcome.as_dict()
                results[name] = None
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results[name] = outcome
        succeeded = [n for n in names if n not in errors]
        needed = step.min_success or 1
        if len(succeeded) < needed:
            what = f"every branch of '{step.id}' failed" if not succeeded else \
                f"'{step.id}' needs {needed} successful branches, {len(succeeded)} succeeded"
            raise StepError("STEP_ERROR", what, {"branches": errors, "succeeded": succeeded})
        return self._combine(run, step, scope, results, succeeded, errors)

    def _combine(self, run: _Run, step: Any, scope: _Scope, results: dict[str, Any], succeeded: list[str],
                 failed: dict[str, Any]) -> Any:
        """A parallel step's output: its `combine` expression over the branches' outcomes, or the outputs."""
        if step.combine is None:
            return results
        ctx = {**scope.ctx, "branches": results, "succeeded": succeeded, "failed": failed}
        return self._condition(step.combine, ctx, f"step '{step.id}', field 'combine'", run)

    async def _do_foreach(self, run: _Run, step: Any, scope: _Scope, key: str, attempt: int, decision: Any) -> Any:
        if isinstance(decision, dict) and "items" in decision:
            items = decision["items"]
        else:
            items = self._condition(step.items, scope.ctx, f"step '{step.id}', field 'items'", run) \
                if isinstance(step.items, str) else self._render(step.items, scope.ctx, f"step '{step.id}'", run)
            if not isinstance(items, list):
                raise StepError("STEP_ERROR", f"step '{step.id}': items must be a list, got {type(items).__name__}")
            await self._remember(run, key, {"items": items})
        limit = asyncio.Semaphore(step.concurrency)
        failed = False

        async def one(index: int, item: Any) -> Any:
            nonlocal failed
            async with limit:
                if failed:  # an item failed: start no more (a waiting task wins the semaphore before it is cancelled)
                    return None
                child = scope.child(f"{key}[{index}]/", {step.as_: item, f"{step.as_}_index": index})
                try:
                    return await self._steps(run, step.steps, child)
                except BaseException:
                    failed = True
                    raise

        return await _all_or_first_error([one(i, item) for i, item in enumerate(items)])

    async def _do_wait(self, run: _Run, step: Any, scope: _Scope, key: str, attempt: int, decision: Any) -> Any:
        if isinstance(decision, dict) and "wake_at" in decision:
            wake_at = float(decision["wake_at"])
        else:
            if step.duration is not None:
                wake_at = self.clock() + step.duration
            else:
                until = step.until
                if isinstance(until, str):
                    field_ = f"step '{step.id}', field 'until'"
                    if is_template(until):
                        until = self._render(until, scope.ctx, field_, run)
                    elif not is_iso_time(until):  # a bare expression, e.g. inputs.send_at or '2026-01-05T10:00:00Z'
                        until = self._condition(until, scope.ctx, field_, run)
                wake_at = _timestamp(until, step.id)
            await self._remember(run, key, {"wake_at": wake_at})
        delay = wake_at - self.clock()
        if delay > 0:
            if not self.wait_inline:
                await self._update(run, status="waiting", wake_at=wake_at, owner=None, lease_until=None)
                raise _Stop
            await self.sleep(delay)
        return {"waited_until": _iso(wake_at)}

    async def _do_emit(self, run: _Run, step: Any, scope: _Scope, key: str, attempt: int, _d: Any) -> Any:
        data = self._render(step.data, scope.ctx, f"step '{step.id}', field 'data'", run)
        event = Event(type=step.event, data=data if isinstance(data, dict) else {"value": data},
                      source=f"progressive/workflows/{run.workflow.name}", subject=key,
                      execution_id=run.execution.id, time=self.clock())
        run.events.append(event)  # committed with the step's completion, so it is never emitted twice
        return {"event_id": event.id, "type": step.event}

    async def _do_sub_workflow(self, run: _Run, step: Any, scope: _Scope, key: str, attempt: int,
                               decision: Any) -> Any:
        if isinstance(decision, dict) and "child" in decision:
            child_id = decision["child"]
        else:
            inputs = self._render(step.inputs, scope.ctx, f"step '{step.id}', field 'inputs'", run)
            try:
                child = await self.start(step.workflow, inputs, parent=(run.execution.id, key))
            except InputError as exc:  # inputs computed at run time: the step fails, not the process
                raise StepError("STEP_ERROR", f"step '{step.id}': {exc.message}") from None
            child_id = child.id
            await self._remember(run, key, {"child": child_id})
        sub = Engine(self.workflows, self.store, agent_call=self.agent_call, sleep=self.sleep, clock=self.clock,
                     rng=self.rng, wait_inline=self.wait_inline, on_event=self.on_event, owner=self.owner,
                     capability_providers=self.capability_providers, integrations=self.integrations)
        result = await sub.run(child_id)
        if result.status == "waiting":  # the parent waits too, until the child is due
            await self._update(run, status="waiting", wake_at=result.wake_at, owner=None, lease_until=None)
            raise _Stop
        if result.status != "completed":
            error = result.error or {}
            raise StepError(str(error.get("kind", "STEP_ERROR")),
                            f"sub-workflow '{step.workflow}' {result.status}: {error.get('message', '')}",
                            {"child": child_id})
        return result.outputs

    async def _do_agent_call(self, run: _Run, step: Any, scope: _Scope, key: str, attempt: int, _d: Any) -> Any:
        if self.agent_call is None:
            raise StepError("AGENT_ERROR", "no agent runtime is configured")
        params = self._render(step.params, scope.ctx, f"step '{step.id}', field 'params'", run)
        request = AgentRequest(
            agent=step.agent, capability=step.capability, method=step.method, params=params,
            idempotency_key=f"{run.execution.id}:{key}:{attempt}", timeout=step.timeout,
            context={"execution_id": run.execution.id, "workflow": run.workflow.name, "step": key,
                     "attempt": attempt},
        )
        return await self.agent_call(request)

    async def _do_api_call(self, run: _Run, step: Any, scope: _Scope, key: str, attempt: int, _d: Any) -> Any:
        if self.integrations is None:
            raise StepError("STEP_ERROR", "no integrations are configured for this engine")
        where = f"step '{step.id}'"
        path = self._render(step.path, scope.ctx, f"{where}, field 'path'", run)
        query = self._render(step.query, scope.ctx, f"{where}, field 'query'", run)
        headers = {str(k): str(v) for k, v in
                   self._render(step.headers, scope.ctx, f"{where}, field 'headers'", run).items()}
        body = self._render(step.json_, scope.ctx, f"{where}, field 'json'", run)
        if step.idempotency_key:
            headers.setdefault("Idempotency-Key", f"{run.execution.id}:{key}")
        return await self.integrations.api_call(step.integration, step.method, str(path), query=query,
                                                headers=headers, json_body=body, idempotent=step.idempotent)

    async def _do_database_operation(self, run: _Run, step: Any, scope: _Scope, key: str, attempt: int,
                                     _d: Any) -> Any:
        if self.integrations is None:
            raise StepError("STEP_ERROR", "no integrations are configured for this engine")
        params = self._render(step.params, scope.ctx, f"step '{step.id}', field 'params'", run)
        return await self.integrations.db_call(step.integration, step.operation, params)

    async def _do_consensus(self, run: _Run, step: Any, scope: _Scope, key: str, attempt: int, _d: Any) -> Any:
        """Ask every agent (listed, or each provider of the capability) and combine their opinions."""
        call = self.agent_call
        if call is None:
            raise StepError("AGENT_ERROR", "no agent runtime is configured")
        params = self._render(step.params, scope.ctx, f"step '{step.id}', field 'params'", run)
        agents = list(step.agents) or list(self.capability_providers.get(step.capability, ()))
        if not agents:
            raise StepError("AGENT_ERROR", f"no agent provides capability '{step.capability}'")

        async def ask(agent: str) -> Any:
            return await call(AgentRequest(
                agent=agent, capability=None, method=step.method, params=params,
                idempotency_key=f"{run.execution.id}:{key}/{agent}:{attempt}", timeout=step.timeout,
                context={"execution_id": run.execution.id, "workflow": run.workflow.name, "step": key,
                         "attempt": attempt, "consensus": agents}, envelope=True))

        answers = await asyncio.gather(*(ask(a) for a in agents), return_exceptions=True)
        opinions: dict[str, dict[str, Any]] = {}
        failed: dict[str, Any] = {}
        for agent, answer in zip(agents, answers, strict=True):
            if isinstance(answer, StepError):
                failed[agent] = answer.as_dict()
            elif isinstance(answer, BaseException):
                raise answer
            else:
                opinions[agent] = _opinion(answer)
        if len(opinions) < step.min_agents:
            raise StepError("AGENT_ERROR", f"consensus '{step.id}' needs {step.min_agents} opinion(s), got "
                            f"{len(opinions)}", {"failed": failed})
        decision, confidence = consensus(step.strategy, opinions)
        return {"decision": decision, "confidence": confidence, "strategy": step.strategy,
                "opinions": opinions, "failed": failed, "participating": agents}


DEFAULT_CONFIDENCE = 0.5  # the seed's `response.confidence || 0.5`


def _opinion(answer: Any) -> dict[str, Any]:
    if isinstance(answer, dict) and "output" in answer:
        confidence = answer.get("confidence")
        if isinstance(confidence, int | float) and not isinstance(confidence, bool) and 0 <= confidence <= 1:
            return {"output": answer["output"], "confidence": float(confidence)}
        return {"output": answer["output"], "confidence": DEFAULT_CONFIDENCE}
    return {"output": answer, "confidence": DEFAULT_CONFIDENCE}


def consensus(strategy: str, opinions: Mapping[str, Mapping[str, Any]]) -> tuple[Any, float]:
    """(decision, confidence) from agents' opinions, in the order the agents were asked.

    - highest_confidence (the seed's default): the most confident opinion; confidence is the average;
    - majority: the most common answer (ties: higher summed confidence, then first asked); confidence is its share;
    - weighted: answers weighted by confidence; confidence is the winner's share of the total weight.
    """
    import json

    items = list(opinions.values())
    if strategy == "highest_confidence":
        best = max(items, key=lambda o: o["confidence"])  # max keeps the first of equals
        return best["output"], round(sum(o["confidence"] for o in items) / len(items), 4)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for opinion in items:
        groups.setdefault(json.dumps(opinion["output"], sort_keys=True, default=str), []).append(opinion)
    if strategy == "majority":
        winner = max(groups.values(), key=lambda g: (len(g), sum(o["confidence"] for o in g)))
        return winner[0]["output"], round(len(winner) / len(items), 4)
    total = sum(o["confidence"] for o in items) or 1.0
    winner = max(groups.values(), key=lambda g: sum(o["confidence"] for o in g))
    return winner[0]["output"], round(sum(o["confidence"] for o in winner) / total, 4)


class _AnyRoots(frozenset[str]):
    """At run time any root resolves from the context: `validate` already checked the names,
    and loop variables have names the workflow chooses."""

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str) and not item.startswith("_")


_ALL_ROOTS = _AnyRoots()


async def _all_or_first_error(coros: list[Awaitable[Any]]) -> list[Any]:
    """Run concurrently; on the first failure cancel the rest and raise that failure (not a group)."""
    tasks: list[asyncio.Task[Any]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks.extend(group.create_task(c) for c in coros)  # type: ignore[arg-type]
    except BaseExceptionGroup as group_error:
        errors = group_error.exceptions
        for kind in (_Stop, Cancelled, TimeoutError, StepError):
            for error in errors:
                if isinstance(error, kind):
                    raise error from None
        raise errors[0] from None
    return [t.result() for t in tasks]


def _render(value: Any, ctx: Mapping[str, Any], template: Callable[[str], Template]) -> Any:
    if isinstance(value, str):
        return template(value).render(ctx) if is_template(value) else value
    if isinstance(value, dict):
        return {k: _render(v, ctx, template) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, ctx, template) for v in value]
    return value


def _owner_is_dead(owner: str) -> bool:
    """True when ``host:pid`` names a process on this host that no longer exists (or is a zombie)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine: only its lease expiring tells us it is gone
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    from progressive_cli.util import is_zombie

    return is_zombie(int(pid))  # killed, not yet reaped: as dead as it gets


def is_live(execution: Execution) -> bool:
    """Whether a process holds the run's lease and is (as far as this host can tell) alive."""
    return execution.owner is not None and (execution.lease_until or 0) > time.time() \
        and not _owner_is_dead(execution.owner)


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _timestamp(value: Any, step_id: str) -> float:
    from datetime import UTC, date, datetime

    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise StepError("STEP_ERROR", f"step '{step_id}': until {value!r} is not an ISO-8601 time") from None
        return _timestamp(parsed, step_id)
    raise StepError("STEP_ERROR", f"step '{step_id}': until must be a time, got {type(value).__name__}")


__all__ = ["STEP_ERROR_KINDS", "AgentRequest", "Engine"]
