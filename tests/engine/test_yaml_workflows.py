"""Examples from docs/workflows.md, written as a YAML project, loaded (so validated) and run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from progressive_cli.config.project import load_project
from progressive_cli.engine.executor import AgentRequest

AGENTS = """
    agents:
      - {id: npa, kind: builtin, capabilities: [meal-planning, nutrition-analysis]}
      - {id: rpa, kind: builtin, capabilities: [report-generation]}
      - {id: wpa, kind: builtin, capabilities: [workout-design, progress-tracking]}
      - {id: ema, kind: builtin, capabilities: [alert-evaluation, incident-management]}
"""

WORKFLOWS = {
    "workflows/route-alert.yaml": """
        name: route-alert
        inputs:
          severity: {type: string, default: warning, enum: [info, warning, critical]}
          overspent: {type: list, default: []}
        steps:
          - id: overspent
            type: condition
            condition: length(inputs.overspent) > 0
            then:
              - id: announce
                type: emit
                event: budget.overspent
                data: {categories: "${{ inputs.overspent }}"}
            else:
              - id: all_good
                type: transform
                value: within budget
          - id: route
            type: condition
            branches:
              - when: inputs.severity == 'critical'
                steps:
                  - id: open_incident
                    type: agent_call
                    agent: ema
                    method: incident-management
                    params: {action: open, severity: "${{ inputs.severity }}"}
              - when: inputs.severity == 'warning'
                steps:
                  - id: warn
                    type: emit
                    event: incident.warning
            else:
              - id: log_only
                type: emit
                event: incident.logged
        outputs:
          overspent: ${{ steps.overspent.output }}
          route: ${{ steps.route.output }}
    """,
    "workflows/one-rep-max.yaml": """
        name: one-rep-max
        inputs:
          lifts:
            type: list
            default:
              - {exercise: back squat, weight_kg: 100, reps: 5}
              - {exercise: deadlift, weight_kg: 130, reps: 3}
              - {exercise: bench, weight_kg: 80, reps: 8}
        steps:
          - id: estimates
            type: foreach
            items: inputs.lifts
            as: lift
            concurrency: 2
            steps:
              - id: estimate
                type: agent_call
                agent: wpa
                method: progress-tracking
                params:
                  exercise: ${{ lift.exercise }}
                  weight_kg: ${{ lift.weight_kg }}
                  reps: ${{ lift.reps }}
                  position: ${{ lift_index + 1 }}
          - id: reminders
            type: foreach
            items: [monday, thursday]
            steps:
              - id: remind
                type: emit
                event: training.reminder
                data: {day: "${{ item }}", n: "${{ item_index }}"}
        outputs:
          estimates: ${{ steps.estimates.output }}
    """,
    "workflows/pauses.yaml": """
        name: pauses
        inputs:
          send_at: {type: string, default: "2026-01-05T09:00:00+01:00"}
        steps:
          - id: cool_down
            type: wait
            duration: 90s
          - id: until_input
            type: wait
            until: inputs.send_at
          - id: until_fixed
            type: wait
            until: "'2026-01-05T10:00:00Z'"
        outputs:
          last: ${{ steps.until_fixed.output.waited_until }}
    """,
    "workflows/step-keys.yaml": """
        name: step-keys
        inputs:
          weight_kg: {type: number, default: 70}
          skip_report: {type: boolean, default: false}
        retry: {max_attempts: 2}
        steps:
          - id: targets
            name: Calorie targets
            type: agent_call
            agent: npa
            method: calorie-targets
            params: {weight_kg: "${{ inputs.weight_kg }}"}
            output: targets
            timeout: 10s
            retry: {max_attempts: 4, initial_delay: 500ms, max_delay: 5s, retry_on: [TIMEOUT, AGENT_ERROR]}
            on_error: fallback
            fallback:
              id: default_targets
              type: transform
              value: {calories: 2000}
          - id: report
            if: not inputs.skip_report
            type: agent_call
            agent: rpa
            method: report-generation
            params:
              title: Targets
              sections: {targets: "${{ vars.targets }}"}
            on_error: continue
        outputs:
          report: ${{ steps.report.output }}
          report_status: ${{ steps.report.status }}
    """,
    "workflows/prepare-week.yaml": """
        name: prepare-week
        inputs:
          goal: {type: string, default: strength}
          weight_kg: {type: number, default: 75}
        steps:
          - id: prepare
            type: parallel
            join: collect_all
            branches:
              training:
                - id: design
                  type: agent_call
                  agent: wpa
                  method: workout-design
                  params: {goal: "${{ inputs.goal }}", days: 3}
              fuel:
                - id: fuel_targets
                  type: agent_call
                  agent: npa
                  method: calorie-targets
                  params: {weight_kg: "${{ inputs.weight_kg }}", goal: maintain}
          - id: report
            type: agent_call
            agent: rpa
            method: report-generation
            params:
              title: Training week
              sections:
                plan: ${{ steps.design.output }}
                nutrition: ${{ steps.fuel_targets.output }}
        outputs:
          sections: ${{ steps.report.output.sections }}
    """,
}


@pytest.fixture
def project(make_project: Any, h: Any) -> Any:
    root: Path = make_project({"agents.yaml": AGENTS, **WORKFLOWS})
    loaded = load_project(root)
    h.workflows.update(loaded.workflows)
    return loaded


@pytest.mark.parametrize(("inputs", "overspent", "route", "events"), [
    ({}, "within budget", None, ["incident.warning"]),
    ({"severity": "critical", "overspent": ["dining"]}, "budget.overspent", {"action": "open", "severity": "critical"},
     ["budget.overspent"]),
    ({"severity": "info"}, "within budget", None, ["incident.logged"]),
])
def test_route_alert(h: Any, project: Any, inputs: dict[str, Any], overspent: Any, route: Any,
                     events: list[str]) -> None:
    h.agents.on("incident-management", lambda r: r.params)
    result = h.run("route-alert", inputs)
    assert result.status == "completed", result.error
    got = result.outputs["overspent"]
    assert (got["type"] if isinstance(got, dict) else got) == overspent  # an emit's output names its event
    if route is not None:
        assert result.outputs["route"] == route
    own = [e.type for e in h.events(result.id) if not e.type.startswith(("workflow.", "step."))]
    assert own == events


def test_one_rep_max(h: Any, project: Any) -> None:
    def estimate(r: AgentRequest) -> Any:
        p = r.params
        return {"exercise": p["exercise"], "one_rm": round(p["weight_kg"] * (1 + p["reps"] / 30), 1),
                "position": p["position"]}

    h.agents.on("progress-tracking", estimate)
    result = h.run("one-rep-max")
    assert result.status == "completed", result.error
    assert result.outputs == {"estimates": [
        {"exercise": "back squat", "one_rm": 116.7, "position": 1},
        {"exercise": "deadlift", "one_rm": 143.0, "position": 2},
        {"exercise": "bench", "one_rm": 101.3, "position": 3},
    ]}
    assert h.agents.max_active == 2
    reminders = [e.data for e in h.events(result.id, type_prefix="training.")]
    assert reminders == [{"day": "monday", "n": 0}, {"day": "thursday", "n": 1}]
    assert [e.subject for e in h.events(result.id, type_prefix="training.")] == ["reminders[0]/remind",
                                                                                  "reminders[1]/remind"]


def test_pauses_until_forms_from_the_docs(h: Any, project: Any) -> None:
    result = h.run("pauses")
    assert result.status == "completed", result.error
    assert result.outputs == {"last": "2026-01-05T10:00:00+00:00"}
    t0 = 1_767_225_600.0
    assert h.clock.sleeps[0] == pytest.approx(90, abs=0.05)
    assert t0 + 90 + h.clock.sleeps[1] == pytest.approx(t0 + 4 * 86400 + 8 * 3600, abs=0.05)
    assert h.clock.sleeps[2] == pytest.approx(2 * 3600, abs=0.05)


def test_step_keys_fallback_and_continue(h: Any, project: Any) -> None:
    from progressive_cli.errors import StepError

    def targets(_r: AgentRequest) -> Any:
        raise StepError("AGENT_ERROR", "npa is down")

    def report(_r: AgentRequest) -> Any:
        raise StepError("API_ERROR", "rpa is down")

    h.agents.on("calorie-targets", targets)
    h.agents.on("report-generation", report)
    result = h.run("step-keys")
    assert result.status == "completed", result.error
    assert result.outputs == {"report": None, "report_status": "failed"}
    assert h.agents.count("calorie-targets") == 4  # AGENT_ERROR is in this step's retry_on
    assert h.agents.count("report-generation") == 1  # API_ERROR is not in the workflow's default retry_on
    assert all(0 <= d <= cap for d, cap in zip(h.clock.sleeps, [0.5, 1, 2], strict=True))
    report_call = h.agents.calls[-1]
    assert report_call.params == {"title": "Targets", "sections": {"targets": {"calories": 2000}}}
    skipped = h.run("step-keys", {"skip_report": True})
    assert skipped.outputs == {"report": None, "report_status": "skipped"}


def test_prepare_week(h: Any, project: Any) -> None:
    h.agents.on("workout-design", lambda r: {"days": r.params["days"], "goal": r.params["goal"]})
    h.agents.on("calorie-targets", lambda r: {"calories": r.params["weight_kg"] * 30})
    h.agents.on("report-generation", lambda r: r.params)
    result = h.run("prepare-week")
    assert result.status == "completed", result.error
    assert result.outputs == {"sections": {"plan": {"days": 3, "goal": "strength"}, "nutrition": {"calories": 2250}}}
    assert set(h.steps(result.id)) == {"prepare", "prepare/training/design", "prepare/fuel/fuel_targets", "report"}


def test_prepare_week_resumed_after_a_crash_in_report(h: Any, project: Any) -> None:
    crash = {"on": True}

    def report(r: AgentRequest) -> Any:
        if crash["on"]:
            raise RuntimeError("power cut")
        return r.params

    h.agents.on("workout-design", lambda r: {"days": r.params["days"]})
    h.agents.on("calorie-targets", lambda r: {"calories": 2250})
    h.agents.on("report-generation", report)
    with pytest.raises(RuntimeError):
        h.run("prepare-week")
    crash["on"] = False
    (execution,) = h.executions()
    result = h.resume(execution.id)
    assert result.outputs == {"sections": {"plan": {"days": 3}, "nutrition": {"calories": 2250}}}
    assert h.agents.count("workout-design") == 1 and h.agents.count("calorie-targets") == 1
    assert asyncio.run(h.store.get_execution(execution.id)).status == "completed"
