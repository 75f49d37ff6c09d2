"""The one error hierarchy and the one exit-code enum.

Every user-facing failure is a :class:`ProgressiveError`. The CLI maps each to a
one-line message on stderr and to the ``exit_code`` it carries; nothing else in the
code base decides exit codes.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

_CONTROL = {c: chr(c).encode("unicode_escape").decode("ascii") for c in (*range(32), 0x7F, 0x85, 0x2028, 0x2029)}


def one_line(text: str) -> str:
    """Escape control characters so a message stays on one line of a terminal or log."""
    return text if text.isprintable() else text.translate(_CONTROL)  # the test is quick; the translation is not


class ExitCode(IntEnum):
    """Process exit codes. `progressive --help` and the README list these."""

    OK = 0
    FAILED = 1  # the command ran and what it ran failed (a workflow run, a check)
    INVALID = 2  # bad usage, bad config, bad input: nothing was done
    NOT_FOUND = 4  # a named agent, integration, workflow or execution does not exist
    UNAVAILABLE = 5  # the state store, a daemon or a server could not be reached or used
    TIMED_OUT = 6  # a workflow run hit its timeout
    CANCELLED = 7  # a workflow run was cancelled
    INTERNAL = 70  # a bug in progressive (EX_SOFTWARE); PROGRESSIVE_DEBUG=1 shows the traceback
    INTERRUPTED = 130  # stopped by Ctrl-C / SIGINT

    # `progressive health` follows Nagios instead: 0 healthy, 1 degraded, 2 unhealthy, 3 unknown.
    HEALTH_DEGRADED = 1
    HEALTH_UNHEALTHY = 2
    HEALTH_UNKNOWN = 3


EXIT_CODE_HELP: dict[str, str] = {
    "0": "success",
    "1": "the command ran and what it ran failed (health: degraded)",
    "2": "invalid usage, configuration or input; nothing was changed (health: unhealthy)",
    "3": "health only: unknown",
    "4": "a named agent, integration, workflow or execution does not exist",
    "5": "the state store, daemon or a server is unavailable",
    "6": "the workflow run timed out",
    "7": "the workflow run was cancelled",
    "70": "internal error (a bug; PROGRESSIVE_DEBUG=1 shows the traceback)",
    "130": "interrupted (Ctrl-C)",
}


class Location(NamedTuple):
    """A place in a config file. ``line`` and ``col`` are 1-based; 0 means unknown."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col or 1}"
        return self.file


class Diagnostic(NamedTuple):
    """One problem found in a project, with its place and severity."""

    location: Location
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        tag = "" if self.severity == "error" else f"{self.severity}: "
        return one_line(f"{self.location}: {tag}{self.message}")

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.location.file,
            "line": self.location.line,
            "col": self.location.col,
            "severity": self.severity,
            "message": self.message,
        }


class ProgressiveError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def lines(self) -> list[str]:
        return [one_line(f"error: {self.message}")]


class ConfigError(ProgressiveError):
    """One or more problems in the project's YAML files."""

    exit_code = ExitCode.INVALID

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        errors = [d for d in diagnostics if d.severity == "error"]
        super().__init__(str(errors[0]) if errors else "invalid configuration")

    def lines(self) -> list[str]:
        return [str(d) for d in self.diagnostics]


class UsageError(ProgressiveError):
    """A bad flag or argument value, named in the message."""

    exit_code = ExitCode.INVALID


class InputError(ProgressiveError):
    """A workflow input that is missing or of the wrong type."""

    exit_code = ExitCode.INVALID


class NotFoundError(ProgressiveError):
    exit_code = ExitCode.NOT_FOUND


class UnavailableError(ProgressiveError):
    exit_code = ExitCode.UNAVAILABLE


UNAVAILABLE_KINDS = frozenset({"NETWORK_ERROR", "TIMEOUT", "CIRCUIT_BREAKER_OPEN", "RATE_LIMITED"})


class StepError(ProgressiveError):
    """A step failed. ``kind`` is one of the error kinds retry policies and on_error act on.

    Raised from a one-off command (``integrations call``, ``db``), it exits 5 when the server could
    not be reached or used (network, timeout, open breaker, rate limit), 2 for bad parameters
    (STEP_ERROR), and 1 when the server refused (API_ERROR, DATABASE_ERROR, AGENT_ERROR)."""

    def __init__(self, kind: str, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.details = details or {}
        self.exit_code = ExitCode.UNAVAILABLE if kind in UNAVAILABLE_KINDS else \
            ExitCode.INVALID if kind == "STEP_ERROR" else ExitCode.FAILED

    def lines(self) -> list[str]:
        return [one_line(f"error: {self.kind}: {self.message}")]

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "message": self.message, **self.details}
