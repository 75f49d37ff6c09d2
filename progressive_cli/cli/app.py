"""Shared CLI plumbing: global options, the per-command ``-o`` option, project loading.

Kept free of heavy imports: ``progressive --help`` loads this module and the command
modules, and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from progressive_cli.cli.output import OutputFormat
from progressive_cli.errors import UsageError

if TYPE_CHECKING:
    from progressive_cli.config.project import Project


@dataclass
class AppState:
    project_dir: str | None = None
    output: OutputFormat | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    _project: Project | None = None

    def fmt(self, local: OutputFormat | None) -> OutputFormat:
        return local or self.output or OutputFormat.table

    def root(self) -> Path:
        from progressive_cli.config.project import find_project

        return find_project(self.project_dir)

    def project(self, *, strict: bool = False) -> Project:
        """Load and validate the project once per invocation (warnings are `validate`'s to print)."""
        if self._project is None:
            from progressive_cli.config.project import load_project

            self._project = load_project(self.root(), overrides=self.overrides, strict=strict)
        return self._project


def state(ctx: typer.Context) -> AppState:
    root = ctx.find_root()
    if not isinstance(root.obj, AppState):
        root.obj = AppState()
    return root.obj


def parse_pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a malformed pair names the flag."""
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE")
        pairs[key.strip()] = value
    return pairs


InputsOpt = Annotated[
    list[str] | None,
    typer.Option("--input", "-i", metavar="KEY=VALUE", help="A workflow input; repeat for more."),
]
InputFileOpt = Annotated[Path | None, typer.Option("--input-file", help="Inputs as a JSON or YAML mapping.")]


def read_inputs(values: list[str] | None, input_file: Path | None) -> dict[str, Any]:
    """Workflow inputs from --input-file (a JSON or YAML mapping), then -i KEY=VALUE pairs on top."""
    given: dict[str, Any] = {}
    if input_file is not None:
        try:
            text = input_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--input-file {input_file}: {exc.strerror or exc}") from None
        try:
            import yaml

            data = yaml.safe_load(text)
        except Exception as exc:
            raise UsageError(f"--input-file {input_file}: not JSON or YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise UsageError(f"--input-file {input_file}: expected a mapping of input names to values")
        given.update(data)
    given.update(parse_pairs(values, "-i/--input"))
    return given


OutputOpt = Annotated[
    OutputFormat | None,
    typer.Option("--output", "-o", help="Output format: table, json or yaml.", case_sensitive=False),
]


def new_typer(help_text: str) -> typer.Typer:
    return typer.Typer(
        help=help_text,
        no_args_is_help=True,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        add_completion=False,
    )


def with_store(ctx: typer.Context, use: Callable[[Any], Awaitable[Any]], *, quiet_interrupt: bool = True) -> Any:
    """Run ``use(store)`` on the project's state store, closing it whatever happens. Ctrl-C ends the
    command quietly with exit 0 (it is how a ``--follow`` stops), or with ``quiet_interrupt=False`` as
    interrupted (130): for a command whose work it cut short."""
    from progressive_cli.store import project_store
    from progressive_cli.util import run_async

    project = state(ctx).project()

    async def go() -> Any:
        store = project_store(project)
        try:
            return await use(store)
        finally:
            await store.close()

    try:
        return run_async(go())
    except KeyboardInterrupt:
        if not quiet_interrupt:
            raise
        raise typer.Exit(0) from None


ControlWaitOpt = Annotated[float, typer.Option(
    "--wait", min=0.0, metavar="SECONDS",
    help="How long a running daemon gets to apply the action before this command applies it itself.")]


def apply_control(ctx: typer.Context, kind: str, target: str, payload: dict[str, Any] | None = None, *,
                  wait: float = 10.0) -> dict[str, Any]:
    """Write an operator control to the store and see it applied: by the daemon when one runs, else here
    (see ``progressive_cli/controls.py``). Says on stderr who applied it; returns the finished row."""
    from progressive_cli import controls
    from progressive_cli.cli.output import say

    by = controls.whoami("cli")
    asked: list[str] = []

    async def use(store: Any) -> dict[str, Any]:
        asked.append(await controls.request(store, kind, target, payload, by=by))
        return await controls.settle(store, asked[0], kind, wait=wait, by=by)

    try:
        row: dict[str, Any] = with_store(ctx, use, quiet_interrupt=False)
    except KeyboardInterrupt:  # not applied as far as we know: exit 130, not 0
        if asked:
            say(f"{kind} {target}: control {asked[0][:12]} was written but not seen applied; a daemon may still "
                "apply it")
        raise
    who = "the daemon" if row["applied_by"].startswith("daemon:") else "this command"
    say(f"{kind} {target}: applied by {who} ({row['applied_by']}), control {row['id'][:12]}")
    return row
