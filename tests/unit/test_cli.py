"""CliRunner tests: one or more for every command, stdout for data and stderr for diagnostics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from progressive_cli.errors import ExitCode


def test_version(cli) -> None:
    r = cli("--version")
    assert r.exit_code == 0 and r.stdout.startswith("progressive ")


def test_help_lists_commands_and_exit_codes(cli) -> None:
    r = cli("--help")
    assert r.exit_code == 0
    for word in ("validate", "schema", "init", "config", "agents", "integrations", "workflows", "Exit codes:"):
        assert word in r.stdout
    for code in ExitCode:
        if code.name.startswith("HEALTH"):
            continue
        assert f"{int(code):>3}  " in r.stdout


def test_every_command_has_help(cli) -> None:
    from typer.main import get_command

    from progressive_cli.cli.main import app

    group = get_command(app)
    seen = 0

    def walk(cmd, path):
        nonlocal seen
        for name, sub in getattr(cmd, "commands", {}).items():
            assert sub.help or sub.short_help, f"{' '.join([*path, name])} has no help text"
            r = cli(*path, name, "--help")
            assert r.exit_code == 0, (path, name, r.stderr)
            seen += 1
            walk(sub, [*path, name])

    walk(group, [])
    assert seen >= 12


def test_commands_are_built_on_first_use(cli) -> None:
    """Running one command builds that command's click object only; help still lists them all, in order."""
    import typer
    from typer.main import get_command

    from progressive_cli.cli.main import app

    group = get_command(app)
    ctx = typer.Context(group)
    names = group.list_commands(ctx)
    assert names[:7] == ["validate", "schema", "init", "db", "metrics", "worker", "dashboard"]
    assert names[7:] == ["config", "agents", "workflows", "integrations", "breakers", "events", "dlq", "health",
                         "run", "executions", "daemon", "plan"]
    health = group.get_command(ctx, "health")
    assert health is not None and sorted(health.commands) == ["history"]
    assert group.get_command(ctx, "health") is health
    built = [name for name in names if dict.__getitem__(group.commands, name) is not None]
    assert built == ["health"]
    assert group.get_command(ctx, "nosuch") is None
    assert all(cmd is not None for _, cmd in group.commands.items())


def test_validate_ok(cli, repo_root: Path) -> None:
    r = cli("-p", str(repo_root), "validate")
    assert r.exit_code == 0
    assert r.stdout.startswith("ok: 6 agents, 11 integrations,")
    assert "USDA_API_KEY is not set" in r.stderr and "warning" in r.stderr


def test_validate_strict_fails(cli, repo_root: Path) -> None:
    r = cli("-p", str(repo_root), "validate", "--strict")
    assert r.exit_code == ExitCode.INVALID
    assert "integrations.yaml:" in r.stderr and r.stdout == ""


def test_validate_json_report(cli, make_project) -> None:
    root = make_project({"workflows/w.yaml": "name: w\nsteps:\n  - {id: a, type: transfrom, value: 1}\n"})
    r = cli("-p", str(root), "validate", "-o", "json")
    assert r.exit_code == ExitCode.INVALID
    report = json.loads(r.stdout)
    assert report["valid"] is False
    assert report["errors"][0]["file"] == "workflows/w.yaml"
    assert report["errors"][0]["line"] == 3
    assert "unknown type 'transfrom'" in report["errors"][0]["message"]


def test_validate_reports_every_problem_one_per_line(cli, make_project) -> None:
    root = make_project({
        "workflows/a.yaml": "name: a\nsteps:\n  - {id: x, type: agent_call, agent: nobody, method: m}\n",
        "workflows/b.yaml": b"\x00",
        "workflows/c.yaml": "name: [\n",
    })
    r = cli("-p", str(root), "validate")
    assert r.exit_code == ExitCode.INVALID
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 3
    assert all(line.split(":")[0].startswith("workflows/") and line.split(":")[1].isdigit() for line in lines)
    assert "Traceback" not in r.stderr


def test_not_a_project(cli, tmp_path: Path) -> None:
    r = cli("-p", str(tmp_path), "agents", "list")
    assert r.exit_code == ExitCode.INVALID
    assert "not a progressive project" in r.stderr


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_agents_list_formats(cli, repo_root: Path, fmt: str) -> None:
    r = cli("-p", str(repo_root), "agents", "list", "-o", fmt)
    assert r.exit_code == 0 and r.stderr == ""
    rows = json.loads(r.stdout) if fmt == "json" else yaml.safe_load(r.stdout)
    assert [row["id"] for row in rows] == ["mca", "npa", "wpa", "bma", "rpa", "ema"]
    assert rows[1]["instances"] == 2


