"""Semantics of the durable engine, run in-process against a real SQLite store with a fake clock.

Every test uses the `h` harness (tests/engine/conftest.py): `clock.sleep` never really sleeps, it
records the delay and moves the fake clock on. Only the timeout tests use tiny real timeouts,
because asyncio.timeout runs on the event loop's own clock.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from typing import Any

import pytest

from progressive_cli.config.workflows import RetryPolicy
from progressive_cli.controls import retry_plan
from progressive_cli.engine.executor import AgentRequest
from progressive_cli.errors import InputError, StepError

Harness = Any  # tests/engine/conftest.py
T0 = 1_767_225_600.0  # the fake clock's start: 2026-01-01T00:00:00Z




class CrashOnce:
    """An agent handler that dies as the process would (a non-StepError escapes the engine and leaves
    the run `running`) until `on` is set False; then it answers with `answer(request)`."""

    def __init__(self, answer: Any) -> None:
        self.on = True
        self.answer = answer

    def __call__(self, request: AgentRequest) -> Any:
        if self.on:
            raise RuntimeError("process died")
        return self.answer(request)

def wf(name: str, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "steps": steps, **extra}


def transform(id_: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"id": id_, "type": "transform", "value": value, **extra}


def call(id_: str, method: str | None = None, params: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": id_, "type": "agent_call", "agent": "bot", "method": method or id_, "params": params or {}, **extra}


def fail(kind: str, times: int | None = None) -> Any:
    """A handler that raises StepError(kind) on its first `times` calls (always when None)."""
    seen = {"n": 0}

    def handler(request: AgentRequest) -> Any:
        seen["n"] += 1
        if times is None or seen["n"] <= times:
            raise StepError(kind, f"{request.method} failed ({seen['n']})")
        return {"ok": seen["n"]}

    return handler


# --- transform ------------------------------------------------------------------------------------------
def test_transform_keeps_types_and_interpolates_text(h: Harness) -> None:
    h.add(wf("t", [
        transform("typed", {
            "n": "${{ inputs.n }}", "i": "${{ inputs.i }}", "flag": "${{ inputs.n > 2 }}",
            "xs": "${{ inputs.xs }}", "obj": "${{ {'a': inputs.i} }}", "nothing": "${{ inputs.none }}",
            "literal": 7, "nested": ["${{ inputs.i * 2 }}", {"deep": "${{ inputs.xs[1] }}"}],
        }),
        transform("text", "Hi ${{ inputs.who }}: n=${{ inputs.n }} i=${{ inputs.i }} xs=${{ inputs.xs }} "
                          "t=${{ 2000.0 }} none=[${{ inputs.none }}] ok=${{ inputs.n > 2 }}"),
    ], inputs={"n": {"type": "number", "default": 2.5}, "i": {"type": "integer", "default": 4},
               "who": {"type": "string", "default": "Ada"}, "xs": {"type": "list", "default": [1, 2]},
               "none": {"type": "string"}},
        outputs={"typed": "${{ steps.typed.output }}", "text": "${{ steps.text.output }}",
                 "n": "${{ steps.typed.output.n }}"}))
    result = h.run("t")
    assert result.status == "completed", result.error
    assert result.outputs == {
        "typed": {"n": 2.5, "i": 4, "flag": True, "xs": [1, 2], "obj": {"a": 4}, "nothing": None, "literal": 7,
                  "nested": [8, {"deep": 2}]},
        "text": "Hi Ada: n=2.5 i=4 xs=[1, 2] t=2000 none=[] ok=true",
        "n": 2.5,
    }
    assert isinstance(result.outputs["typed"]["i"], int) and isinstance(result.outputs["typed"]["flag"], bool)
    # the stored record round-trips the same typed value
    assert h.steps(result.id)["typed"].output == result.outputs["typed"]


def test_transform_expression_error_is_step_error(h: Harness) -> None:
    h.add(wf("t", [transform("bad", "${{ 1 / inputs.zero }}")], inputs={"zero": {"type": "integer", "default": 0}}))
    result = h.run("t")
    assert result.status == "failed"
    assert result.error["kind"] == "STEP_ERROR" and result.error["step"] == "bad"
    assert "division by zero" in result.error["message"] and "step 'bad'" in result.error["message"]


def test_output_and_vars_and_if_skip(h: Harness) -> None:
    h.add(wf("t", [
        transform("a", 5, output="five"),
        transform("skipped", "never", **{"if": "inputs.flag"}, output="nope"),
        transform("b", "${{ [vars.five, vars.nope, steps.skipped.status, steps.skipped.output] }}"),
    ], inputs={"flag": {"type": "boolean", "default": False}}, outputs={"b": "${{ steps.b.output }}"}))
    result = h.run("t")
    assert result.outputs == {"b": [5, None, "skipped", None]}
    records = h.steps(result.id)
    assert records["skipped"].status == "skipped"
    assert "step.started" not in [e.type for e in h.events(result.id) if e.subject == "skipped"]


# --- condition ------------------------------------------------------------------------------------------
COND = wf("cond", [
    {"id": "check", "type": "condition", "condition": "inputs.n > 10",
     "then": [transform("big", "big ${{ inputs.n }}")],
     "else": [transform("small", "small"), transform("small2", "${{ steps.small.output }}!")]},
], inputs={"n": {"type": "integer", "required": True}},
    outputs={"check": "${{ steps.check.output }}", "big": "${{ steps.big.status }}",
             "small": "${{ steps.small.status }}"})


@pytest.mark.parametrize(("n", "expected", "ran", "not_ran"), [
    (11, "big 11", {"check", "big"}, {"small", "small2"}),
    (3, "small!", {"check", "small", "small2"}, {"big"}),
])
def test_condition_then_else(h: Harness, n: int, expected: str, ran: set[str], not_ran: set[str]) -> None:
    h.add(COND)
    result = h.run("cond", {"n": n})
    assert result.status == "completed"
    assert result.outputs["check"] == expected  # the output of the branch's last step
    records = h.steps(result.id)
    assert set(records) == ran
    assert not_ran.isdisjoint(records)


SWITCH = wf("switch", [
    {"id": "route", "type": "condition", "branches": [
        {"when": "inputs.level == 'critical'", "steps": [transform("page", "paged")]},
        {"when": "inputs.level in ['critical', 'warning']", "steps": [transform("warn", "warned")]},
    ], "else": [transform("log", "logged")]},
], inputs={"level": {"type": "string", "required": True}}, outputs={"route": "${{ steps.route.output }}"})


@pytest.mark.parametrize(("level", "expected"), [("critical", "paged"), ("warning", "warned"), ("info", "logged")])
def test_condition_branches_first_match_then_else(h: Harness, level: str, expected: str) -> None:
    h.add(SWITCH)
    result = h.run("switch", {"level": level})
    assert result.outputs == {"route": expected}  # 'critical' matches both: the first wins
    assert len(h.steps(result.id)) == 2


def test_condition_branches_without_else_outputs_null(h: Harness) -> None:
    h.add(wf("s", [{"id": "route", "type": "condition",
                    "branches": [{"when": "false", "steps": [transform("x", 1)]}]}],
             outputs={"route": "${{ steps.route.output }}"}))
    result = h.run("s")
    assert result.status == "completed" and result.outputs == {"route": None}


def test_condition_branch_is_stored_and_reused_on_replay(h: Harness) -> None:
    """The branch a condition took is a decision: a resumed run takes it again without re-evaluating."""
    h.add(wf("c", [
        {"id": "check", "type": "condition", "condition": "inputs.n > 10",
         "then": [call("big")], "else": [call("small")]},
    ], inputs={"n": {"type": "integer", "default": 50}}))
    crash = CrashOnce(lambda _r: "big")

    h.agents.on("big", crash)
    with pytest.raises(RuntimeError):
        h.run("c")
    execution = h.executions()[0]
    assert h.steps(execution.id)["check"].status == "running"
    # tamper with the stored inputs: re-evaluating the condition would now pick `else`
    asyncio.run(h.store.update_execution(execution.id, inputs={"n": 1}))
    crash.on = False
    result = h.resume(execution.id)
    assert result.status == "completed"
    assert h.agents.count("small") == 0 and h.agents.count("big") == 2


# --- parallel -------------------------------------------------------------------------------------------
def test_parallel_fail_fast_cancels_siblings_and_fails(h: Harness) -> None:
    cancelled: list[str] = []

    async def slow(_r: AgentRequest) -> Any:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise
        return "late"

    h.agents.on("slow", slow)
    h.agents.on("boom", fail("API_ERROR"))
    h.add(wf("p", [
        {"id": "par", "type": "parallel", "branches": {
            "a": [call("slow")],
            "b": [transform("first", 1), call("boom")],
        }},
        transform("after", "never"),
    ]))
    began = time.monotonic()
    result = h.run("p")
    assert time.monotonic() - began < 2
    assert result.status == "failed"
    assert result.error["kind"] == "API_ERROR" and result.error["step"] == "par/b/boom"
    assert cancelled == ["slow"]
    records = h.steps(result.id)
    assert records["par/b/first"].status == "completed"
    assert records["par/b/boom"].status == "failed"
    assert records["par/a/slow"].status == "running"  # interrupted, never completed
    assert records["par"].status == "failed"
    assert "after" not in records


def test_parallel_collect_all_reports_each_branch(h: Harness) -> None:
    h.agents.on("boom", fail("API_ERROR"))
    h.add(wf("p", [
        {"id": "par", "type": "parallel", "join": "collect_all", "branches": {
            "good": [transform("one", 1), transform("two", "${{ steps.one.output + 1 }}")],
            "bad": [call("boom")],
        }},
        transform("after", "${{ [steps.two.output, steps.boom.status, steps.boom.error.kind] }}"),
    ], outputs={"par": "${{ steps.par.output }}", "after": "${{ steps.after.output }}"}))
    result = h.run("p")
    assert result.status == "completed", result.error
    assert result.outputs == {"par": {"good": 2, "bad": None}, "after": [2, "failed", "API_ERROR"]}


def test_parallel_collect_all_fails_when_every_branch_fails(h: Harness) -> None:
    h.agents.on("boom", fail("API_ERROR"))
    h.agents.on("bust", fail("NETWORK_ERROR"))
    h.add(wf("p", [{"id": "par", "type": "parallel", "join": "collect_all",
                    "branches": {"x": [call("boom")], "y": [call("bust")]}}]))
    result = h.run("p")
    assert result.status == "failed"
    assert result.error["kind"] == "STEP_ERROR" and result.error["step"] == "par"
    assert "every branch of 'par' failed" in result.error["message"]
    assert result.error["branches"]["x"]["kind"] == "API_ERROR"
    assert result.error["branches"]["y"]["kind"] == "NETWORK_ERROR"


def test_parallel_fan_out_combines_and_reports_who_succeeded(h: Harness) -> None:
    h.agents.on("boom", fail("API_ERROR"))
    h.add(wf("p", [
        {"id": "par", "type": "parallel", "join": "collect_all", "branches": {
            "npa": [call("n", "opinion", {"v": 2})],
            "wpa": [call("w", "opinion", {"v": 5})],
            "ema": [call("e", "boom")],
        }, "combine": "{'total': branches.npa.params.v + branches.wpa.params.v, 'succeeded': succeeded, "
                      "'failed': keys(failed), 'kind': failed.ema.kind}"},
    ], outputs={"par": "${{ steps.par.output }}"}))
    result = h.run("p")
    assert result.status == "completed", result.error
    assert result.outputs == {"par": {"total": 7, "succeeded": ["npa", "wpa"], "failed": ["ema"],
                                      "kind": "API_ERROR"}}


def test_parallel_min_success_fails_the_step_with_the_tally(h: Harness) -> None:
    h.agents.on("boom", fail("API_ERROR"))
    h.add(wf("p", [{"id": "par", "type": "parallel", "join": "collect_all", "min_success": 2,
                    "branches": {"x": [call("ok", "fine")], "y": [call("boom")], "z": [call("bust", "boom")]}}]))
    result = h.run("p")
    assert result.status == "failed"
    assert "'par' needs 2 successful branches, 1 succeeded" in result.error["message"]
    assert result.error["succeeded"] == ["x"] and sorted(result.error["branches"]) == ["y", "z"]


def test_parallel_branches_really_run_at_once(h: Harness) -> None:
    h.add(wf("p", [{"id": "par", "type": "parallel",
                    "branches": {"a": [call("a", "work")], "b": [call("b", "work")], "c": [call("c", "work")]}}]))
    assert h.run("p").status == "completed"
    assert h.agents.max_active == 3


# --- foreach --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_foreach_respects_concurrency_and_keeps_order(h: Harness, concurrency: int) -> None:
    async def work(r: AgentRequest) -> Any:
        for _ in range(20 - 3 * r.params["i"]):  # later items finish sooner
            await asyncio.sleep(0)
        return f"{r.params['i']}:{r.params['item']}"

    h.agents.on("work", work)
    h.add(wf("f", [{"id": "loop", "type": "foreach", "items": "inputs.xs", "as": "x", "concurrency": concurrency,
                    "steps": [call("do", "work", {"item": "${{ x }}", "i": "${{ x_index }}"}),
                              transform("shout", "${{ upper(steps.do.output) }}")]}],
             inputs={"xs": {"type": "list", "default": ["a", "b", "c", "d", "e", "f"]}},
             outputs={"loop": "${{ steps.loop.output }}"}))
    result = h.run("f")
    assert result.status == "completed", result.error
    assert result.outputs == {"loop": ["0:A", "1:B", "2:C", "3:D", "4:E", "5:F"]}
    assert h.agents.max_active == concurrency
    records = h.steps(result.id)
    inner = {k for k in records if k.startswith("loop[")}
    assert inner == {f"loop[{i}]/{s}" for i in range(6) for s in ("do", "shout")}
    assert records["loop"].input == {"items": ["a", "b", "c", "d", "e", "f"]}  # the items are a stored decision


def test_foreach_literal_items_default_name_and_index(h: Harness) -> None:
    h.add(wf("f", [{"id": "loop", "type": "foreach", "items": ["${{ inputs.a }}", 2],
                    "steps": [transform("pair", "${{ [item, item_index] }}")]}],
             inputs={"a": {"type": "string", "default": "one"}}, outputs={"loop": "${{ steps.loop.output }}"}))
    assert h.run("f").outputs == {"loop": [["one", 0], [2, 1]]}


def test_foreach_items_not_a_list_fails(h: Harness) -> None:
    h.add(wf("f", [{"id": "loop", "type": "foreach", "items": "inputs.n", "steps": [transform("x", 1)]}],
             inputs={"n": {"type": "integer", "default": 3}}))
    result = h.run("f")
    assert result.status == "failed" and result.error["kind"] == "STEP_ERROR"
    assert "items must be a list, got int" in result.error["message"]


def test_foreach_empty_list(h: Harness) -> None:
    h.add(wf("f", [{"id": "loop", "type": "foreach", "items": "[]", "steps": [transform("x", 1)]}],
             outputs={"loop": "${{ steps.loop.output }}"}))
    assert h.run("f").outputs == {"loop": []}


def test_foreach_failure_fails_fast(h: Harness) -> None:
    h.agents.on("work", lambda r: (_ for _ in ()).throw(StepError("API_ERROR", "no")) if r.params["i"] == 1 else "ok")
    h.add(wf("f", [{"id": "loop", "type": "foreach", "items": "[0, 1, 2, 3]",
                    "steps": [call("do", "work", {"i": "${{ item }}"})]}]))
    result = h.run("f")
    assert result.status == "failed" and result.error["step"] == "loop[1]/do"
    assert h.agents.count("work") == 2  # concurrency 1: item 2 and 3 never started


# --- nesting ------------------------------------------------------------------------------------------------
def test_parallel_foreach_condition_keys(h: Harness) -> None:
    h.add(wf("n", [
        {"id": "par", "type": "parallel", "branches": {
            "a": [transform("solo", "A")],
            "b": [{"id": "loop", "type": "foreach", "items": "[1, 2, 3]", "concurrency": 3, "steps": [
                {"id": "cond", "type": "condition", "condition": "item > 1",
                 "then": [transform("x", "${{ item * 10 }}")], "else": [transform("y", "low")]},
            ]}],
        }},
    ], outputs={"par": "${{ steps.par.output }}"}))
    result = h.run("n")
    assert result.status == "completed", result.error
    assert result.outputs == {"par": {"a": "A", "b": ["low", 20, 30]}}
    assert set(h.steps(result.id)) == {
        "par", "par/a/solo", "par/b/loop",
        "par/b/loop[0]/cond", "par/b/loop[0]/y",
        "par/b/loop[1]/cond", "par/b/loop[1]/x",
        "par/b/loop[2]/cond", "par/b/loop[2]/x",
    }
    completed = [e.data["key"] for e in h.events(result.id) if e.type == "step.completed"]
    assert len(completed) == len(set(completed)) == 9


# --- wait -----------------------------------------------------------------------------------------------
def test_wait_duration_inline_uses_the_injected_sleep(h: Harness) -> None:
    h.add(wf("w", [{"id": "pause", "type": "wait", "duration": "90s"}, transform("after", "done")],
             outputs={"pause": "${{ steps.pause.output }}"}))
    began = time.monotonic()
    result = h.run("w")
    assert time.monotonic() - began < 2
    assert result.status == "completed"
    assert h.clock.sleeps == [pytest.approx(90, abs=0.05)]
    wake_at = h.steps(result.id)["pause"].input["wake_at"]
    assert result.outputs["pause"]["waited_until"].startswith("2026-01-01T00:01:30")
    assert wake_at == pytest.approx(T0 + 90, abs=0.05)


@pytest.mark.parametrize("until", [
    "2026-01-01T01:00:00Z",                      # a literal ISO timestamp
    "'2026-01-01T01:00:00Z'",                    # the documented form: a bare expression, a string literal
    "inputs.at",                                 # a bare expression
    "${{ inputs.at }}",                          # a whole ${{ }}
    "${{ inputs.day }}T01:00:00+00:00",          # a template with text around
])
def test_wait_until(h: Harness, until: str) -> None:
    h.add(wf("w", [{"id": "pause", "type": "wait", "until": until}],
             inputs={"at": {"type": "string", "default": "2026-01-01T01:00:00Z"},
                     "day": {"type": "string", "default": "2026-01-01"}}, timeout="2h"))
    result = h.run("w")
    assert result.status == "completed", result.error
    assert h.clock.sleeps == [pytest.approx(3600, abs=0.05)]


def test_wait_until_in_the_past_does_not_sleep(h: Harness) -> None:
    h.add(wf("w", [{"id": "pause", "type": "wait", "until": "'2020-01-01T00:00:00Z'"}]))
    assert h.run("w").status == "completed"
    assert h.clock.sleeps == []


def test_wait_until_garbage_fails(h: Harness) -> None:
    h.add(wf("w", [{"id": "pause", "type": "wait", "until": "'next tuesday'"}]))
    result = h.run("w")
    assert result.status == "failed" and "not an ISO-8601 time" in result.error["message"]


def test_durable_wait_ends_the_run_as_waiting_then_completes(h: Harness) -> None:
    h.add(wf("w", [call("before"), {"id": "pause", "type": "wait", "duration": "1m"}, call("after")],
             outputs={"after": "${{ steps.after.output.method }}"}))
    first = h.run("w", wait_inline=False)
    assert first.status == "waiting"
    assert first.wake_at == pytest.approx(T0 + 60, abs=0.05)
    assert first.owner is None and first.finished_at is None
    assert h.clock.sleeps == []
    assert h.steps(first.id)["pause"].status == "running"

    early = h.resume(first.id, wait_inline=False)  # not due yet: still waiting, nothing re-run
    assert early.status == "waiting" and h.agents.count("before") == 1

    h.clock.advance(61)
    done = h.resume(first.id, wait_inline=False)
    assert done.status == "completed", done.error
    assert done.outputs == {"after": "after"} and done.wake_at is None
    assert h.agents.count("before") == 1 and h.agents.count("after") == 1
    types = h.types(first.id)
    assert types.count("workflow.completed") == 1 and types[-1] == "workflow.completed"


# --- emit -----------------------------------------------------------------------------------------------
def test_emit_event_is_stored_once_with_the_step_completion(h: Harness) -> None:
    h.add(wf("e", [{"id": "announce", "type": "emit", "event": "plan.ready",
                    "data": {"who": "${{ inputs.who }}", "n": "${{ 1 + 1 }}"}},
                   {"id": "bare", "type": "emit", "event": "plan.bare", "data": "${{ 42 }}"}],
             inputs={"who": {"type": "string", "default": "Ada"}}, outputs={"out": "${{ steps.announce.output }}"}))
    result = h.run("e")
    events = h.events(result.id)
    mine = [e for e in events if e.type == "plan.ready"]
    assert len(mine) == 1
    event = mine[0]
    assert event.data == {"who": "Ada", "n": 2}
    assert event.subject == "announce" and event.source == "progressive/workflows/e"
    assert result.outputs == {"out": {"event_id": event.id, "type": "plan.ready"}}
    # committed in the same batch as the step's completion: right after it, nothing in between
    completion = next(e for e in events if e.type == "step.completed" and e.data["key"] == "announce")
    assert event.seq == completion.seq + 1
    assert [e.data for e in events if e.type == "plan.bare"] == [{"value": 42}]


def test_emit_event_is_rolled_back_with_a_failed_completion_and_not_duplicated_on_resume(h: Harness) -> None:
    h.add(wf("e", [{"id": "announce", "type": "emit", "event": "plan.ready", "data": {"x": 1}}]))
    h.store.db.execute(
        "CREATE TEMP TRIGGER no_completion BEFORE INSERT ON steps "
        "WHEN NEW.key = 'announce' AND NEW.status = 'completed' BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(sqlite3.Error, match="disk full"):
        h.run("e")
    execution = h.executions()[0]
    assert h.events(execution.id, type_prefix="plan.") == []  # the event went down with the transaction
    assert h.steps(execution.id)["announce"].status == "running"
    h.store.db.execute("DROP TRIGGER no_completion")
    assert h.resume(execution.id).status == "completed"
    assert len(h.events(execution.id, type_prefix="plan.")) == 1
    assert h.resume(execution.id).status == "completed"  # finished: a further run does nothing
    assert len(h.events(execution.id, type_prefix="plan.")) == 1


# --- sub_workflow ------------------------------------------------------------------------------------------
def add_child(h: Harness, steps: list[dict[str, Any]] | None = None) -> None:
    h.add(wf("child", steps or [transform("double", "${{ inputs.n * 2 }}")],
             inputs={"n": {"type": "number", "required": True}}, outputs={"doubled": "${{ steps.double.output }}"}))


def test_sub_workflow_outputs_come_back_and_child_has_parent(h: Harness) -> None:
    add_child(h)
    h.add(wf("parent", [{"id": "sub", "type": "sub_workflow", "workflow": "child", "inputs": {"n": "${{ inputs.n }}"}},
                        transform("use", "${{ steps.sub.output.doubled + 1 }}")],
             inputs={"n": {"type": "integer", "default": 20}}, outputs={"use": "${{ steps.use.output }}"}))
    result = h.run("parent")
    assert result.status == "completed", result.error
    assert result.outputs == {"use": 41}
    child = next(e for e in h.executions() if e.workflow == "child")
    assert child.parent_id == result.id and child.parent_step == "sub"
    assert child.status == "completed" and child.outputs == {"doubled": 40}
    assert h.steps(result.id)["sub"].input == {"child": child.id}
    assert h.types(child.id)[0] == "workflow.started" and h.types(child.id)[-1] == "workflow.completed"


def test_sub_workflow_failing_child_fails_the_step(h: Harness) -> None:
    h.agents.on("boom", fail("AGENT_ERROR"))
    add_child(h, [call("double", "boom")])
    h.add(wf("parent", [{"id": "sub", "type": "sub_workflow", "workflow": "child", "inputs": {"n": 1}}]))
    result = h.run("parent")
    child = next(e for e in h.executions() if e.workflow == "child")
    assert child.status == "failed"
    assert result.status == "failed"
    assert result.error["kind"] == "AGENT_ERROR" and result.error["step"] == "sub"
    assert result.error["child"] == child.id and "sub-workflow 'child' failed" in result.error["message"]


def test_sub_workflow_bad_inputs_fail_the_step(h: Harness) -> None:
    add_child(h)
    h.add(wf("parent", [{"id": "sub", "type": "sub_workflow", "workflow": "child", "inputs": {"n": "${{ 'x' }}"},
                         "on_error": "continue"}, transform("after", "${{ steps.sub.error.kind }}")],
             outputs={"after": "${{ steps.after.output }}"}))
    result = h.run("parent")
    assert result.status == "completed", result.error
    assert result.outputs == {"after": "STEP_ERROR"}
    assert [e.workflow for e in h.executions()] == ["parent"]  # no child was created


def test_sub_workflow_waiting_child_makes_the_parent_wait(h: Harness) -> None:
    add_child(h, [{"id": "nap", "type": "wait", "duration": "30s"}, transform("double", "${{ inputs.n * 2 }}")])
    h.add(wf("parent", [{"id": "sub", "type": "sub_workflow", "workflow": "child", "inputs": {"n": 2}}],
             outputs={"doubled": "${{ steps.sub.output.doubled }}"}))
    first = h.run("parent", wait_inline=False)
    child = next(e for e in h.executions() if e.workflow == "child")
    assert child.status == "waiting"
    assert first.status == "waiting" and first.owner is None
    assert first.wake_at == pytest.approx(child.wake_at)
    h.clock.advance(31)
    done = h.resume(first.id, wait_inline=False)
    assert done.status == "completed" and done.outputs == {"doubled": 4}
    assert h.get(child.id).status == "completed"
    assert len([e for e in h.executions() if e.workflow == "child"]) == 1


def test_sub_workflow_resume_reuses_the_child(h: Harness) -> None:
    crash = CrashOnce(lambda _r: "two")

    h.agents.on("second", crash)
    add_child(h, [call("first"), call("second"), transform("double", "${{ inputs.n * 2 }}")])
    h.add(wf("parent", [{"id": "sub", "type": "sub_workflow", "workflow": "child", "inputs": {"n": 3}}],
             outputs={"doubled": "${{ steps.sub.output.doubled }}"}))
    with pytest.raises(RuntimeError):
        h.run("parent")
    parent = next(e for e in h.executions() if e.workflow == "parent")
    child = next(e for e in h.executions() if e.workflow == "child")
    assert parent.status == child.status == "running"
    crash.on = False
    result = h.resume(parent.id)
    assert result.status == "completed" and result.outputs == {"doubled": 6}
    assert len([e for e in h.executions() if e.workflow == "child"]) == 1
    assert h.agents.count("first") == 1 and h.agents.count("second") == 2


# --- agent_call -------------------------------------------------------------------------------------------
def test_agent_call_request(h: Harness) -> None:
    h.add(wf("a", [{"id": "plan", "type": "agent_call", "capability": "meal-planning", "method": "meal-planning",
                    "params": {"calories": "${{ inputs.kcal }}", "label": "for ${{ inputs.who }}", "fixed": [1]},
                    "timeout": "10s"}],
             inputs={"kcal": {"type": "integer", "default": 2000}, "who": {"type": "string", "default": "Ada"}},
             outputs={"plan": "${{ steps.plan.output }}"}))
    result = h.run("a")
    (request,) = h.agents.calls
    assert request.agent is None and request.capability == "meal-planning" and request.method == "meal-planning"
    assert request.params == {"calories": 2000, "label": "for Ada", "fixed": [1]}
    assert request.idempotency_key == f"{result.id}:plan:1"
    assert request.timeout == 10
    assert request.context == {"execution_id": result.id, "workflow": "a", "step": "plan", "attempt": 1}
    assert result.outputs == {"plan": {"method": "meal-planning", "params": request.params}}


def test_agent_call_idempotency_key_per_attempt_and_nested_key(h: Harness) -> None:
    h.agents.on("flaky", fail("RATE_LIMITED", times=1))
    h.add(wf("a", [{"id": "loop", "type": "foreach", "items": "[0]",
                    "steps": [call("ask", "flaky", retry={"max_attempts": 2, "jitter": "none"})]}]))
    result = h.run("a")
    assert [r.idempotency_key for r in h.agents.calls] == [f"{result.id}:loop[0]/ask:1", f"{result.id}:loop[0]/ask:2"]


def test_agent_call_without_runtime(h: Harness) -> None:
    h.add(wf("a", [call("x")]))
    result = h.run("a", agent_call=None)
    assert result.status == "failed" and result.error["kind"] == "AGENT_ERROR"
    assert "no agent runtime" in result.error["message"]


# --- on_error -----------------------------------------------------------------------------------------------
def test_on_error_fail(h: Harness) -> None:
    h.agents.on("boom", fail("API_ERROR"))
    h.add(wf("f", [transform("a", 1), call("b", "boom"), transform("c", 3)]))
    result = h.run("f")
    assert result.status == "failed"
    assert result.error == {"kind": "API_ERROR", "message": "boom failed (1)", "step": "b"}
    assert result.outputs is None and result.finished_at is not None
    records = h.steps(result.id)
    assert records["b"].status == "failed" and records["b"].error["kind"] == "API_ERROR"
    assert "c" not in records
    types = h.types(result.id)
    assert types[-2:] == ["step.failed", "workflow.failed"]
    final = h.events(result.id)[-1]
    assert final.data["status"] == "failed" and final.data["error"]["step"] == "b"


def test_on_error_continue(h: Harness) -> None:
    h.agents.on("boom", fail("API_ERROR"))
    h.add(wf("f", [call("b", "boom", on_error="continue", output="bv"),
                   transform("c", "${{ [steps.b.status, steps.b.output, steps.b.error.kind, vars.bv] }}"),
                   transform("d", "${{ 'recovered' if steps.b.status == 'failed' else 'fine' }}")],
             outputs={"c": "${{ steps.c.output }}", "d": "${{ steps.d.output }}"}))
    result = h.run("f")
    assert result.status == "completed"
    assert result.outputs == {"c": ["failed", None, "API_ERROR", None], "d": "recovered"}
    assert h.steps(result.id)["b"].status == "failed"


def test_on_error_fallback(h: Harness) -> None:
    h.agents.on("boom", fail("API_ERROR"))
    h.add(wf("f", [call("b", "boom", on_error="fallback", output="bv",
                        fallback=transform("default_b", {"calories": 2000})),
                   transform("c", "${{ [steps.b.output.calories, steps.b.status, vars.bv.calories] }}")],
             outputs={"c": "${{ steps.c.output }}", "fb": "${{ steps.default_b.output }}"}))
    result = h.run("f")
    assert result.status == "completed", result.error
    assert result.outputs == {"c": [2000, "completed", 2000], "fb": {"calories": 2000}}
    records = h.steps(result.id)
    assert records["b/fallback"].output == {"calories": 2000}
    assert "step.failed" in h.types(result.id)


def test_failing_fallback_fails_the_run(h: Harness) -> None:
    h.agents.on("boom", fail("API_ERROR"))
    h.agents.on("also", fail("NETWORK_ERROR"))
    h.add(wf("f", [call("b", "boom", on_error="fallback", fallback=call("fb", "also"))]))
    result = h.run("f")
    assert result.status == "failed" and result.error["kind"] == "NETWORK_ERROR"
    assert result.error["step"] == "b/fallback"


def test_workflow_default_on_error_and_step_override(h: Harness) -> None:
    h.agents.on("boom", fail("API_ERROR"))
    h.add(wf("f", [call("a", "boom"), transform("b", "${{ steps.a.status }}"), call("c", "boom", on_error="fail"),
                   transform("d", "never")], on_error="continue"))
    result = h.run("f")
    assert result.status == "failed" and result.error["step"] == "c"
    records = h.steps(result.id)
    assert records["b"].output == "failed" and "d" not in records


# --- retry and backoff ------------------------------------------------------------------------------------
def test_retry_counts_attempts_with_exact_exponential_delays(h: Harness) -> None:
    h.agents.on("flaky", fail("RATE_LIMITED", times=2))
    h.add(wf("r", [call("x", "flaky", retry={"max_attempts": 5, "initial_delay": "1s", "multiplier": 2,
                                            "jitter": "none"})], outputs={"x": "${{ steps.x.output }}"}))
    result = h.run("r")
    assert result.status == "completed" and result.outputs == {"x": {"ok": 3}}
    assert h.agents.count("flaky") == 3
    assert h.clock.sleeps == [1.0, 2.0]
    record = h.steps(result.id)["x"]
    assert record.attempt == 3 and record.status == "completed"
    retried = [e for e in h.events(result.id) if e.type == "step.retried"]
    assert [(e.data["attempt"], e.data["next_attempt"], e.data["delay_s"]) for e in retried] == [
        (1, 2, 1.0), (2, 3, 2.0)]
    assert all(e.data["error"]["kind"] == "RATE_LIMITED" for e in retried)
    assert [e.data["attempt"] for e in h.events(result.id) if e.type == "step.completed"] == [3]


def test_retry_delays_are_capped_and_exhaustion_fails(h: Harness) -> None:
    h.agents.on("down", fail("NETWORK_ERROR"))
    h.add(wf("r", [call("x", "down", retry={"max_attempts": 6, "initial_delay": 1, "multiplier": 3,
                                           "max_delay": 5, "jitter": "none"})]))
    result = h.run("r")
    assert result.status == "failed" and result.error["kind"] == "NETWORK_ERROR"
    assert h.agents.count("down") == 6
    assert h.clock.sleeps == [1, 3, 5, 5, 5]
    assert h.steps(result.id)["x"].attempt == 6 and h.steps(result.id)["x"].status == "failed"


def test_only_retry_on_kinds_are_retried(h: Harness) -> None:
    h.agents.on("bad", fail("AGENT_ERROR"))
    h.agents.on("limited", fail("API_ERROR", times=1))
    h.add(wf("r", [call("x", "bad", retry={"max_attempts": 3}, on_error="continue"),
                   call("y", "limited", retry={"max_attempts": 3, "retry_on": ["API_ERROR"], "jitter": "none"})]))
    result = h.run("r")
    assert result.status == "completed"
    assert h.agents.count("bad") == 1  # AGENT_ERROR is not in the default retry_on
    assert h.agents.count("limited") == 2
    assert h.clock.sleeps == [1.0]


def test_workflow_level_retry_is_the_default(h: Harness) -> None:
    h.agents.on("flaky", fail("TIMEOUT", times=1))
    h.agents.on("flaky2", fail("TIMEOUT", times=1))
    h.add(wf("r", [call("x", "flaky"), call("y", "flaky2", retry={"max_attempts": 1})],
             retry={"max_attempts": 2, "jitter": "none", "initial_delay": "250ms"}))
    result = h.run("r")
    assert result.status == "failed" and result.error["step"] == "y"
    assert h.agents.count("flaky") == 2 and h.agents.count("flaky2") == 1
    assert h.clock.sleeps == [0.25]


def test_full_jitter_is_bounded_and_deterministic_with_a_seed(h: Harness) -> None:
    policy = {"max_attempts": 6, "initial_delay": 1, "multiplier": 2, "max_delay": 8, "jitter": "full"}
    h.agents.on("down", fail("RATE_LIMITED"))
    h.add(wf("r", [call("x", "down", retry=policy)]))
    h.run("r", seed=123)
    first = list(h.clock.sleeps)
    caps = [1, 2, 4, 8, 8]
    assert len(first) == 5 and all(0 <= d <= cap for d, cap in zip(first, caps, strict=True))
    rng = random.Random(123)
    model = RetryPolicy.model_validate(policy)
    assert first == [model.delay(attempt, rng) for attempt in range(1, 6)]
    h.clock.sleeps.clear()
    h.run("r", seed=123)
    assert h.clock.sleeps == first
    h.clock.sleeps.clear()
    h.run("r", seed=124)
    assert h.clock.sleeps != first


def test_backoff_function() -> None:
    rng = random.Random(1)
    exact = RetryPolicy.model_validate({"initial_delay": "500ms", "multiplier": 3, "max_delay": "10s",
                                        "jitter": "none"})
    assert [exact.delay(a, rng) for a in range(1, 6)] == [0.5, 1.5, 4.5, 10.0, 10.0]
    flat = RetryPolicy.model_validate({"initial_delay": 2, "multiplier": 1, "max_delay": 2, "jitter": "none"})
    assert [flat.delay(a, rng) for a in (1, 50, 100)] == [2, 2, 2]
    jittered = RetryPolicy.model_validate({"initial_delay": 1, "max_delay": 60})
    assert jittered.jitter == "full"
    for attempt in range(1, 40):
        assert 0 <= jittered.delay(attempt, rng) <= min(60, 2 ** (attempt - 1))
    assert jittered.delay(1, random.Random(5)) == jittered.delay(1, random.Random(5))
    huge = RetryPolicy.model_validate({"initial_delay": 1, "multiplier": 10, "max_delay": "1h", "jitter": "none"})
    assert huge.delay(100, rng) == 3600


# --- timeouts --------------------------------------------------------------------------------------------
async def _hang(_r: AgentRequest) -> Any:
    await asyncio.sleep(10)
    return "too late"


def test_step_timeout_is_a_timeout_error(h: Harness) -> None:
    h.agents.on("hang", _hang)
    h.add(wf("t", [call("x", "hang", timeout=0.05)]))
    began = time.monotonic()
    result = h.run("t")
    assert time.monotonic() - began < 3
    assert result.status == "failed"
    assert result.error["kind"] == "TIMEOUT" and result.error["step"] == "x"
    assert "timed out after 0.05s" in result.error["message"]


def test_step_timeout_is_retried(h: Harness) -> None:
    calls = {"n": 0}

    async def slow_then_fast(_r: AgentRequest) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            await asyncio.sleep(10)
        return "fast"

    h.agents.on("sf", slow_then_fast)
    h.add(wf("t", [call("x", "sf", timeout=0.05, retry={"max_attempts": 2, "jitter": "none"})],
             outputs={"x": "${{ steps.x.output }}"}))
    result = h.run("t")
    assert result.status == "completed" and result.outputs == {"x": "fast"}
    assert calls["n"] == 2


def test_step_timeout_with_continue(h: Harness) -> None:
    h.agents.on("hang", _hang)
    h.add(wf("t", [call("x", "hang", timeout=0.05, on_error="continue"), transform("y", "${{ steps.x.error.kind }}")],
             outputs={"y": "${{ steps.y.output }}"}))
    result = h.run("t")
    assert result.status == "completed" and result.outputs == {"y": "TIMEOUT"}


def test_workflow_timeout(h: Harness) -> None:
    h.agents.on("hang", _hang)
    h.add(wf("t", [transform("a", 1), call("x", "hang"), transform("never", 2)], timeout=0.1))
    began = time.monotonic()
    result = h.run("t")
    assert time.monotonic() - began < 3
    assert result.status == "timed_out"
    assert result.error["kind"] == "TIMEOUT" and "timed out after 0.1s" in result.error["message"]
    final = h.events(result.id)[-1]
    assert final.data["status"] == "timed_out"
    assert "never" not in h.steps(result.id)


def test_workflow_timeout_wins_over_a_longer_step_timeout(h: Harness) -> None:
    h.agents.on("hang", _hang)
    h.add(wf("t", [call("x", "hang", timeout=5, on_error="continue")], timeout=0.1))
    result = h.run("t")
    assert result.status == "timed_out"  # not swallowed by the step's on_error


def test_run_timeout_override(h: Harness) -> None:
    h.agents.on("hang", _hang)
    h.add(wf("t", [call("x", "hang")]))
    assert h.run("t", timeout=0.05).status == "timed_out"


def test_past_deadline_times_out_at_once(h: Harness) -> None:
    h.add(wf("t", [{"id": "pause", "type": "wait", "duration": "10m"}, transform("a", 1)], timeout="5m"))
    first = h.run("t", wait_inline=False)
    assert first.status == "waiting"
    h.clock.advance(3600)
    result = h.resume(first.id, wait_inline=False)
    assert result.status == "timed_out"


# --- durability: resume and retry ------------------------------------------------------------------------
DURABLE = wf("d", [
    call("a", "fetch", {"n": "${{ inputs.n }}"}),
    {"id": "loop", "type": "foreach", "items": "[1, 2, 3]", "steps": [call("each", "each", {"i": "${{ item }}"})]},
    call("c", "flaky", {"prev": "${{ steps.a.output.params.n }}"}),
    transform("d", "${{ [steps.a.output.params.n, steps.loop.output, steps.c.output] }}"),
], inputs={"n": {"type": "integer", "default": 7}}, outputs={"d": "${{ steps.d.output }}"})


def _setup_durable(h: Harness, failures: int) -> None:
    h.add(DURABLE)
    h.agents.on("each", lambda r: r.params["i"] * 100)
    left = {"n": failures}

    def flaky(r: AgentRequest) -> Any:
        if left["n"] > 0:
            left["n"] -= 1
            raise StepError("API_ERROR", "flaky")
        return {"ok": r.params["prev"]}

    h.agents.on("flaky", flaky)


def _retry(h: Harness, execution_id: str, from_step: str | None = None) -> Any:
    """What `executions retry` does: drop the plan's records, mark the run running, run it again."""
    records = h.steps(execution_id)
    drop = retry_plan(records, from_step)
    asyncio.run(h.store.delete_steps(execution_id, sorted(drop)))
    asyncio.run(h.store.update_execution(execution_id, status="running", error=None, outputs=None, finished_at=None,
                                         cancel_requested=False, owner=None, lease_until=None))
    return h.resume(execution_id)


