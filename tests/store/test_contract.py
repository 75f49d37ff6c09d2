"""The StateStore contract, run against every backend.

A new backend joins by adding a factory to ``BACKENDS``; the tests themselves never name a
backend. Methods are async; each test drives them with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from progressive_cli.store import open_store
from progressive_cli.store.base import Event, Execution, StateStore, StepRecord

run = asyncio.run

BACKENDS: dict[str, Callable[[Path], StateStore]] = {
    "sqlite": lambda tmp_path: open_store("sqlite:///state.db", tmp_path),
}
# Where each backend reads the clock, so lease and queue tests can move time without sleeping.
CLOCKS: dict[str, str] = {
    "sqlite": "progressive_cli.store.sqlite.now",
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(backend: str, tmp_path: Path) -> Iterator[StateStore]:
    s = BACKENDS[backend](tmp_path)
    yield s
    run(s.close())


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.25

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock(backend: str, monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(CLOCKS[backend], c)
    return c


def make_execution(id: str = "e1", **overrides: Any) -> Execution:
    values: dict[str, Any] = {
        "id": id,
        "workflow": "wf",
        "status": "queued",
        "inputs": {},
        "definition": {"id": "wf", "steps": []},
        "created_at": 1000.0,
        "updated_at": 1000.0,
    }
    values.update(overrides)
    return Execution(**values)


def all_events(store: StateStore) -> list[Event]:
    return run(store.list_events(limit=10_000))


RICH_JSON = {
    "text": "héllo ✓ \"quoted\" \n newline",
    "int": 3,
    "big": 2**53 + 1,
    "float": 0.1 + 0.2,
    "neg": -1.5e-7,
    "true": True,
    "false": False,
    "none": None,
    "zero": 0,
    "empty_str": "",
    "empty_list": [],
    "empty_obj": {},
    "nested": {"list": [1, "two", {"three": [None, True, 2.5]}]},
}


# --- executions ---------------------------------------------------------------------------------------
def test_create_get_round_trips_every_field(store):
    execution = Execution(
        id="0123abcd",
        workflow="strength-cycle",
        status="waiting",
        inputs=RICH_JSON,
        definition={"id": "strength-cycle", "steps": [{"id": "a", "type": "agent", "retry": {"max": 3}}]},
        outputs={"report": RICH_JSON, "n": 1.25},
        error={"kind": "timeout", "message": "step took 30.5s", "details": None},
        parent_id="parent01",
        parent_step="call/child[0]",
        created_at=1_700_000_000.123456,
        started_at=1_700_000_001.5,
        finished_at=1_700_000_002.000001,
        updated_at=1_700_000_003.75,
        wake_at=1_700_000_100.0,
        deadline=1_700_003_600.5,
        owner="host:1234:abcd",
        lease_until=1_700_000_030.25,
        cancel_requested=True,
    )
    run(store.create_execution(execution))
    got = run(store.get_execution("0123abcd"))
    assert got == execution
    assert got is not execution
    assert got.cancel_requested is True
    assert isinstance(got.created_at, float)


def test_defaults_round_trip_as_none_and_false(store):
    execution = make_execution(inputs={"weeks": 4})
    run(store.create_execution(execution))
    got = run(store.get_execution("e1"))
    assert got == execution
    for name in ("outputs", "error", "parent_id", "parent_step", "started_at", "finished_at", "wake_at",
                 "deadline", "owner", "lease_until"):
        assert getattr(got, name) is None, name
    assert got.cancel_requested is False


def test_get_missing_execution_is_none(store):
    assert run(store.get_execution("nope")) is None


def test_update_execution_round_trips_every_field(store, clock):
    original = make_execution(outputs={"old": 1}, error={"kind": "x"}, owner="me", lease_until=5.0)
    run(store.create_execution(original))
    changes: dict[str, Any] = {
        "workflow": "other",
        "status": "completed",
        "inputs": {"weeks": 0, "flag": False, "name": ""},
        "definition": {"id": "other", "steps": [1, 2.5, None]},
        "outputs": RICH_JSON,
        "error": None,
        "parent_id": "p",
        "parent_step": "s",
        "created_at": 1.5,
        "started_at": 2.25,
        "finished_at": 3.125,
        "updated_at": 4.0625,
        "wake_at": None,
        "deadline": 99.5,
        "owner": None,
        "lease_until": None,
        "cancel_requested": True,
    }
    run(store.update_execution("e1", **changes))
    assert run(store.get_execution("e1")) == replace(original, **changes)

    # falsy JSON values are stored as values, not as NULL
    run(store.update_execution("e1", outputs={}, inputs={}, cancel_requested=False))
    got = run(store.get_execution("e1"))
    assert got.outputs == {}
    assert got.inputs == {}
    assert got.cancel_requested is False


def test_update_execution_sets_updated_at_unless_given(store, clock):
    run(store.create_execution(make_execution()))
    clock.advance(10)
    run(store.update_execution("e1", status="running"))
    got = run(store.get_execution("e1"))
    assert got.status == "running"
    assert got.updated_at == pytest.approx(clock.t)
    assert got.created_at == 1000.0


def test_update_execution_rejects_unknown_fields(store):
    run(store.create_execution(make_execution()))
    with pytest.raises(ValueError, match="bogus"):
        run(store.update_execution("e1", events=[Event(type="workflow.x", data={})], status="failed", bogus=1))
    assert run(store.get_execution("e1")) == make_execution()
    assert all_events(store) == []


def test_cancel_requested(store):
    run(store.create_execution(make_execution()))
    assert run(store.cancel_requested("e1")) is False
    run(store.update_execution("e1", cancel_requested=True))
    assert run(store.cancel_requested("e1")) is True
    assert run(store.cancel_requested("nope")) is False


def test_find_execution_by_prefix(store):
    ids = ["abc123", "abc456", "abd789", "a%c000", "a_c000", "aXc000", "ABC999", "b"]
    for i, execution_id in enumerate(ids):
        run(store.create_execution(make_execution(execution_id, created_at=1000.0 + i)))

    def found(prefix: str) -> list[str]:
        return sorted(e.id for e in run(store.find_execution(prefix)))

    assert found("abc") == ["abc123", "abc456"]
    assert found("ab") == ["abc123", "abc456", "abd789"]
    assert found("abc456") == ["abc456"]
    assert found("abc4567") == []
    assert found("zzz") == []
    # % and _ are literal characters, never wildcards
    assert found("a%") == ["a%c000"]
    assert found("a_") == ["a_c000"]
    assert found("%") == []
    assert found("_") == []
    assert found("a%c") == ["a%c000"]
    # prefixes are case-sensitive (ids are lowercase hex)
    assert found("ABC") == ["ABC999"]
    assert found("Abc") == []
    execution = run(store.find_execution("abd"))[0]
    assert execution == make_execution("abd789", created_at=1002.0)


def test_list_executions_filters_and_order(store):
    specs = [
        ("r1", "alpha", "completed"),
        ("r2", "beta", "running"),
        ("r3", "alpha", "failed"),
        ("r4", "alpha", "running"),
        ("r5", "beta", "queued"),
        ("r6", "alpha", "completed"),
    ]
    for i, (execution_id, workflow, status) in enumerate(specs):
        run(store.create_execution(make_execution(execution_id, workflow=workflow, status=status,
                                                  created_at=1000.0 + i)))

    def ids(**kwargs: Any) -> list[str]:
        return [e.id for e in run(store.list_executions(**kwargs))]

    assert ids() == ["r6", "r5", "r4", "r3", "r2", "r1"]
    assert ids(workflow="alpha") == ["r6", "r4", "r3", "r1"]
    assert ids(workflow="gamma") == []
    assert ids(statuses=["running"]) == ["r4", "r2"]
    assert ids(statuses=["completed", "failed"]) == ["r6", "r3", "r1"]
    assert ids(workflow="alpha", statuses=["running", "queued"]) == ["r4"]
    assert ids(limit=2) == ["r6", "r5"]
    assert ids(workflow="alpha", limit=3) == ["r6", "r4", "r3"]
    assert all(isinstance(e, Execution) for e in run(store.list_executions()))


def test_list_executions_default_limit(store):
    for i in range(55):
        run(store.create_execution(make_execution(f"x{i:02d}", created_at=float(i))))
    listed = run(store.list_executions())
    assert len(listed) == 50
    assert listed[0].id == "x54"


# --- events written with state changes ---------------------------------------------------------------
def test_create_writes_its_events(store):
    event = Event(type="workflow.started", data={"inputs": {"a": 1}}, execution_id="e1", subject="e1")
    run(store.create_execution(make_execution(), events=[event]))
    [stored] = all_events(store)
    assert stored.id == event.id
    assert stored.type == "workflow.started"
    assert stored.execution_id == "e1"
    assert stored.data == {"inputs": {"a": 1}}


def test_failed_create_writes_no_event(store):
    run(store.create_execution(make_execution(status="running"),
                               events=[Event(type="workflow.started", data={}, execution_id="e1")]))
    with pytest.raises(Exception):  # noqa: B017 - the exception type is backend-specific
        run(store.create_execution(make_execution(status="queued"),
                                   events=[Event(type="workflow.started", data={"again": True}, execution_id="e1")]))
    assert [e.data for e in all_events(store)] == [{}]
    assert run(store.get_execution("e1")).status == "running"
    # the store is still usable after the failed transaction
    run(store.create_execution(make_execution("e2"), events=[Event(type="workflow.started", data={})]))
    assert len(all_events(store)) == 2


# An event that cannot be written: its type is required (NOT NULL on every backend).
def broken_event() -> Event:
    return Event(type=None, data={})  # type: ignore[arg-type]


def test_update_writes_its_events_atomically(store):
    run(store.create_execution(make_execution(), events=[Event(type="workflow.started", data={})]))
    done = Event(type="workflow.completed", data={"ok": True}, execution_id="e1")
    run(store.update_execution("e1", events=[done], status="completed"))
    assert [e.type for e in all_events(store)] == ["workflow.started", "workflow.completed"]

    # the update fails (workflow is required): its event is not written
    with pytest.raises(Exception):  # noqa: B017 - the exception type is backend-specific
        run(store.update_execution("e1", events=[Event(type="workflow.failed", data={})], workflow=None))
    assert len(all_events(store)) == 2
    # an event cannot be written: the update is undone too
    with pytest.raises(Exception):  # noqa: B017
        run(store.update_execution("e1", events=[Event(type="workflow.failed", data={}), broken_event()],
                                   status="failed"))
    assert run(store.get_execution("e1")).status == "completed"
    assert len(all_events(store)) == 2


def test_save_step_writes_its_events_atomically(store):
    run(store.create_execution(make_execution()))
    started = Event(type="step.started", data={"key": "a"}, execution_id="e1")
    run(store.save_step(StepRecord("e1", "a", "a", "agent", "running"), events=[started]))
    assert [e.type for e in all_events(store)] == ["step.started"]

    with pytest.raises(Exception):  # noqa: B017
        run(store.save_step(StepRecord("e1", "b", "b", "agent", None),  # type: ignore[arg-type]
                            events=[Event(type="step.started", data={"key": "b"})]))
    with pytest.raises(Exception):  # noqa: B017
        run(store.save_step(StepRecord("e1", "a", "a", "agent", "completed", output=1),
                            events=[Event(type="step.completed", data={}), broken_event()]))
    steps = run(store.load_steps("e1"))
    assert list(steps) == ["a"]
    assert steps["a"].status == "running"
    assert len(all_events(store)) == 1


def test_append_events_is_all_or_nothing(store):
    run(store.append_events([Event(type="x.a", data={})]))
    with pytest.raises(Exception):  # noqa: B017
        run(store.append_events([Event(type="x.b", data={}), broken_event(), Event(type="x.c", data={})]))
    assert [e.type for e in all_events(store)] == ["x.a"]


# --- reading events ----------------------------------------------------------------------------------
@pytest.fixture
def events(store) -> list[Event]:
    written = [
        Event(type="workflow.started", data={"n": 0}, execution_id="e1", subject="e1", time=1000.5),
        Event(type="step.started", data={"n": 1}, execution_id="e1", subject="a"),
        Event(type="step.completed", data={"n": 2}, execution_id="e1", subject="a"),
        Event(type="workflow.started", data={"n": 3}, execution_id="e2"),
        Event(type="stepper.noise", data={"n": 4}, execution_id="e2"),
        Event(type="Step.shouting", data={"n": 5}),
        Event(type="workflow.completed", data={"n": 6}, execution_id="e1", source="progressive/test"),
        Event(type="work_flow.odd", data={"n": 7}),
        Event(type="workXflow.odd", data={"n": 8}),
    ]
    run(store.append_events(written[:3]))
    for event in written[3:]:
        run(store.append_events([event]))
    return written


def n(events: list[Event]) -> list[int]:
    return [e.data["n"] for e in events]


def test_list_events_round_trip_and_order(store, events):
    listed = all_events(store)
    assert n(listed) == list(range(9))
    seqs = [e.seq for e in listed]
    assert all(isinstance(s, int) for s in seqs)
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    for written, read in zip(events, listed, strict=True):
        assert replace(read, seq=None) == written


def test_list_events_after_seq(store, events):
    listed = all_events(store)
    assert n(run(store.list_events(after_seq=listed[2].seq))) == [3, 4, 5, 6, 7, 8]
    assert run(store.list_events(after_seq=listed[-1].seq)) == []
    assert n(run(store.list_events(after_seq=0))) == list(range(9))


def test_list_events_by_execution(store, events):
    assert n(run(store.list_events(execution_id="e1"))) == [0, 1, 2, 6]
    assert n(run(store.list_events(execution_id="e2"))) == [3, 4]
    assert run(store.list_events(execution_id="nope")) == []


def test_list_events_by_type_prefix(store, events):
    assert n(run(store.list_events(type_prefix="workflow.*"))) == [0, 3, 6]
    assert n(run(store.list_events(type_prefix="workflow."))) == [0, 3, 6]
    assert n(run(store.list_events(type_prefix="step."))) == [1, 2]  # not stepper.*, not Step.*
    assert n(run(store.list_events(type_prefix="step.completed"))) == [2]
    assert n(run(store.list_events(type_prefix="step"))) == [1, 2, 4]
    assert n(run(store.list_events(type_prefix="work_"))) == [7]  # "_" is not a wildcard
    assert n(run(store.list_events(type_prefix="work%"))) == []
    assert n(run(store.list_events(type_prefix="*"))) == list(range(9))


def test_list_events_filters_combine_with_limit(store, events):
    assert n(run(store.list_events(limit=4))) == [0, 1, 2, 3]
    assert n(run(store.list_events(execution_id="e1", type_prefix="workflow.*"))) == [0, 6]
    first = all_events(store)[0]
    assert n(run(store.list_events(after_seq=first.seq, execution_id="e1", limit=2))) == [1, 2]
    assert n(run(store.list_events(after_seq=first.seq, type_prefix="workflow.", limit=1))) == [3]


def test_list_events_default_limit(store):
    run(store.append_events([Event(type="x", data={"i": i}) for i in range(120)]))
    listed = run(store.list_events())
    assert len(listed) == 100
    assert listed[0].data == {"i": 0}


def test_cloudevent_shape(store, events):
    stored = all_events(store)[0]
    ce = stored.cloudevent()
    assert ce == {
        "specversion": "1.0",
        "id": events[0].id,
        "type": "workflow.started",
        "source": "progressive",
        "subject": "e1",
        "time": "1970-01-01T00:16:40.500+00:00",
        "datacontenttype": "application/json",
        "data": {"n": 0},
        "seq": stored.seq,
    }
    later = all_events(store)[1].cloudevent()
    parsed = datetime.fromisoformat(later["time"])
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0
    assert abs(parsed.timestamp() - events[1].time) < 0.001


# --- steps -------------------------------------------------------------------------------------------
def test_save_and_load_steps_round_trip(store):
    run(store.create_execution(make_execution()))
    run(store.create_execution(make_execution("e2")))
    records = [
        StepRecord("e1", "prepare/progress/one_rep_max[2]/estimate", "estimate", "agent", "completed",
                   attempt=3, input={"weights": [100, 102.5], "ok": True}, output=RICH_JSON,
                   error=None, started_at=1.5, finished_at=2.75, wake_at=None),
        StepRecord("e1", "wait", "wait", "wait", "waiting", input="text input", output=None,
                   started_at=3.0, wake_at=1_700_000_000.5),
        StepRecord("e1", "zero", "zero", "transform", "failed", input=0, output=False,
                   error={"kind": "validation", "message": "bad"}),
        StepRecord("e1", "list", "list", "transform", "skipped", input=[1, None, "x"], output=""),
        StepRecord("e2", "only", "only", "agent", "running"),
    ]
    for record in records:
        run(store.save_step(record))
    loaded = run(store.load_steps("e1"))
    assert loaded == {r.key: r for r in records[:4]}
    assert loaded["zero"].input == 0 and loaded["zero"].output is False
    assert loaded["list"].output == ""
    assert run(store.load_steps("e2")) == {"only": records[4]}
    assert run(store.load_steps("nope")) == {}


def test_save_step_replaces(store):
    run(store.create_execution(make_execution()))
    run(store.save_step(StepRecord("e1", "a", "a", "agent", "running", input={"x": 1}, started_at=1.0)))
    second = StepRecord("e1", "a", "a", "agent", "failed", attempt=2, error={"kind": "timeout"},
                        started_at=2.0, finished_at=3.0)
    run(store.save_step(second))
    assert run(store.load_steps("e1")) == {"a": second}  # input was replaced by None, not kept


def test_delete_steps(store):
    run(store.create_execution(make_execution()))
    run(store.create_execution(make_execution("e2")))
    for key in ("a", "b", "c"):
        run(store.save_step(StepRecord("e1", key, key, "agent", "completed")))
        run(store.save_step(StepRecord("e2", key, key, "agent", "completed")))
    run(store.delete_steps("e1", ["a", "c", "missing"]))
    assert list(run(store.load_steps("e1"))) == ["b"]
    assert sorted(run(store.load_steps("e2"))) == ["a", "b", "c"]
    run(store.delete_steps("e1", []))
    assert list(run(store.load_steps("e1"))) == ["b"]


def test_completed_steps_of_many_runs_in_one_read(store):
    for eid in ("e1", "e2", "e3"):
        run(store.create_execution(make_execution(eid, status="running")))
    run(store.save_step(StepRecord("e1", "a", "a", "transform", "completed")))
    run(store.save_step(StepRecord("e1", "b", "b", "transform", "running")))
    run(store.save_step(StepRecord("e1", "p/x[0]", "x", "transform", "completed")))
    run(store.save_step(StepRecord("e2", "a", "a", "transform", "failed")))
    assert run(store.completed_steps(["e1", "e2", "e3", "missing"])) == {
        "e1": {"a", "p/x[0]"}, "e2": set(), "e3": set(), "missing": set()}
    assert run(store.completed_steps([])) == {}
    many = [f"m{n}" for n in range(1200)]  # more ids than one statement binds at once
    for eid in many:
        run(store.create_execution(make_execution(eid)))
    run(store.save_step(StepRecord("m1199", "only", "only", "transform", "completed")))
    found = run(store.completed_steps(many))
    assert len(found) == 1200 and found["m1199"] == {"only"} and found["m0"] == set()


def test_execution_counts_by_status(store):
    assert run(store.execution_counts()) == {}
    for n, status in enumerate(["queued", "running", "running", "failed", "completed", "completed", "completed"]):
        run(store.create_execution(make_execution(f"e{n}", status=status, workflow=f"wf{n % 2}")))
    assert run(store.execution_counts()) == {"queued": 1, "running": 2, "failed": 1, "completed": 3}
    by_workflow: dict[str, int] = {}
    for row in run(store.counts())["executions"]:
        by_workflow[row["status"]] = by_workflow.get(row["status"], 0) + row["count"]
    assert by_workflow == run(store.execution_counts())  # the same figures as the monitoring totals


# --- execution leases --------------------------------------------------------------------------------
def test_claim_execution_lease(store, clock):
    run(store.create_execution(make_execution()))
    assert run(store.claim_execution("e1", "A", 10)) is True  # free
    got = run(store.get_execution("e1"))
    assert got.owner == "A"
    assert got.lease_until == pytest.approx(clock.t + 10)

    clock.advance(5)
    assert run(store.claim_execution("e1", "B", 10)) is False  # held by a live owner
    assert run(store.get_execution("e1")).owner == "A"
    assert run(store.claim_execution("e1", "A", 10)) is True  # the owner renews
    assert run(store.get_execution("e1")).lease_until == pytest.approx(clock.t + 10)

    clock.advance(9)
    assert run(store.claim_execution("e1", "B", 10)) is False  # renewed lease still live
    clock.advance(2)
    assert run(store.claim_execution("e1", "B", 0.5)) is True  # expired: a new owner takes over
    assert run(store.get_execution("e1")).owner == "B"
    assert run(store.claim_execution("e1", "A", 10)) is False
    clock.advance(1)
    assert run(store.claim_execution("e1", "A", 10)) is True


def test_claim_execution_released_lease(store, clock):
    run(store.create_execution(make_execution(owner="A", lease_until=clock.t + 100)))
    assert run(store.claim_execution("e1", "B", 10)) is False
    run(store.update_execution("e1", owner=None, lease_until=None))
    assert run(store.claim_execution("e1", "B", 10)) is True


def test_take_over_from_a_dead_owner(store, clock):
    run(store.create_execution(make_execution()))
    assert run(store.claim_execution("e1", "dead", 100)) is True
    assert run(store.claim_execution("e1", "B", 10)) is False  # the lease is still live...
    assert run(store.take_over_execution("e1", "dead", "B", 10)) is True  # ...but its holder is known dead
    got = run(store.get_execution("e1"))
    assert (got.owner, got.lease_until) == ("B", pytest.approx(clock.t + 10))
    # C also saw "dead" holding it, but B got there first
    assert run(store.take_over_execution("e1", "dead", "C", 10)) is False
    assert run(store.get_execution("e1")).owner == "B"
    assert run(store.take_over_execution("nope", "dead", "C", 10)) is False


def test_claim_missing_execution(store, clock):
    assert run(store.claim_execution("nope", "A", 10)) is False


def test_claim_execution_with_fields_and_events(store, clock):
    """A queued run starts as it is claimed: fields and events only when the lease is taken."""
    run(store.create_execution(make_execution()))
    started = Event("workflow.started", {"workflow": "wf"}, subject="e1", execution_id="e1")
    assert run(store.claim_execution("e1", "A", 10, [started], status="running", started_at=clock.t)) is True
    got = run(store.get_execution("e1"))
    assert (got.status, got.started_at, got.owner) == ("running", clock.t, "A")
    assert [e.id for e in all_events(store)] == [started.id]
    other = Event("workflow.started", {"workflow": "wf"}, subject="e1", execution_id="e1")
    assert run(store.claim_execution("e1", "B", 10, [other], status="waiting")) is False  # A holds it
    assert run(store.get_execution("e1")).status == "running"
    assert [e.id for e in all_events(store)] == [started.id]
    assert run(store.claim_execution("e1", "A", 10, None, wake_at=5.0)) is True  # fields without events
    assert run(store.get_execution("e1")).wake_at == 5.0
    assert run(store.take_over_execution("e1", "A", "C", 10, [other], status="waiting")) is True
    got = run(store.get_execution("e1"))
    assert (got.status, got.owner) == ("waiting", "C")
    assert [e.id for e in all_events(store)] == [started.id, other.id]
    assert run(store.take_over_execution("e1", "A", "D", 10, [started], status="queued")) is False
    assert run(store.get_execution("e1")).status == "waiting"
    with pytest.raises(ValueError):
        run(store.claim_execution("e1", "C", 10, None, lease_until=1.0))  # the lease sets its own fields
    with pytest.raises(ValueError):
        run(store.claim_execution("e1", "C", 10, None, nonsense=1))


def test_create_execution_with_its_work_item(store, clock):
    """A queued run and its queue item are written in one transaction."""
    queued = Event("workflow.queued", {"workflow": "wf"}, subject="e1", execution_id="e1")
    item_id = run(store.create_execution(make_execution(), [queued], work=("run", {"execution": "e1"})))
    assert isinstance(item_id, str) and item_id
    (item,) = run(store.list_work())
    assert (item.id, item.kind, item.payload, item.leased_by) == (item_id, "run", {"execution": "e1"}, None)
    assert item.available_at == pytest.approx(clock.t)
    assert run(store.get_execution("e1")).status == "queued"
    assert [e.id for e in all_events(store)] == [queued.id]
    assert run(store.create_execution(make_execution("e2"))) is None  # no item without `work`
    with pytest.raises(Exception):  # noqa: B017 - the backend's own integrity error
        run(store.create_execution(make_execution(), work=("run", {"execution": "e1"})))  # e1 exists
    assert run(store.queue_depth()) == 1  # the failed call left no item behind


def test_update_execution_finishing_its_work_item(store, clock):
    """The run's final status and the deletion of its queue item go in one transaction."""
    run(store.create_execution(make_execution(status="running")))
    item_id = run(store.enqueue("run", {"execution": "e1"}))
    other = run(store.enqueue("run", {"execution": "e2"}))
    done = Event("workflow.completed", {"workflow": "wf"}, subject="e1", execution_id="e1")
    run(store.update_execution("e1", [done], finish_work=item_id, status="completed", outputs={"x": 1}))
    got = run(store.get_execution("e1"))
    assert (got.status, got.outputs) == ("completed", {"x": 1})
    assert [i.id for i in run(store.list_work())] == [other]
    assert [e.id for e in all_events(store)] == [done.id]
    run(store.update_execution("e1", finish_work=item_id, status="completed"))  # the item is gone: harmless
    assert run(store.queue_depth()) == 1
    with pytest.raises(ValueError):
        run(store.update_execution("e1", finish_work=other, nonsense=1))
    assert run(store.queue_depth()) == 1  # nothing written


