"""The event bus on the SQLite store: matching, retries, the dead-letter queue, replay, and nothing lost
across a SIGKILL."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from progressive_cli.config.common import Backoff
from progressive_cli.engine.expressions import compile_condition
from progressive_cli.errors import StepError
from progressive_cli.events.bus import Bus, Subscription
from progressive_cli.store.base import Event
from progressive_cli.store.sqlite import SQLiteStore

NOW = [1000.0]
QUICK = Backoff(initial_delay=0.5, max_delay=1.0, jitter="none")


def run(coro):
    return asyncio.run(coro)


def bus_on(path: Path) -> Bus:
    return Bus(SQLiteStore(path), clock=lambda: NOW[0], rng=random.Random(1))


async def drain(bus: Bus, name: str) -> None:
    """Pump until there is nothing left to do, moving the clock past every backoff."""
    for _ in range(10_000):
        if not await bus.pump(name):
            NOW[0] += 2.0
            if not await bus.pump(name):
                return
    raise AssertionError("the bus did not settle")


def test_handlers_failing_10_percent_every_event_ends_processed_or_dead(tmp_path) -> None:
    bus = bus_on(tmp_path / "state.db")
    rng = random.Random(7)
    handled: list[int] = []

    async def flaky(event: Event) -> None:
        if rng.random() < 0.10:
            raise StepError("NETWORK_ERROR", "upstream reset")
        handled.append(event.data["n"])

    bus.subscribe(Subscription("audit", ("order.*",), flaky, max_attempts=2, backoff=QUICK, from_start=True))

    async def go() -> tuple[list[dict], list[dict]]:
        events = [Event("order.created" if n % 2 else "order.paid", {"n": n}) for n in range(3000)]
        events += [Event("user.login", {"n": -1}) for _ in range(500)]  # not matched
        await bus.store.publish(events)
        await drain(bus, "audit")
        return await bus.store.bus_status(), await bus.store.dead_letters(limit=10_000)

    [status], dead = run(go())
    assert status["skipped"] == 500 and status["lag"] == 0 and status["retry_queue"] == 0
    assert len(set(handled)) == len(handled) == status["processed"]  # each success once
    assert status["processed"] + status["dead_lettered"] == 3000  # exactly: nothing lost, nothing twice
    assert len(dead) == status["dead_lettered"] > 0  # with p=0.1 twice, ~30 expected
    assert {d["attempts"] for d in dead} == {2} and dead[0]["error"] == "NETWORK_ERROR: upstream reset"
    assert status["retried"] == status["failed"] - status["dead_lettered"]
    assert set(handled) | {d["data"]["n"] for d in dead} == set(range(3000))

    # replay: the DLQ goes back to the retry queue and a healthy handler processes all of it
    dead_count = len(dead)

    async def healthy(event: Event) -> None:
        handled.append(event.data["n"])

    bus.subscriptions["audit"].handler = healthy

    async def replay() -> tuple[int, list[dict], list[dict]]:
        moved = await bus.store.replay_dead_letters(None, NOW[0])
        await drain(bus, "audit")
        return moved, await bus.store.bus_status(), await bus.store.dead_letters()

    moved, [status], dead = run(replay())
    assert moved == dead_count and dead == []
    assert sorted(handled) == list(range(3000)) and status["processed"] == 3000
    run(bus.store.close())


def test_filters_patterns_and_non_retryable_errors(tmp_path) -> None:
    bus = bus_on(tmp_path / "state.db")
    seen: list[str] = []

    async def handler(event: Event) -> None:
        if event.data.get("bad"):
            raise StepError("API_ERROR", "422 Unprocessable", {"status": 422})
        seen.append(event.type)

    only_failed = compile_condition("event.data.status == 'failed'", frozenset({"event"}))
    bus.subscribe(Subscription("failures", ("workflow.*", "step.failed"), handler, filter=only_failed,
                               from_start=True))

    async def go() -> tuple[list[dict], list[dict]]:
        await bus.store.publish([
            Event("workflow.completed", {"status": "completed"}), Event("workflow.failed", {"status": "failed"}),
            Event("step.failed", {"status": "failed"}), Event("workflowx", {"status": "failed"}),
            Event("workflow.failed", {"status": "failed", "bad": True}), Event("step.completed", {"status": "failed"}),
        ])
        await drain(bus, "failures")
        return await bus.store.bus_status(), await bus.store.dead_letters()

    [status], dead = run(go())
    assert seen == ["workflow.failed", "step.failed"]
    assert [d["type"] for d in dead] == ["workflow.failed"] and dead[0]["attempts"] == 1  # a 422 is not retried
    assert status["skipped"] == 3 and status["retried"] == 0
    run(bus.store.close())


def test_a_new_subscription_starts_at_the_newest_event(tmp_path) -> None:
    bus = bus_on(tmp_path / "state.db")
    seen: list[int] = []

    async def handler(event: Event) -> None:
        seen.append(event.data["n"])

    bus.subscribe(Subscription("late", ("*",), handler))

    async def go() -> None:
        await bus.store.publish([Event("x", {"n": 1})])
        await bus.pump("late")  # takes its position: after event 1
        await bus.publish("x", {"n": 2})
        await drain(bus, "late")

    run(go())
    assert seen == [2]
    run(bus.store.close())


CONSUMER = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from progressive_cli.events.bus import Bus, Subscription
    from progressive_cli.store.sqlite import SQLiteStore

    async def main(path, log):
        bus = Bus(SQLiteStore(Path(path)))
        async def handler(event):
            with open(log, "a") as f:
                f.write(f"{event.data['n']}\\n")
            time.sleep(0.0005)
        bus.subscribe(Subscription("audit", ("*",), handler, from_start=True))
        while await bus.pump("audit", limit=50):
            pass
        print("drained", flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def test_nothing_is_lost_across_a_sigkill(tmp_path) -> None:
    path, log = tmp_path / "state.db", tmp_path / "handled.log"
    store = SQLiteStore(path)
    run(store.publish([Event("order.created", {"n": n}) for n in range(2000)]))
    run(store.close())
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(log)], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while (not log.exists() or len(log.read_text().splitlines()) < 500) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = len(log.read_text().splitlines())
    assert 0 < first < 2000, "the consumer must be killed mid-way"
    out = subprocess.run([sys.executable, str(script), str(path), str(log)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "drained", out.stderr
    handled = [int(x) for x in log.read_text().splitlines()]
    assert set(handled) == set(range(2000))  # every event handled at least once
    assert len(handled) - 2000 <= 50  # redelivered: at most the batch the kill interrupted
    store = SQLiteStore(path)
    [status] = run(store.bus_status())
    assert status["lag"] == 0 and status["processed"] >= 2000 - 50
    run(store.close())


def test_retention_keeps_what_the_queues_still_need(tmp_path) -> None:
    bus = bus_on(tmp_path / "state.db")

    async def fail(event: Event) -> None:
        raise StepError("API_ERROR" if event.data["n"] == 0 else "TIMEOUT", "no")

    bus.subscribe(Subscription("s", ("*",), fail, from_start=True, backoff=QUICK))

    async def go() -> tuple[int, list[int]]:
        old = [Event("x", {"n": n}, time=1.0) for n in range(3)]
        await bus.store.publish(old)
        await bus.store.publish([Event("x", {"n": 9})])  # recent
        await bus.pump("s")  # n=0 -> DLQ (4xx-like), the rest -> retry queue
        pruned = await bus.store.prune_events(before=100.0)
        left = await bus.store.list_events(limit=100)
        return pruned, sorted(e.data["n"] for e in left)

    pruned, left = run(go())
    assert pruned == 0 and left == [0, 1, 2, 9]  # every old event is still needed by a queue
    run(bus.store.replay_dead_letters(None, 0.0))
    bus.subscriptions["s"].handler = _ok

    async def settle() -> tuple[int, list[int]]:
        await drain(bus, "s")
        pruned = await bus.store.prune_events(before=100.0)
        return pruned, sorted(e.data["n"] for e in await bus.store.list_events(limit=100))

    assert run(settle()) == (3, [9])
    run(bus.store.close())


async def _ok(event: Event) -> None:
    return None