def _per_step(h: Harness) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request in h.agents.calls:
        counts[request.context["step"]] = counts.get(request.context["step"], 0) + 1
    return counts


def test_retry_after_failure_does_not_rerun_completed_steps(h: Harness, new_harness: Any) -> None:
    reference = new_harness()
    _setup_durable(reference, failures=0)
    expected = reference.run("d")
    assert expected.status == "completed"

    _setup_durable(h, failures=1)
    failed = h.run("d")
    assert failed.status == "failed" and failed.error["step"] == "c"
    assert retry_plan(h.steps(failed.id), None) == {"c"}
    result = _retry(h, failed.id)
    assert result.status == "completed", result.error
    assert result.outputs == expected.outputs == {"d": [7, [100, 200, 300], {"ok": 7}]}
    assert _per_step(h) == {"a": 1, "loop[0]/each": 1, "loop[1]/each": 1, "loop[2]/each": 1, "c": 2}
    assert h.steps(result.id)["c"].attempt == 1  # a new attempt sequence after a manual retry
    types = h.types(result.id)
    assert types.count("workflow.failed") == 1 and types[-1] == "workflow.completed"


def test_resume_after_a_crash_reruns_only_the_interrupted_step_with_the_same_key(h: Harness) -> None:
    h.add(DURABLE)
    crash = CrashOnce(lambda r: "ok")

    h.agents.on("each", lambda r: r.params["i"])
    h.agents.on("flaky", crash)
    with pytest.raises(RuntimeError):
        h.run("d")
    execution = h.executions()[0]
    assert execution.status == "running"
    assert h.steps(execution.id)["c"].status == "running"
    crash.on = False
    result = h.resume(execution.id)
    assert result.status == "completed"
    assert result.outputs == {"d": [7, [1, 2, 3], "ok"]}
    assert _per_step(h) == {"a": 1, "loop[0]/each": 1, "loop[1]/each": 1, "loop[2]/each": 1, "c": 2}
    keys = [r.idempotency_key for r in h.agents.calls if r.context["step"] == "c"]
    assert keys[0] == keys[1] == f"{execution.id}:c:1"  # the same attempt: the agent can deduplicate