# --- work queue --------------------------------------------------------------------------------------
def test_queue_claim_and_finish(store, clock):
    assert run(store.queue_depth()) == 0
    assert run(store.claim_work("w1", 30)) is None
    item_id = run(store.enqueue("run", {"workflow": "wf", "inputs": {"a": [1, 2]}}))
    assert isinstance(item_id, str) and item_id
    assert run(store.queue_depth()) == 1

    item = run(store.claim_work("w1", 30))
    assert item is not None
    assert (item.id, item.kind, item.payload) == (item_id, "run", {"workflow": "wf", "inputs": {"a": [1, 2]}})
    assert item.attempts == 1
    assert item.leased_by == "w1"
    assert item.lease_until == pytest.approx(clock.t + 30)
    assert item.available_at == pytest.approx(clock.t)

    assert run(store.claim_work("w2", 30)) is None  # leased: nobody else gets it
    assert run(store.claim_work("w1", 30)) is None  # nor the same worker twice
    assert run(store.queue_depth()) == 1  # leased items still count

    run(store.finish_work(item_id))
    assert run(store.queue_depth()) == 0
    clock.advance(60)
    assert run(store.claim_work("w2", 30)) is None
    run(store.finish_work(item_id))  # finishing twice is harmless


def test_queue_each_item_to_one_worker(store, clock):
    ids = {run(store.enqueue("run", {"i": i})) for i in range(5)}
    claimed = []
    for turn in range(12):
        item = run(store.claim_work(f"w{turn % 3}", 30))
        if item is not None:
            claimed.append(item.id)
    assert sorted(claimed) == sorted(ids)


