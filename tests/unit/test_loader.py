"""Project loading: every problem reported at once, each at the right file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from progressive_cli.config.project import find_project, load_project
from progressive_cli.errors import ConfigError, ExitCode


def problems(root: Path, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_project(root, **kwargs)  # type: ignore[arg-type]
    assert info.value.exit_code == ExitCode.INVALID
    return [str(d) for d in info.value.diagnostics]


def test_shipped_project_validates(repo_root: Path) -> None:
    project = load_project(repo_root, environ={})
    assert {a.id for a in project.agents.agents} == {"mca", "npa", "wpa", "bma", "rpa", "ema"}
    ids = {i.id for i in project.integrations.integrations}
    assert {"usda-food-data", "nutritionix", "exercisedb", "wger", "stripe", "sendgrid", "push-notifications"} <= ids
    assert {"postgres", "redis", "mongodb", "vector"} <= ids
    assert all(not project.integration(i).enabled for i in ("postgres", "redis", "mongodb", "vector"))
    assert len(project.workflows) >= 3
    # the only warnings are unset API keys
    assert project.warnings and all("environment variable" in str(w) for w in project.warnings)


def test_seed_figures_are_kept(repo_root: Path) -> None:
    project = load_project(repo_root, environ={})
    usda = project.integration("usda-food-data")
    assert (usda.rate_limits[0].requests, usda.rate_limits[0].per) == (1000, 3600)
    assert usda.auth.type == "api_key" and usda.auth.in_ == "query"
    stripe = project.integration("stripe")
    assert (stripe.rate_limits[0].requests, stripe.rate_limits[0].per) == (100, 1)
    assert stripe.retry.max_attempts == 6 and stripe.retry.initial_delay == 2
    assert stripe.circuit_breaker.reset_timeout == 60
    npa = project.agent("npa")
    assert npa.capabilities == ["meal-planning", "nutrition-analysis", "dietary-recommendations"]


def test_strict_turns_missing_env_into_errors(repo_root: Path) -> None:
    found = problems(repo_root, environ={}, strict=True)
    assert any("integrations.yaml:" in p and "USDA_API_KEY is not set" in p for p in found)
    env = {n: "x" * 8 for n in ("USDA_API_KEY", "NUTRITIONIX_APP_ID", "NUTRITIONIX_API_KEY", "RAPIDAPI_KEY",
                               "STRIPE_SECRET_KEY", "SENDGRID_API_KEY", "FCM_SERVER_KEY")}
    assert load_project(repo_root, environ=env, strict=True).warnings == ()


def test_all_schema_problems_at_once_with_positions(make_project) -> None:
    root = make_project({
        "workflows/a.yaml": """
            name: a
            steps:
              - id: one
                type: transform
                valeu: 1
              - id: two
                type: wait
                duration: 5x
              - id: three
                type: nope
        """,
        "workflows/b.yaml": """
            name: b
            timeout: soon
            steps: []
        """,
    })
    found = problems(root, environ={})
    assert "workflows/a.yaml:3:5: steps[0]: missing required key 'value'" in found
    assert "workflows/a.yaml:5:5: steps[0].valeu: unknown key 'valeu' (did you mean 'value'?)" in found
    assert any(p.startswith("workflows/a.yaml:8:15: steps[1].duration: '5x' is not a duration") for p in found)
    assert any(p.startswith("workflows/a.yaml:10:11: steps[2].type: unknown type 'nope'") for p in found)
    assert any(p.startswith("workflows/b.yaml:2:10: timeout:") for p in found)
    assert any(p.startswith("workflows/b.yaml:3:8: steps:") for p in found)


def test_cross_references(make_project) -> None:
    root = make_project({
        "workflows/w.yaml": """
            name: w
            inputs:
              n: {type: number, default: abc}
            triggers:
              - {type: cron, cron: "61 * * * *"}
              - {type: cron, cron: "@daily", timezone: Mars/Olympus}
            steps:
              - id: a
                type: agent_call
                agent: npx
                method: m
              - id: b
                type: agent_call
                capability: meal-plans
                method: m
              - id: c
                type: transform
                value: ${{ steps.zz.output + inputs.m + vars.nothing }}
              - id: a
                type: sub_workflow
                workflow: w
              - id: d
                type: api_call
                integration: cache
              - id: e
                type: database_operation
                integration: cache
                operation: find
              - id: f
                type: database_operation
                integration: missing
                operation: get
              - id: g
                type: transform
                value: ${{ inputs.n.__class__ }}
        """,
    })
    found = problems(root, environ={})
    expected = [
        "workflows/w.yaml:3:30: inputs.n.default: input 'n': expected a number, got 'abc'",
        "workflows/w.yaml:5:24: triggers[0].cron: invalid cron expression '61 * * * *': minute field '61': "
        "61 is outside 0-59",
        "workflows/w.yaml:6:44: triggers[1].timezone: unknown time zone 'Mars/Olympus'",
        "workflows/w.yaml:10:12: steps[0].agent: unknown agent 'npx' (did you mean 'npa'?)",
        "workflows/w.yaml:14:17: steps[1].capability: no agent provides capability 'meal-plans' "
        "(did you mean 'meal-planning'?)",
        "workflows/w.yaml:18:12: steps[2].value: inputs.m: no input named 'm'",
        "workflows/w.yaml:18:12: steps[2].value: steps.zz: no step named 'zz'",
        "workflows/w.yaml:18:12: steps[2].value: vars.nothing: no step output named 'nothing'",
        "workflows/w.yaml:19:9: steps[3].id: duplicate step id 'a' (first at line 8)",
        "workflows/w.yaml:21:15: steps[3].workflow: sub-workflow cycle: w -> w",
        "workflows/w.yaml:24:18: steps[4].integration: 'cache' is a redis database; api_call needs an http "
        "integration (use database_operation)",
        "workflows/w.yaml:28:16: steps[5].operation: redis has no operation 'find'; expected one of: get, set, "
        "delete, mget, hget, hset, publish",
        "workflows/w.yaml:31:18: steps[6].integration: unknown integration 'missing'",
    ]
    for line in expected:
        assert line in found, f"missing: {line}\nfound: {found}"
    assert any(p.startswith("workflows/w.yaml:35:25: steps[7].value: invalid expression: names starting with '_'")
               for p in found)


def test_sub_workflow_cycle_across_files_and_inputs(make_project) -> None:
    root = make_project({
        "workflows/a.yaml": """
            name: a
            steps:
              - {id: call_b, type: sub_workflow, workflow: b, inputs: {x: 1, y: 2}}
        """,
        "workflows/b.yaml": """
            name: b
            inputs:
              x: {type: integer, required: true}
              z: {type: string, required: true}
            steps:
              - {id: call_a, type: sub_workflow, workflow: a}
        """,
    })
    found = problems(root, environ={})
    assert sum("sub-workflow cycle" in p for p in found) == 1
    assert any("workflows/a.yaml:3:66: steps[0].inputs.y: workflow 'b' has no input 'y'" in p for p in found)
    assert any("steps[0]: workflow 'b' needs input 'z'" in p for p in found)


def test_duplicates(make_project) -> None:
    root = make_project({
        "agents.yaml": """
            agents:
              - {id: npa, kind: builtin}
              - {id: npa, kind: builtin}
              - {id: zzz, kind: builtin}
        """,
        "workflows/a.yaml": "name: same\nsteps: [{id: s, type: transform, value: 1}]\n",
        "workflows/b.yaml": "name: same\nsteps: [{id: s, type: transform, value: 1}]\n",
        "workflows/c.yaml": "name: c\nname: d\nsteps: [{id: s, type: transform, value: 1}]\n",
    })
    found = problems(root, environ={})
    assert "agents.yaml:3:10: agents[1].id: duplicate agent id 'npa' (first at line 2)" in found
    assert any(p.startswith("agents.yaml:4:10: agents[2].id: unknown built-in agent 'zzz'") for p in found)
    assert "workflows/b.yaml:1:7: name: duplicate workflow name 'same' (also in workflows/a.yaml)" in found
    assert "workflows/c.yaml:2:1: duplicate key 'name' (first at line 1)" in found


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "workflows/w.yaml:1:1: file is empty; expected a YAML mapping"),
        (b"\x00\x01\x02", "workflows/w.yaml:1:1: binary file (NUL byte); expected UTF-8 YAML text"),
        (b"name: \xff\xfe\n", "workflows/w.yaml:1:1: not UTF-8 text; expected a UTF-8 YAML file"),
        (b"name: [x\n", "workflows/w.yaml:2:1: invalid YAML: did not find expected ',' or ']'"),
        (b"- 1\n- 2\n", "workflows/w.yaml:1:1: expected a mapping at the top level, got a list"),
        (b"name: !!python/object/apply:os.system [id]\n", "workflows/w.yaml:1:7: unsupported YAML tag"),
        (b"name: w\nsteps: 3\n", "workflows/w.yaml:2:8: steps: expected a list, got a number"),
    ],
)
def test_bad_files_get_one_line(make_project, content: bytes, expected: str) -> None:
    root = make_project({"workflows/w.yaml": content})
    found = problems(root, environ={})
    assert any(p.startswith(expected) for p in found), found


def test_unknown_agent_kind_and_auth(make_project) -> None:
    root = make_project({
        "agents.yaml": "agents:\n  - {id: a, kind: builtn}\n  - {id: b}\n",
        "integrations.yaml": """
            integrations:
              - id: x
                type: http
                base_url: http://h
                auth: {type: api_key, in: body, name: k, value: "${env:K}"}
              - id: y
                type: http
                base_url: http://h
                auth: {type: bearer, token: "${ENV:K}"}
        """,
    })
    found = problems(root, environ={})
    assert any(p.startswith("agents.yaml:2:19: agents[0].kind: unknown kind 'builtn'") for p in found)
    assert any(p.startswith("agents.yaml:3:5: agents[1]: missing 'kind'") for p in found)
    assert any(p.startswith("integrations.yaml:5:31: integrations[0].auth.in: must be one of") for p in found)
    assert any("integrations[1].auth.token: '${ENV:K}' is not a valid reference" in p for p in found)


def test_settings_layers_and_sources(make_project) -> None:
    root = make_project({"progressive.yaml": "health:\n  interval: 45s\n  error_rate: 0.1\n"})
    env = {"PROGRESSIVE_HEALTH__ERROR_RATE": "0.2", "PROGRESSIVE_STATE__URL": "sqlite:///x.db"}
    project = load_project(root, environ=env, overrides={"health.error_rate": "0.3"})
    assert project.settings.health.interval == 45
    assert project.settings.health.error_rate == 0.3
    assert project.settings.state.url == "sqlite:///x.db"
    sources = {k: s for k, _, s in project.layers.rows()}
    assert sources["health.interval"] == "progressive.yaml:2:3"
    assert sources["health.error_rate"] == "--set"
    assert sources["state.url"] == "PROGRESSIVE_STATE__URL"
    assert sources["health.availability"] == "default"


def test_settings_errors_name_the_source(make_project) -> None:
    root = make_project({"progressive.yaml": "health:\n  interval: often\n  colour: red\n"})
    found = problems(root, environ={"PROGRESSIVE_HEALTH__INTERVL": "3"}, overrides={"alerts.sinks": "[{type: sms}]"})
    assert any(p.startswith("progressive.yaml:3:3: health.colour: unknown key 'colour'") for p in found)
    assert "progressive.yaml:2:3: health.interval: 'often' is not a duration; use e.g. 500ms, 30s, 5m, 1h or 1m30s" \
        in found
    assert ("PROGRESSIVE_HEALTH__INTERVL: warning: unknown setting 'health.intervl' (did you mean 'health.interval'?)"
            in found)
    assert "--set: alerts.sinks[0]: unknown type 'sms'; expected one of: 'log', 'event', 'webhook', 'command'" \
        in found


def test_env_overrides_file(make_project) -> None:
    root = make_project({"progressive.yaml": "health:\n  interval: often\n"})
    # the bad file value is replaced by the environment layer, so the project is valid
    project = load_project(root, environ={"PROGRESSIVE_HEALTH__INTERVAL": "10s"})
    assert project.settings.health.interval == 10


def test_find_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_project) -> None:
    with pytest.raises(ConfigError, match="not a progressive project"):
        find_project(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        find_project(tmp_path / "nope")
    root = make_project({})
    monkeypatch.setenv("PROGRESSIVE_PROJECT", str(root))
    assert find_project(None) == root.resolve()
    assert find_project(str(root)) == root.resolve()


def test_missing_env_reported_at_the_reference(make_project) -> None:
    root = make_project({
        "integrations.yaml": """
            integrations:
              - id: x
                type: http
                base_url: http://h
                auth:
                  type: basic
                  username: admin
                  password: ${env:SECRET_PW}
        """,
    })
    project = load_project(root, environ={})
    assert [str(w) for w in project.warnings] == [
        "integrations.yaml:8:17: warning: integrations[0] (x): environment variable SECRET_PW is not set"
    ]


def test_stray_env_vars_warn_but_do_not_block(make_project) -> None:
    root = make_project({})
    env = {"PROGRESSIVE_HEALTH__INTERVL": "3", "PROGRESSIVE_COLOUR": "red", "PROGRESSIVE_PROJECT": str(root)}
    project = load_project(root, environ=env)
    assert sorted(str(w) for w in project.warnings) == [
        "PROGRESSIVE_COLOUR: warning: not a setting and ignored; settings are named PROGRESSIVE_SECTION__KEY, "
        "e.g. PROGRESSIVE_HEALTH__INTERVAL",
        "PROGRESSIVE_HEALTH__INTERVL: warning: unknown setting 'health.intervl' (did you mean 'health.interval'?)",
    ]
    assert len(problems(root, environ=env, strict=True)) == 2


def test_union_tag_not_mistaken_for_a_field(make_project) -> None:
    root = make_project({
        "agents.yaml": """
            agents:
              - id: npa
                kind: builtin
                builtin: npa
                heartbeat: {interval: 90s}
        """,
        "integrations.yaml": "integrations:\n  - {id: v, type: vector, path: /x, host: h}\n",
        "workflows/w.yaml": "name: w\nsteps:\n  - {id: s, type: wait}\n  - {id: t, type: wait, until: 2026-01-01}\n",
    })
    found = problems(root, environ={})
    assert "agents.yaml:5:16: agents[0].heartbeat: heartbeat needs interval <= degraded_after <= offline_after" \
        in found
    assert "integrations.yaml:2:5: integrations[0]: a vector integration needs exactly one of 'path' or 'host'" \
        in found
    assert "workflows/w.yaml:3:5: steps[0]: a wait step needs exactly one of 'duration' or 'until'" in found


def test_type_messages_are_plain(make_project) -> None:
    workflow = "name: w\nversion: 2\nconcurrency: lots\nsteps: [{id: s, type: transform, value: 1}]\n"
    root = make_project({"workflows/w.yaml": workflow})
    found = problems(root, environ={})
    assert "workflows/w.yaml:2:10: version: expected a string, got a number" in found
    assert "workflows/w.yaml:3:14: concurrency: expected a whole number, got a string" in found


def test_reference_to_a_broken_workflow_is_not_unknown(make_project) -> None:
    root = make_project({
        "workflows/a.yaml": "name: a\nsteps: [{id: s, type: sub_workflow, workflow: b}]\n",
        "workflows/b.yaml": "name: b\nsteps: [{id: s, type: nope}]\n",
    })
    found = problems(root, environ={})
    assert not any("unknown workflow" in p for p in found)
    assert any(p.startswith("workflows/b.yaml:2:") for p in found)


def test_literal_foreach_items_and_until_are_checked(make_project) -> None:
    root = make_project({"workflows/w.yaml": """
        name: w
        steps:
          - id: loop
            type: foreach
            items: ["${{ inputs.nope }}"]
            steps: [{id: s, type: transform, value: 1}]
          - {id: later, type: wait, until: "${{ steps.missing.output }}"}
          - {id: fixed, type: wait, until: "2026-12-01T09:00:00Z"}
    """, "workflows/c.yaml": """
        name: c
        steps:
          - id: c
            type: condition
            branches: [{when: "true", steps: [{id: x, type: transform, value: 1}]}]
            then: [{id: y, type: transform, value: 1}]
    """})
    found = problems(root, environ={})
    assert any(p.startswith("workflows/w.yaml:5:13: steps[0].items[0]: inputs.nope") for p in found), "\n".join(found)
    assert any("steps[1].until: steps.missing: no step named 'missing'" in p for p in found)
    assert not any("steps[2]" in p for p in found)
    assert any(p.startswith("workflows/c.yaml:3:5: steps[0]: 'then' is for the 'condition' form") for p in found)


def test_parallel_combine_and_min_success_are_checked(make_project) -> None:
    root = make_project({
        "workflows/p.yaml": """
            name: p
            steps:
              - id: par
                type: parallel
                join: collect_all
                min_success: 3
                combine: "{'ok': succeeded, 'x': nonsense}"
                branches:
                  a: [{id: one, type: transform, value: 1}]
                  b: [{id: two, type: transform, value: 2}]
              - id: fast
                type: parallel
                min_success: 1
                branches:
                  a: [{id: three, type: transform, value: 3}]
        """,
    })
    found = problems(root, environ={})
    assert any(p.startswith("workflows/p.yaml:3:5: steps[0]: min_success is 3 but there are 2 branch(es)")
               for p in found), found
    assert any("steps[1]: min_success needs join: collect_all" in p for p in found), found


def test_parallel_combine_reads_only_known_names(make_project) -> None:
    root = make_project({
        "workflows/p.yaml": """
            name: p
            steps:
              - id: par
                type: parallel
                join: collect_all
                combine: "{'ok': succeeded, 'bad': keys(failed), 'all': branches, 'x': nonsense}"
                branches:
                  a: [{id: one, type: transform, value: 1}]
        """,
    })
    found = problems(root, environ={})
    assert len(found) == 1 and "steps[0].combine: invalid expression: unknown name 'nonsense'" in found[0], found