def test_resume_of_a_finished_run_does_nothing(h: Harness) -> None:
    _setup_durable(h, failures=0)
    result = h.run("d")
    again = h.resume(result.id)
    assert again.status == "completed" and len(h.agents.calls) == 5
    assert h.types(result.id).count("workflow.completed") == 1


def test_retry_from_step_reruns_that_step_and_later_ones_only(h: Harness) -> None:
    _setup_durable(h, failures=0)
    first = h.run("d")
    assert first.status == "completed"
    assert retry_plan(h.steps(first.id), "c") == {"c", "d"}
    h.agents.calls.clear()
    result = _retry(h, first.id, "c")
    assert result.status == "completed" and result.outputs == {"d": [7, [100, 200, 300], {"ok": 7}]}
    assert _per_step(h) == {"c": 1}


def test_retry_from_a_step_inside_a_loop(h: Harness) -> None:
    _setup_durable(h, failures=0)
    first = h.run("d")
    assert retry_plan(h.steps(first.id), "loop[1]/each") == {"loop", "loop[1]/each", "loop[2]/each", "c", "d"}
    h.agents.calls.clear()
    result = _retry(h, first.id, "loop[1]/each")
    assert result.status == "completed"
    assert _per_step(h) == {"loop[1]/each": 1, "loop[2]/each": 1, "c": 1}
    assert result.outputs == first.outputs | {"d": [7, [100, 200, 300], {"ok": 7}]}