def test_queue_not_before_available_at(store, clock):
    later = run(store.enqueue("wake", {"x": 1}, available_at=clock.t + 5))
    assert run(store.queue_depth()) == 1
    assert run(store.claim_work("w1", 30)) is None
    clock.advance(4.9)
    assert run(store.claim_work("w1", 30)) is None
    clock.advance(0.1)
    item = run(store.claim_work("w1", 30))
    assert item is not None and item.id == later


def test_queue_oldest_available_first(store, clock):
    b = run(store.enqueue("k", {"n": "b"}, available_at=clock.t - 10))
    a = run(store.enqueue("k", {"n": "a"}, available_at=0.0))
    c = run(store.enqueue("k", {"n": "c"}))
    order = [run(store.claim_work("w", 30)).id for _ in range(3)]
    assert order == [a, b, c]


def test_queue_expired_lease_is_reclaimed_and_attempts_counted(store, clock):
    item_id = run(store.enqueue("run", {}))
    first = run(store.claim_work("w1", 10))
    assert first.attempts == 1
    clock.advance(9)
    assert run(store.claim_work("w2", 10)) is None
    clock.advance(2)
    second = run(store.claim_work("w2", 10))
    assert second is not None
    assert (second.id, second.attempts, second.leased_by) == (item_id, 2, "w2")
    assert run(store.claim_work("w1", 10)) is None
    clock.advance(11)
    third = run(store.claim_work("w3", 10))
    assert (third.id, third.attempts) == (item_id, 3)
    run(store.finish_work(item_id))
    assert run(store.queue_depth()) == 0


