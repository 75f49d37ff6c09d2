"""The dashboard's reads (tui/data.py, no Textual): each view reads what it shows, a snapshot keeps the
parts it did not read from the one before, a running run's progress, the events tail after a while away,
the first snapshot read ahead, and an agent's detail."""

from __future__ import annotations

import asyncio
from pathlib import Path

from seeding import NOW

from progressive_cli.config.project import load_project
from progressive_cli.store.base import Event
from progressive_cli.store.sqlite import SQLiteStore
from tui.data import EVENTS_PAGE, READS, Snapshot, Source


def source_for(root: Path) -> Source:
    return Source(load_project(root), clock=lambda: NOW)


def load(source: Source, *views: str) -> Snapshot:
    async def go() -> Snapshot:
        try:
            return await source.load(frozenset(views))
        finally:
            await source.close()

    return asyncio.run(go())


def test_each_view_reads_only_what_it_shows(seeded) -> None:
    source = source_for(seeded)
    overview = load(source, "overview")
    assert overview.error is None
    assert overview.counts == {"completed": 1, "failed": 1, "running": 1}
    assert overview.overall == "unhealthy" and overview.alerts and overview.breakers is not None
    assert overview.agents is not None and not overview.agents_full
    assert set(overview.agents[0]) == {"id", "kind", "status", "heartbeat_age_s"}  # no call figures
    assert overview.executions is None and overview.dead_letters is None and overview.events == []

    agents = load(source, "agents")
    assert agents.agents_full and agents.agents is not None
    assert {"instances", "in_flight", "success_rate", "p95_ms", "breakers_open"} <= set(agents.agents[0])
    assert agents.health is None and agents.counts is None and agents.executions is None

    executions = load(source, "executions")
    assert {e["id"] for e in executions.executions or []} == {"e-done-000001", "e-failed-0002", "e-running-003"}
    assert executions.agents is None and executions.breakers is None
    for snap in (overview, agents, executions):  # the queues' trend needs every tick, whatever the view
        assert [q["queue"] for q in snap.queues] == ["event store", "work queue", "retry queue", "dead letters"]
    assert set(READS) == {"overview", "agents", "executions", "queues", "breakers", "health", "events"}


def test_a_snapshot_keeps_what_it_did_not_read_from_the_previous_one(seeded) -> None:
    source = source_for(seeded)
    full = load(source, "agents")
    executions = load(source, "executions").merged(full)
    assert executions.agents == full.agents and executions.agents_full  # kept, with what it was
    assert executions.executions is not None
    overview = load(source, "overview").merged(executions)
    assert not overview.agents_full  # read anew, without the figures: the agents view waits for a full read
    assert overview.executions == executions.executions
    assert Snapshot(at=0).merged(None).agents is None


def test_progress_of_a_running_run_is_its_top_level_steps_done(seeded) -> None:
    executions = {e["id"]: e for e in load(source_for(seeded), "executions").executions or []}
    assert executions["e-running-003"]["progress"] == 1 / 3  # fetch completed; charge running; notify not yet
    assert executions["e-done-000001"]["progress"] is None  # only running runs have a bar
    assert executions["e-failed-0002"]["failed_step"] == "charge"


def test_the_events_tail_jumps_to_the_newest_page_after_a_while_away(seeded) -> None:
    source = source_for(seeded)
    first = load(source, "events")
    assert [e.type for e in first.events][-3:] == ["order.paid"] * 3
    store = SQLiteStore(seeded / ".progressive" / "state.db")
    asyncio.run(store.publish([Event("tick", {"n": n}) for n in range(EVENTS_PAGE + 50)]))
    asyncio.run(store.close())
    load(source, "overview")  # another view on screen: no events read
    back = load(source, "events")
    assert len(back.events) == EVENTS_PAGE and back.events[-1].data == {"n": EVENTS_PAGE + 49}
    assert load(source, "events").events == []  # nothing new since


def test_the_first_snapshot_is_read_ahead_once(seeded) -> None:
    source = source_for(seeded)
    assert source.prefetched(wait=True) is None
    source.prefetch(frozenset({"overview"}))
    first = source.prefetched(wait=True)
    assert first is not None and first.error is None and first.counts
    assert source.prefetched(wait=True) is None  # taken
    kept = Snapshot(at=1.0)
    source.keep(kept)
    assert source.prefetched(wait=False) is kept
    asyncio.run(source.close())


def test_an_agents_detail_has_each_instance_and_its_messages(seeded) -> None:
    detail = asyncio.run(source_for(seeded).agent_detail("npa"))
    assert [i["instance"] for i in detail["instances"]] == ["npa#0"]
    assert detail["instances"][0]["status"] == "offline" and detail["messages"] == []