def test_resume_republishes_results_from_inside_finished_containers(h: Harness) -> None:
    """Later steps read `steps.<id>` of steps inside a finished parallel or condition, and of a fallback:
    after a resume those come from the stored records, as the first run published them."""
    h.agents.on("boom", fail("API_ERROR"))
    crash = CrashOnce(lambda r: r.params)

    h.agents.on("report", crash)
    h.add(wf("r", [
        {"id": "prepare", "type": "parallel", "join": "collect_all", "branches": {
            "training": [call("design", "design", {"days": 3})],
            "fuel": [{"id": "pick", "type": "condition", "condition": "true", "then": [
                transform("fuel_targets", 2000),
                call("extra", "boom", on_error="fallback", fallback=transform("extra_default", "none")),
                call("optional", "boom", on_error="continue"),
            ]}],
            "broken": [call("broken", "boom")],
        }},
        call("report", "report", {"plan": "${{ steps.design.output.params }}",
                                  "kcal": "${{ steps.fuel_targets.output }}",
                                  "extra": "${{ steps.extra.output }}", "fb": "${{ steps.extra_default.output }}",
                                  "optional": "${{ steps.optional.status }}", "broken": "${{ steps.broken.status }}",
                                  "pick": "${{ steps.pick.output }}"}),
    ], outputs={"report": "${{ steps.report.output }}"}))
    with pytest.raises(RuntimeError):
        h.run("r")
    crash.on = False
    result = h.resume(h.executions()[0].id)
    assert result.status == "completed", result.error
    assert result.outputs == {"report": {"plan": {"days": 3}, "kcal": 2000, "extra": "none", "fb": "none",
                                         "optional": "failed", "broken": "failed", "pick": None}}
    assert h.agents.count("design") == 1 and h.agents.count("boom") == 3