# --- operator controls and daemons ----------------------------------------------------------------------
def test_controls_round_trip_and_are_claimed_once(store, clock):
    first = run(store.add_control("breaker.reset", "integration:api", {}, "cli:me@h:1",
                                  [Event("control.requested", {"kind": "breaker.reset"})]))
    clock.advance(1)
    second = run(store.add_control("dlq.replay", "all", {"ids": None}, "cli:me@h:1"))
    assert [e.type for e in all_events(store)] == ["control.requested"]
    rows = run(store.controls())
    assert [r["id"] for r in rows] == [second, first]  # newest first
    assert rows[1] == {"id": first, "kind": "breaker.reset", "target": "integration:api", "payload": {},
                            "status": "pending", "requested_by": "cli:me@h:1", "created_at": clock.t - 1,
                            "applied_by": None, "claimed_at": None, "applied_at": None, "result": None,
                            "error": None}
    taken = run(store.claim_controls("daemon:a", kinds=["breaker.reset", "dlq.replay"]))
    assert [r["id"] for r in taken] == [first, second]  # oldest first
    assert {r["status"] for r in taken} == {"applying"} and {r["applied_by"] for r in taken} == {"daemon:a"}
    assert run(store.claim_controls("cli:b")) == []  # nobody else gets them
    assert not run(store.finish_control(first, "cli:b", result={"x": 1}))  # not theirs
    clock.advance(2)
    assert run(store.finish_control(first, "daemon:a", result={"state": "closed"},
                                    events=[Event("control.applied", {})]))
    assert run(store.finish_control(second, "daemon:a", result={"exit_code": 3}, error="boom"))
    done = {r["id"]: r for r in run(store.controls(statuses=["applied", "failed"]))}
    assert done[first]["status"] == "applied" and done[first]["result"] == {"state": "closed"}
    assert done[first]["applied_at"] == clock.t
    assert done[second]["status"] == "failed" and done[second]["error"] == "boom"
    assert [e.type for e in all_events(store)] == ["control.requested", "control.applied"]
    assert not run(store.finish_control(first, "daemon:a", result={}))  # once


