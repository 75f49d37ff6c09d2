"""A run keeps its lease through a step longer than the lease, and stops if another process takes it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from progressive_cli.config.workflows import WorkflowFile
from progressive_cli.engine import executor
from progressive_cli.engine.executor import AgentRequest, Engine
from progressive_cli.store import open_store

WORKFLOW = WorkflowFile.model_validate({
    "name": "slow",
    "steps": [{"id": "long", "type": "agent_call", "agent": "a", "method": "m"},
              {"id": "after", "type": "transform", "value": "done"}],
})


@pytest.fixture(autouse=True)
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor, "LEASE_SECONDS", 0.3)


def test_lease_is_renewed_during_a_long_step(tmp_path: Path) -> None:
    async def go() -> tuple[str, list[bool]]:
        store = open_store("sqlite:///s.db", tmp_path)
        other = open_store("sqlite:///s.db", tmp_path)  # another process's view of the same file
        steals: list[bool] = []

        async def agent(request: AgentRequest) -> str:
            for _ in range(6):  # 1.2 s: four lease lengths
                await asyncio.sleep(0.2)
                steals.append(await other.claim_execution(request.context["execution_id"], "intruder:1", 0.3))
            return "ok"

        engine = Engine({"slow": WORKFLOW}, store, agent_call=agent, owner="me:1")
        result = await engine.run_workflow("slow", {})
        await store.close()
        await other.close()
        return result.status, steals

    status, steals = asyncio.run(go())
    assert status == "completed"
    assert not any(steals), "the lease lapsed while the step was still running"


def test_a_run_whose_lease_was_taken_stops(tmp_path: Path) -> None:
    async def go() -> tuple[str, str | None, int]:
        store = open_store("sqlite:///s.db", tmp_path)
        other = open_store("sqlite:///s.db", tmp_path)
        calls = 0

        async def agent(request: AgentRequest) -> str:
            nonlocal calls
            calls += 1
            # another process takes the run over (as if our lease had expired)
            await other.take_over_execution(request.context["execution_id"], "me:1", "other:2", 60)
            await asyncio.sleep(1.0)
            return "late"

        engine = Engine({"slow": WORKFLOW}, store, agent_call=agent, owner="me:1")
        start = time.monotonic()
        result = await engine.run_workflow("slow", {})
        assert time.monotonic() - start < 1.0  # stopped at the next renewal, not after the step
        steps = await store.load_steps(result.id)
        await store.close()
        await other.close()
        return result.status, result.owner, len([k for k, r in steps.items() if r.status == "completed"])

    status, owner, completed = asyncio.run(go())
    assert status == "running" and owner == "other:2"  # left to its new owner, not finished by us
    assert completed == 0