def test_global_output_flag_applies(cli, repo_root: Path) -> None:
    r = cli("-p", str(repo_root), "-o", "json", "workflows", "list")
    assert {w["name"] for w in json.loads(r.stdout)} >= {"daily-nutrition-plan", "monthly-budget-review"}


def test_agents_list_table_is_plain_when_not_a_tty(cli, repo_root: Path) -> None:
    r = cli("-p", str(repo_root), "agents", "list")
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "KIND", "NAME"]
    assert "\x1b[" not in r.stdout and "│" not in r.stdout and "━" not in r.stdout
    assert any(line.startswith("npa ") for line in lines)


def test_agents_show(cli, repo_root: Path) -> None:
    r = cli("-p", str(repo_root), "agents", "show", "ema", "-o", "json")
    data = json.loads(r.stdout)
    assert data["kind"] == "builtin" and "escalation" in data["capabilities"]
    assert data["heartbeat"]["offline_after"] == 60


def test_show_unknown_is_not_found(cli, repo_root: Path) -> None:
    r = cli("-p", str(repo_root), "agents", "show", "nap")
    assert r.exit_code == ExitCode.NOT_FOUND
    assert r.stderr.strip() == "error: no agent 'nap' (did you mean 'npa'?)"
    r = cli("-p", str(repo_root), "workflows", "show", "nope")
    assert r.exit_code == ExitCode.NOT_FOUND
    r = cli("-p", str(repo_root), "integrations", "show", "strip")
    assert r.exit_code == ExitCode.NOT_FOUND and "stripe" in r.stderr


def test_integrations_list_and_show(cli, repo_root: Path) -> None:
    r = cli("-p", str(repo_root), "integrations", "list", "-o", "json")
    rows = {row["id"]: row for row in json.loads(r.stdout)}
    assert rows["usda-food-data"]["rate_limits"] == ["1000/1h"]
    assert rows["stripe"]["breaker"] == "3 fails / 1m"
    assert rows["usda-food-data"]["secrets"] == "missing USDA_API_KEY"
    assert rows["wger"]["secrets"] == "none"
    assert rows["postgres"]["enabled"] is False
    r = cli("-p", str(repo_root), "integrations", "show", "stripe", "-o", "yaml")
    data = yaml.safe_load(r.stdout)
    assert data["auth"] == {"type": "bearer", "token": "${env:STRIPE_SECRET_KEY}"}


def test_workflows_list_and_show(cli, repo_root: Path) -> None:
    r = cli("-p", str(repo_root), "workflows", "list")
    assert r.exit_code == 0 and "daily-nutrition-plan" in r.stdout
    r = cli("-p", str(repo_root), "workflows", "show", "weekly-training-plan")
    assert r.exit_code == 0
    assert "  one_rep_max" in r.stdout and "    estimate" in r.stdout  # nesting shown by indentation
    r = cli("-p", str(repo_root), "workflows", "show", "weekly-training-plan", "-o", "json")
    assert json.loads(r.stdout)["steps"][0]["type"] == "parallel"


def test_config_show_sources(cli, make_project) -> None:
    root = make_project({"progressive.yaml": "health:\n  interval: 45s\n"})
    r = cli("-p", str(root), "--set", "daemon.workers=8", "config", "show", "--sources", "-o", "json",
            env={"PROGRESSIVE_HEALTH__ERROR_RATE": "0.1"})
    assert r.exit_code == 0, r.stderr
    rows = {row["key"]: row for row in json.loads(r.stdout)}
    assert rows["health.interval"] == {"key": "health.interval", "value": 45.0, "source": "progressive.yaml:2:3"}
    assert rows["queue.url"] == {"key": "queue.url", "value": None, "source": "default"}
    assert rows["health.error_rate"]["source"] == "PROGRESSIVE_HEALTH__ERROR_RATE"
    assert rows["daemon.workers"] == {"key": "daemon.workers", "value": 8, "source": "--set"}
    assert rows["state.url"]["source"] == "default"
    r = cli("-p", str(root), "config", "show", "-o", "json")
    assert json.loads(r.stdout)["health"]["interval"] == 45.0
    r = cli("-p", str(root), "config", "show", "--sources")
    assert r.stdout.splitlines()[0].split() == ["KEY", "VALUE", "SOURCE"]