def test_claim_controls_filters_and_takes_over_a_dead_appliers_claim(store, clock):
    reload_id = run(store.add_control("daemon.reload", "daemon", {}, "cli:x"))
    cancel_id = run(store.add_control("execution.cancel", "e1", {}, "cli:x"))
    assert [r["id"] for r in run(store.claim_controls("cli:y", kinds=["execution.cancel"]))] == [cancel_id]
    assert run(store.claim_controls("cli:y", ids=[cancel_id])) == []
    clock.advance(30)
    assert run(store.claim_controls("daemon:z", ids=[cancel_id], stale_after=60)) == []
    clock.advance(31)  # cli:y died holding it
    assert [r["id"] for r in run(store.claim_controls("daemon:z", stale_after=60))] == [reload_id, cancel_id]
    assert not run(store.finish_control(cancel_id, "cli:y", result={}))
    assert run(store.finish_control(cancel_id, "daemon:z", result={}))


def test_daemons_heartbeat_rows(store, clock):
    assert run(store.daemons()) == []
    run(store.save_daemon("d1", "host", 42, clock.t, {"jobs": {"health": {"runs": 1}}}))
    clock.advance(5)
    run(store.save_daemon("d1", "host", 42, clock.t - 5, {"jobs": {"health": {"runs": 2}}}))
    clock.advance(5)
    run(store.save_daemon("d2", "other", 7, clock.t, {}))
    run(store.save_daemon("d1", "host", 42, clock.t - 10, {"jobs": {}}, stopped=True))
    rows = run(store.daemons())
    assert [r["id"] for r in rows] == ["d2", "d1"]
    assert rows[1] == {"id": "d1", "host": "host", "pid": 42, "started_at": clock.t - 10, "seen_at": clock.t,
                       "stopped_at": clock.t, "info": {"jobs": {}}}
    assert rows[0]["stopped_at"] is None and rows[0]["info"] == {}