def test_retry_plan_unknown_step() -> None:
    from progressive_cli.errors import NotFoundError

    with pytest.raises(NotFoundError, match="no step 'zz'"):
        retry_plan({}, "zz")


def test_fallback_is_not_rerun_on_resume(h: Harness) -> None:
    """A step that failed into its fallback is finished: a resume after a later crash reuses it."""
    h.agents.on("boom", fail("API_ERROR"))
    crash = CrashOnce(lambda _r: "later")

    h.agents.on("later", crash)
    h.add(wf("f", [call("b", "boom", on_error="fallback", fallback=transform("fb", "default")),
                   call("c", "later"), transform("d", "${{ [steps.b.output, steps.c.output] }}")],
             outputs={"d": "${{ steps.d.output }}"}))
    with pytest.raises(RuntimeError):
        h.run("f")
    execution = h.executions()[0]
    crash.on = False
    result = h.resume(execution.id)
    assert result.status == "completed" and result.outputs == {"d": ["default", "later"]}
    assert h.agents.count("boom") == 1


def test_continue_failure_is_not_rerun_on_resume(h: Harness) -> None:
    h.agents.on("boom", fail("API_ERROR", times=1))
    crash = CrashOnce(lambda _r: "later")

    h.agents.on("later", crash)
    h.add(wf("f", [call("b", "boom", on_error="continue"), call("c", "later"),
                   transform("d", "${{ [steps.b.status, steps.c.output] }}")], outputs={"d": "${{ steps.d.output }}"}))
    with pytest.raises(RuntimeError):
        h.run("f")
    crash.on = False
    result = h.resume(h.executions()[0].id)
    assert result.outputs == {"d": ["failed", "later"]}  # what the uninterrupted run had
    assert h.agents.count("boom") == 1


