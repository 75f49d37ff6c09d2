"""Harness for engine tests: a real SQLite store in tmp_path, a fake clock whose sleep advances it
instantly, a seeded rng and a fake agent runtime that records every call."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from progressive_cli.config.workflows import WorkflowFile
from progressive_cli.engine.executor import AgentRequest, Engine
from progressive_cli.store import open_store
from progressive_cli.store.base import Event, Execution, StepRecord

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class FakeClock:
    """Each reading moves time on by `tick` (so records have distinct, ordered times); `sleep`
    records the delay and jumps the clock without really sleeping."""

    def __init__(self, start: float = T0, tick: float = 0.001) -> None:
        self.now = start
        self.tick = tick
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += max(delay, 0.0)
        await asyncio.sleep(0)


Handler = Callable[[AgentRequest], Any]


class FakeAgents:
    """An `agent_call` runtime: handlers by method; records requests and the most calls in flight."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.calls: list[AgentRequest] = []
        self.active = 0
        self.max_active = 0

    def on(self, method: str, handler: Handler) -> None:
        self.handlers[method] = handler

    def count(self, method: str | None = None, step: str | None = None) -> int:
        return sum(1 for r in self.calls
                   if (method is None or r.method == method) and (step is None or r.context["step"] == step))

    async def __call__(self, request: AgentRequest) -> Any:
        self.calls.append(request)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            for _ in range(3):  # let other calls start, so concurrency shows
                await asyncio.sleep(0)
            handler = self.handlers.get(request.method)
            if handler is None:
                return {"method": request.method, "params": request.params}
            result = handler(request)
            if asyncio.iscoroutine(result):
                result = await result
            return result
        finally:
            self.active -= 1


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.store: Any = open_store("sqlite:///state.db", tmp_path)
        self.clock = FakeClock()
        self.agents = FakeAgents()
        self.workflows: dict[str, WorkflowFile] = {}
        self.events_seen: list[Event] = []

    def add(self, definition: dict[str, Any]) -> WorkflowFile:
        workflow = WorkflowFile.model_validate(definition)
        self.workflows[workflow.name] = workflow
        return workflow

    def engine(self, *, seed: int = 7, **kwargs: Any) -> Engine:
        kwargs.setdefault("agent_call", self.agents)
        return Engine(self.workflows, self.store, sleep=self.clock.sleep, clock=self.clock,
                      rng=random.Random(seed), on_event=self.events_seen.append, **kwargs)

    def run(self, name: str, inputs: dict[str, Any] | None = None, **kwargs: Any) -> Execution:
        timeout = kwargs.pop("timeout", None)
        engine = self.engine(**kwargs)
        return asyncio.run(engine.run_workflow(name, inputs or {}, timeout=timeout))

    def resume(self, execution_id: str, **kwargs: Any) -> Execution:
        return asyncio.run(self.engine(**kwargs).run(execution_id))

    def get(self, execution_id: str) -> Execution:
        execution = asyncio.run(self.store.get_execution(execution_id))
        assert execution is not None
        return execution

    def steps(self, execution_id: str) -> dict[str, StepRecord]:
        return asyncio.run(self.store.load_steps(execution_id))  # type: ignore[no-any-return]

    def events(self, execution_id: str | None = None, **kwargs: Any) -> list[Event]:
        return asyncio.run(self.store.list_events(execution_id=execution_id, limit=10_000, **kwargs))  # type: ignore[no-any-return]

    def types(self, execution_id: str) -> list[str]:
        return [e.type for e in self.events(execution_id)]

    def executions(self) -> list[Execution]:
        return asyncio.run(self.store.list_executions(limit=1000))  # type: ignore[no-any-return]


@pytest.fixture
def new_harness(tmp_path: Path) -> Any:
    """Make harnesses with their own store under tmp_path (the first one at tmp_path itself)."""
    made: list[Harness] = []

    def make() -> Harness:
        harness = Harness(tmp_path / f"h{len(made)}" if made else tmp_path)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        asyncio.run(harness.store.close())


@pytest.fixture
def h(new_harness: Any) -> Harness:
    return new_harness()  # type: ignore[no-any-return]