def test_queue_claim_a_batch(store, clock):
    ids = [run(store.enqueue("run", {"i": i}, available_at=clock.t - 10 + i)) for i in range(5)]
    later = run(store.enqueue("run", {"i": 9}, available_at=clock.t + 5))
    assert run(store.claim_work_batch("w1", 30, 0)) == []
    first = run(store.claim_work_batch("w1", 30, 3))
    assert [i.id for i in first] == ids[:3]  # oldest available first
    assert all((i.leased_by, i.attempts, i.kind) == ("w1", 1, "run") for i in first)
    assert [i.payload for i in first] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert all(i.lease_until == pytest.approx(clock.t + 30) for i in first)
    second = run(store.claim_work_batch("w2", 30, 10))
    assert [i.id for i in second] == ids[3:]  # what is left and available: not the leased, not the later one
    assert run(store.claim_work_batch("w3", 30, 10)) == []
    leases = {i.id: i.leased_by for i in run(store.list_work())}
    assert leases == {**{i: "w1" for i in ids[:3]}, **{i: "w2" for i in ids[3:]}, later: None}
    clock.advance(31)  # every lease lapsed, the later item is due
    again = run(store.claim_work_batch("w3", 30, 10))
    assert [i.id for i in again] == [*ids, later]
    assert [i.attempts for i in again] == [2, 2, 2, 2, 2, 1]