# --- cancel ----------------------------------------------------------------------------------------------
def test_cancel_between_steps(h: Harness) -> None:
    async def cancel_me(r: AgentRequest) -> Any:
        await h.store.update_execution(r.context["execution_id"], cancel_requested=True)
        return "done anyway"

    h.agents.on("cancel_me", cancel_me)
    h.add(wf("c", [call("a", "cancel_me"), call("b", "next")]))
    result = h.run("c")
    assert result.status == "cancelled"
    assert result.error == {"kind": "CANCELLED", "message": "cancelled"}
    assert h.agents.count("next") == 0
    records = h.steps(result.id)
    assert records["a"].status == "completed" and "b" not in records
    last = h.events(result.id)[-1]
    assert last.type == "workflow.cancelled" and last.data["status"] == "cancelled"
    assert result.owner is None and result.finished_at is not None


def test_cancel_inside_a_loop(h: Harness) -> None:
    async def work(r: AgentRequest) -> Any:
        if r.params["i"] == 1:
            await h.store.update_execution(r.context["execution_id"], cancel_requested=True)
        return r.params["i"]

    h.agents.on("work", work)
    h.add(wf("c", [{"id": "loop", "type": "foreach", "items": "[0, 1, 2, 3]",
                    "steps": [call("do", "work", {"i": "${{ item }}"})]}]))
    result = h.run("c")
    assert result.status == "cancelled" and h.agents.count("work") == 2


