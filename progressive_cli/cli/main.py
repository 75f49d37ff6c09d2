"""The ``progressive`` command: root options, sub-commands, and the one error-to-exit-code mapping."""


import functools
import gc
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typer.main import get_command_from_info, get_command_name, get_group_from_info

try:  # typer >= 0.29 vendors click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer depends on click
    from click.exceptions import ClickException  # type: ignore[no-redef,assignment,unused-ignore]

from progressive_cli import __version__
from progressive_cli.cli import (  # noqa: F401
    catalog,
    daemon,
    dashboard,
    events,
    health,
    integrations,
    messages,
    plan,
    project_cmds,
    runs,
)
from progressive_cli.cli.app import parse_pairs, state
from progressive_cli.cli.output import OutputFormat, say
from progressive_cli.config import pydantic_setup  # noqa: F401  (before typer builds its parameter validators)
from progressive_cli.errors import EXIT_CODE_HELP, ExitCode, ProgressiveError


class _DeferredCommands(dict[str, Any]):
    """The root group's sub-commands by name, in help order, with each sub-group's click command built
    the first time it is looked up.

    typer builds the click command of every command in the tree, reading each function's signature and
    evaluating its annotations, before it parses a single argument: ~30 ms for the 45 commands, of which
    a run uses one. So the root's commands and groups are registered with :data:`DEFERRED` instead of the
    root app, and built here, by typer itself, as typer would have built them, when first needed: looking
    one up (``get``, ``[name]``) builds that one; ``items()`` and ``values()`` (help, completion, tests
    walking the tree) build them all. Names alone (``keys()``, ``in``, iteration) build nothing."""

    def __init__(self, commands: dict[str, Any], deferred: dict[str, Callable[[], Any]]) -> None:
        super().__init__(commands)
        self._deferred = dict(deferred)
        for name in deferred:
            super().__setitem__(name, None)

    def _built(self, name: str) -> Any:
        build = self._deferred.pop(name, None)
        if build is not None:
            super().__setitem__(name, build())
        return super().__getitem__(name)

    def __getitem__(self, name: str) -> Any:
        super().__getitem__(name)  # KeyError for unknown names
        return self._built(name)

    def get(self, name: str, default: Any = None) -> Any:
        return self._built(name) if name in self else default

    def items(self) -> Any:
        for name in list(self._deferred):
            self._built(name)
        return super().items()

    def values(self) -> Any:
        for name in list(self._deferred):
            self._built(name)
        return super().values()


class ProgressiveGroup(TyperGroup):
    """The one place that turns errors into a one-line message and an exit code."""

    def __init__(self, *, commands: dict[str, Any] | None = None, **attrs: Any) -> None:
        super().__init__(commands=_DeferredCommands(commands or {}, DEFERRED), **attrs)

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        return list(self.commands)  # names only: builds no deferred group

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except ProgressiveError as exc:
            for line in exc.lines():
                say(line, style="warning" if ": warning: " in line else "error")
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            say("interrupted")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(int(ExitCode.OK)) from None
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except Exception as exc:  # a bug: one line by default, the traceback on request
            if os.environ.get("PROGRESSIVE_DEBUG"):
                raise
            say(f"internal error: {type(exc).__name__}: {exc} (set PROGRESSIVE_DEBUG=1 for a traceback)",
                style="error")
            raise typer.Exit(int(ExitCode.INTERNAL)) from None


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass

EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODE_HELP.items())

app = typer.Typer(
    name="progressive",
    cls=ProgressiveGroup,
    help="Operator's control plane for the Progressive-Framework-v5 multi-agent system.",
    epilog=EPILOG,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"progressive {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    project: Annotated[
        str | None,
        typer.Option("--project", "-p", metavar="DIR", show_default=False,
                     help="Project directory (default: $PROGRESSIVE_PROJECT, else .)."),
    ] = None,
    output: Annotated[
        OutputFormat | None,
        typer.Option("--output", "-o", help="Default output format for every command: table, json, yaml.",
                     case_sensitive=False),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE",
                     help="Override a setting, e.g. --set health.interval=10s (beats env and file)."),
    ] = None,
    no_color: Annotated[bool, typer.Option("--no-color", help="Plain output; same as NO_COLOR=1.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Operator's control plane for the Progressive-Framework-v5 multi-agent system."""
    if no_color:
        os.environ["NO_COLOR"] = "1"
    st = state(ctx)
    st.project_dir = project
    st.output = output
    st.overrides = parse_pairs(settings, "--set")


project_cmds.register(app)
catalog.register(app)
integrations.register(app)
events.register(app)
health.register(app)
runs.register(app)
daemon.register(app)
dashboard.register(app)
plan.register(app)

def _deferred() -> dict[str, Callable[[], Any]]:
    """The root's commands, then its groups (typer's order), each as a call that builds its click command
    exactly as typer's own tree building does."""
    short, markup = app.pretty_exceptions_short, app.rich_markup_mode
    out: dict[str, Callable[[], Any]] = {}
    for command in app.registered_commands:
        if command.callback is not None:
            out[command.name or get_command_name(command.callback.__name__)] = functools.partial(
                get_command_from_info, command, pretty_exceptions_short=short, rich_markup_mode=markup)
    for group in app.registered_groups:
        if group.name:
            out[group.name] = functools.partial(
                get_group_from_info, group, pretty_exceptions_short=short, rich_markup_mode=markup,
                suggest_commands=app.suggest_commands)
    return out


DEFERRED = _deferred()
"""The sub-commands (``validate``...) and sub-groups (``health``, ``agents``...), built on first use by
:class:`_DeferredCommands`."""
app.registered_commands = [c for c in app.registered_commands if c.callback is None]
app.registered_groups = [g for g in app.registered_groups if not g.name]


def main() -> None:
    """Console-script entry point."""
    # Most objects of a CLI process live until it exits: the modules imported by now (typer, the commands)
    # and, by the end, whatever the command loaded (pydantic, the project, asyncio). Freezing moves them out
    # of the cyclic collector's sight: collections during the command do not walk them again, and neither
    # does the full collection at interpreter shutdown (~40 ms of `progressive health` in all). Reference
    # counting frees objects as usual; a reference cycle still alive at exit is left to the OS, as Python
    # already does for whatever survives shutdown (stores and files are closed by the commands themselves).
    gc.freeze()
    try:
        app(prog_name="progressive")
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
