"""Project-level commands: validate, schema, config show, init."""


import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from progressive_cli.cli.app import OutputOpt, new_typer, state
from progressive_cli.cli.output import OutputFormat, emit, say
from progressive_cli.errors import ConfigError, Diagnostic, UsageError


def validate(
    ctx: typer.Context,
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings (e.g. unset env vars) as errors.")] = False,
    output: OutputOpt = None,
) -> None:
    """Check every config file and cross-reference; print each problem as file:line:col: message."""
    st = state(ctx)
    fmt = st.fmt(output)
    from progressive_cli.config.project import load_project

    root = st.root()
    try:
        project = load_project(root, overrides=st.overrides, strict=strict)
    except ConfigError as exc:
        if fmt is not OutputFormat.table:
            emit(_report(str(root), False, exc.diagnostics), fmt)
            raise typer.Exit(int(exc.exit_code)) from None
        raise
    if fmt is not OutputFormat.table:
        emit(_report(str(root), True, list(project.warnings)), fmt)
        return
    for warning in project.warnings:
        say(str(warning), style="warning")
    n_wf = len(project.workflows)
    sys.stdout.write(
        f"ok: {len(project.agents.agents)} agents, {len(project.integrations.integrations)} integrations, "
        f"{n_wf} workflow{'s' if n_wf != 1 else ''}"
        + (f", {len(project.warnings)} warning(s)" if project.warnings else "")
        + "\n"
    )


def _report(root: str, valid: bool, diagnostics: list[Diagnostic]) -> dict[str, Any]:
    return {
        "project": root,
        "valid": valid,
        "errors": [d.as_dict() for d in diagnostics if d.severity == "error"],
        "warnings": [d.as_dict() for d in diagnostics if d.severity == "warning"],
    }


def schema(
    name: Annotated[
        str | None, typer.Argument(help="agents, integrations, workflow or settings; all four if omitted.")
    ] = None,
    write: Annotated[
        Path | None, typer.Option("--write", help="Write <name>.schema.json files into this directory.")
    ] = None,
) -> None:
    """Print the JSON Schema of a config file, for editors and CI."""
    from progressive_cli.config.schema import SCHEMA_NAMES, json_schema

    if name is not None and name not in SCHEMA_NAMES:
        raise UsageError(f"schema NAME {name!r}: expected one of {', '.join(SCHEMA_NAMES)}")
    names = [name] if name else list(SCHEMA_NAMES)
    if write is not None:
        from progressive_cli.util import atomic_write

        write.mkdir(parents=True, exist_ok=True)
        for n in names:
            target = write / f"{n}.schema.json"
            atomic_write(target, json.dumps(json_schema(n), indent=2) + "\n")
            say(f"wrote {target}")
        return
    data = json_schema(names[0]) if name else {n: json_schema(n) for n in names}
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


config_app = new_typer("Show the runtime settings and where each value comes from.")


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    sources: Annotated[bool, typer.Option("--sources", help="Add the source of each value.")] = False,
    output: OutputOpt = None,
) -> None:
    """Print the effective settings (defaults < progressive.yaml < PROGRESSIVE_* env < --set)."""
    st = state(ctx)
    fmt = st.fmt(output)
    project = st.project()
    rows = [
        {"key": key, "value": value, **({"source": source} if sources else {})}
        for key, value, source in project.layers.rows()
    ]
    if fmt is OutputFormat.table:
        columns = [("key", "KEY"), ("value", "VALUE")] + ([("source", "SOURCE")] if sources else [])
        emit(rows, fmt, columns=columns)
    elif sources:
        emit(rows, fmt)
    else:
        emit(project.settings.dump(), fmt)


def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the project.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that already exist.")] = False,
) -> None:
    """Create a new project (agents.yaml, integrations.yaml, progressive.yaml, workflows/) that validates."""
    from progressive_cli.scaffold import write_scaffold

    written = write_scaffold(directory, force=force)
    for path in written:
        say(f"created {path}")
    say(f"next: cd {directory} && progressive validate && progressive workflows list")


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(schema)
    app.command()(init)
    app.add_typer(config_app, name="config")