def test_a_run_owned_by_a_live_process_is_refused(h: Harness) -> None:
    from progressive_cli.errors import UnavailableError

    h.add(wf("s", [transform("a", 1)]))
    execution = asyncio.run(h.engine().start("s", {}))
    assert asyncio.run(h.store.claim_execution(execution.id, "elsewhere:1", 60))
    with pytest.raises(UnavailableError, match="being run by elsewhere:1"):
        h.resume(execution.id)
    assert h.steps(execution.id) == {}
    asyncio.run(h.store.update_execution(execution.id, lease_until=time.time() - 1))  # the lease ran out
    assert h.resume(execution.id).status == "completed"


# --- events ----------------------------------------------------------------------------------------------
def test_event_sequence_for_a_simple_run(h: Harness) -> None:
    h.add(wf("s", [transform("a", 1), call("b", "x")]))
    result = h.run("s")
    events = h.events(result.id)
    assert [e.type for e in events] == [
        "workflow.started", "step.started", "step.completed", "step.started", "step.completed", "workflow.completed"]
    assert [e.subject for e in events] == [result.id, "a", "a", "b", "b", result.id]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert [e.time for e in events] == sorted(e.time for e in events)
    assert [e.id for e in h.events_seen] == [e.id for e in events]  # on_event saw the same, in order
    started = events[0].data
    assert started == {"workflow": "s", "inputs": {}}
    done = events[-1].data
    assert done["status"] == "completed" and done["outputs"] == {} and done["duration_ms"] >= 0


