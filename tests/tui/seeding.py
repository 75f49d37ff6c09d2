"""One of everything the dashboard shows, written to a state store at a fixed clock (used by conftest.py
and by tests that seed a store late)."""

from __future__ import annotations

from pathlib import Path

from progressive_cli.store.base import Event, Execution, StepRecord
from progressive_cli.store.sqlite import SQLiteStore

NOW = 1_800_000_000.0
DEFINITION = {"name": "orders", "steps": [{"id": "fetch", "type": "transform"}, {"id": "charge", "type": "api_call"},
                                           {"id": "notify", "type": "emit"}]}


async def seed(path: Path) -> None:
    import progressive_cli.store.sqlite as sqlite_store

    clock = iter(NOW - 300 + n for n in range(10_000))
    real_now = sqlite_store.now
    sqlite_store.now = lambda: next(clock)  # the store's own stamps, near the fixed clock
    store = SQLiteStore(path)
    try:
        def execution(id: str, status: str, **extra) -> Execution:
            return Execution(id=id, workflow="orders", status=status, inputs={"n": 1}, definition=DEFINITION,
                             created_at=NOW - 120, started_at=NOW - 120, updated_at=NOW - 60, **extra)

        await store.create_execution(execution("e-done-000001", "completed", finished_at=NOW - 100,
                                               outputs={"ok": True}))
        await store.create_execution(execution("e-failed-0002", "failed", finished_at=NOW - 90, error={
            "kind": "API_ERROR", "message": "payments answered 503", "step": "charge"}))
        await store.create_execution(execution("e-running-003", "running", owner="elsewhere:1",
                                               lease_until=NOW + 30))
        for eid, statuses in (("e-done-000001", ("completed",) * 3), ("e-failed-0002", ("completed", "failed")),
                              ("e-running-003", ("completed", "running"))):
            for n, status in enumerate(statuses):
                step = DEFINITION["steps"][n]
                await store.save_step(StepRecord(
                    eid, step["id"], step["id"], step["type"], status, input={"n": n},
                    output={"n": n} if status == "completed" else None,
                    error={"kind": "API_ERROR", "message": "payments answered 503"} if status == "failed" else None,
                    started_at=NOW - 110 + n, finished_at=NOW - 109 + n if status != "running" else None))
        await store.save_health([
            {"name": "state-store", "status": "healthy", "response_ms": 0.2, "detail": "readable", "at": NOW - 20},
            {"name": "external-apis/payments", "status": "healthy", "response_ms": 9.5, "detail": "ok",
             "at": NOW - 50},
            {"name": "external-apis/payments", "status": "unhealthy", "response_ms": 12.5,
             "detail": "503 Service Unavailable", "at": NOW - 20},
        ])
        await store.save_breaker("integration:payments", "open", 5, 0, NOW - 10, "API_ERROR: payments answered 503",
                                 [Event("breaker.state", {"breaker": "integration:payments", "state": "open"},
                                        time=NOW - 10)])
        events = [Event("order.paid", {"n": n}, subject=f"order-{n}", id=f"ev-{n}", time=NOW - 60 + n)
                  for n in range(3)]
        await store.publish(events)
        stored = await store.list_events(type_prefix="order.", limit=10)
        await store.bus_commit("audit", offset=stored[-1].seq, done=[], retries=[],
                               dead=[(stored[0], 3, "NETWORK_ERROR: upstream reset")], counts={"dead_lettered": 1})
        await store.save_alerts([{"check_name": "external-apis/payments", "firing": 1, "failures": 3, "successes": 0,
                                  "fired_at": NOW - 30, "notified_at": NOW - 30, "resolved_at": None,
                                  "status": "unhealthy", "detail": "503 Service Unavailable"}])
    finally:
        await store.close()
        sqlite_store.now = real_now