def test_bad_set_flag(cli, repo_root: Path) -> None:
    r = cli("-p", str(repo_root), "--set", "nonsense", "config", "show")
    assert r.exit_code == ExitCode.INVALID
    assert "--set 'nonsense': expected KEY=VALUE" in r.stderr


def test_bad_output_value_is_usage_error(cli, repo_root: Path) -> None:
    r = cli("-p", str(repo_root), "agents", "list", "-o", "xml")
    assert r.exit_code == ExitCode.INVALID
    assert "--output" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("name", ["agents", "integrations", "workflow", "settings"])
def test_schema_each(cli, name: str) -> None:
    r = cli("schema", name)
    schema = json.loads(r.stdout)
    assert schema["$schema"].endswith("2020-12/schema") and schema["type"] == "object"
    assert schema.get("additionalProperties") is False


def test_schema_all_and_write(cli, tmp_path: Path) -> None:
    r = cli("schema")
    assert set(json.loads(r.stdout)) == {"agents", "integrations", "workflow", "settings"}
    r = cli("schema", "--write", str(tmp_path / "s"))
    assert r.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "agents.schema.json", "integrations.schema.json", "settings.schema.json", "workflow.schema.json"]
    r = cli("schema", "bogus")
    assert r.exit_code == ExitCode.INVALID and "schema NAME 'bogus'" in r.stderr


def test_init_creates_a_valid_project(cli, tmp_path: Path) -> None:
    target = tmp_path / "new"
    r = cli("init", str(target))
    assert r.exit_code == 0, r.stderr
    assert (target / "workflows" / "hello.yaml").exists()
    r = cli("-p", str(target), "validate", "--strict", env={"EXAMPLE_API_TOKEN": "t0ken-value"})
    assert r.exit_code == 0, r.stderr
    # a second init refuses and writes nothing
    (target / "agents.yaml").write_text("# mine\n")
    r = cli("init", str(target))
    assert r.exit_code == ExitCode.INVALID and "already exist" in r.stderr
    assert (target / "agents.yaml").read_text() == "# mine\n"
    r = cli("init", str(target), "--force")
    assert r.exit_code == 0 and "agents:" in (target / "agents.yaml").read_text()


def test_init_into_a_file_is_refused(cli, tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    r = cli("init", str(f))
    assert r.exit_code == ExitCode.INVALID and "not a directory" in r.stderr


def test_project_from_env_var(cli, repo_root: Path) -> None:
    r = cli("agents", "list", "-o", "json", env={"PROGRESSIVE_PROJECT": str(repo_root)})
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 6


def test_every_command_is_documented_in_readme(repo_root: Path) -> None:
    from typer.main import get_command

    from progressive_cli.cli.main import app

    readme = (repo_root / "README.md").read_text()
    lines = [ln for ln in readme.splitlines() if ln.startswith("| `progressive ")]
    group = get_command(app)
    for name, cmd in group.commands.items():
        subs = getattr(cmd, "commands", None)
        for sub in subs or [None]:
            documented = any(f"`progressive {name}" in ln and (sub is None or sub in ln) for ln in lines)
            assert documented, f"`progressive {name} {sub or ''}` is missing from the README command table"


def test_agents_call_through_the_mca(cli, repo_root: Path) -> None:
    params = '{"age": 34, "sex": "female", "weight_kg": 68, "height_cm": 170}'
    r = cli("-p", str(repo_root), "agents", "call", "npa", "calorie-targets", "--params", params, "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["calories"] == 2188
    r = cli("-p", str(repo_root), "agents", "call", "--capability", "financial-planning", "financial-planning",
            "--params", '{"monthly_saving": 400, "annual_rate": 0.04, "years": 10}', "-o", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["final_balance"] == 58899.92
    r = cli("-p", str(repo_root), "agents", "call", "npa", "nope")
    assert r.exit_code == 1 and "has no method 'nope'" in r.stderr
    r = cli("-p", str(repo_root), "agents", "call", "npa", "calorie-targets", "--params", "[1]")
    assert r.exit_code == 2 and "--params: expected a JSON object" in r.stderr
    r = cli("-p", str(repo_root), "agents", "call", "npa")
    assert r.exit_code == 2 and "give AGENT and METHOD" in r.stderr