def test_cloudevents_shape(h: Harness) -> None:
    h.add(wf("s", [transform("a", 1)]))
    result = h.run("s")
    for event in h.events(result.id):
        ce = event.cloudevent()
        assert set(ce) >= {"specversion", "id", "type", "source", "subject", "time", "datacontenttype", "data"}
        assert ce["specversion"] == "1.0" and ce["datacontenttype"] == "application/json"
        assert ce["source"] == "progressive/workflows/s"
        assert ce["time"].startswith("2026-01-01T00:00:00.") and ce["time"].endswith("+00:00")
        assert isinstance(ce["data"], dict) and len(ce["id"]) == 32
        assert event.execution_id == result.id


def test_queued_run_emits_started_when_it_runs(h: Harness) -> None:
    h.add(wf("s", [transform("a", 1)]))
    engine = h.engine()
    queued = asyncio.run(engine.start("s", {}, status="queued"))
    assert queued.status == "queued" and queued.started_at is None
    result = h.resume(queued.id)
    assert result.status == "completed" and result.started_at is not None
    assert h.types(queued.id) == ["workflow.queued", "workflow.started", "step.started", "step.completed",
                                  "workflow.completed"]


# --- inputs ----------------------------------------------------------------------------------------------
INPUTS = wf("i", [transform("a", "${{ inputs }}")],
            inputs={"age": {"type": "integer", "required": True, "minimum": 14},
                    "sex": {"type": "string", "enum": ["female", "male"], "default": "female"}},
            outputs={"a": "${{ steps.a.output }}"})


@pytest.mark.parametrize(("given", "message"), [
    ({}, "needs input 'age'"),
    ({"age": "old"}, "input 'age': expected a whole number"),
    ({"age": 2.5}, "input 'age': expected a whole number"),
    ({"age": 10}, "input 'age': 10 is below the minimum 14"),
    ({"age": 30, "sex": "x"}, "input 'sex': 'x' is not one of"),
    ({"age": 30, "agee": 1}, "has no input 'agee'"),
])
def test_bad_inputs_raise_and_write_nothing(h: Harness, given: dict[str, Any], message: str) -> None:
    h.add(INPUTS)
    with pytest.raises(InputError, match=message):
        h.run("i", given)
    assert h.executions() == [] and h.events() == []


def test_inputs_are_coerced(h: Harness) -> None:
    h.add(INPUTS)
    result = h.run("i", {"age": "34"})
    assert result.inputs == {"age": 34, "sex": "female"}
    assert result.outputs == {"a": {"age": 34, "sex": "female"}}


# --- secrets ---------------------------------------------------------------------------------------------
def test_env_references_are_never_resolved_by_the_engine(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-7f3a9c1e-never-store-me"
    monkeypatch.setenv("CANARY", canary)
    h.add(wf("s", [transform("a", {"token": "${env:CANARY}", "note": "key ${env:CANARY} here",
                                   "who": "${{ inputs.who }}"}),
                   call("b", "x", {"auth": "${env:CANARY}"}),
                   {"id": "e", "type": "emit", "event": "leak.check", "data": {"t": "${env:CANARY}"}}],
             inputs={"who": {"type": "string", "default": "me"}, "visible": {"type": "string"}},
             outputs={"a": "${{ steps.a.output }}"}))
    result = h.run("s", {"visible": "input-canary-5521"})
    assert result.status == "completed"
    assert result.outputs == {"a": {"token": "${env:CANARY}", "note": "key ${env:CANARY} here", "who": "me"}}
    assert h.agents.calls[0].params == {"auth": "${env:CANARY}"}
    asyncio.run(h.store.close())
    data = b"".join(p.read_bytes() for p in h.tmp_path.glob("state.db*"))
    assert b"${env:CANARY}" in data
    assert canary.encode() not in data
    assert b"input-canary-5521" in data  # inputs are data and are stored
    h.store = type(h.store)(h.tmp_path / "state.db")  # the fixture closes it again
