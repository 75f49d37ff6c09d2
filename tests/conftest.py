"""Shared fixtures: the repository's shipped project, throwaway projects, and a CLI runner."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's PROGRESSIVE_* settings or colour preferences."""
    import os

    for name in list(os.environ):
        if name.startswith("PROGRESSIVE_") or name in ("NO_COLOR", "FORCE_COLOR"):
            monkeypatch.delenv(name, raising=False)


MakeProject = Callable[..., Path]


@pytest.fixture
def make_project(tmp_path: Path) -> MakeProject:
    """Write a project from {relative path: YAML text}; texts are dedented."""

    def make(files: dict[str, str | bytes], *, base: bool = True) -> Path:
        root = tmp_path / "project"
        root.mkdir(exist_ok=True)
        defaults: dict[str, str | bytes] = {
            "agents.yaml": """
                agents:
                  - id: npa
                    kind: builtin
                    capabilities: [meal-planning, nutrition-analysis]
                  - id: rpa
                    kind: builtin
                    capabilities: [report-generation]
            """,
            "integrations.yaml": """
                integrations:
                  - id: api
                    type: http
                    base_url: http://127.0.0.1:9
                  - id: cache
                    type: redis
                    url: redis://127.0.0.1:1
            """,
        }
        for rel, content in {**(defaults if base else {}), **files}.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(textwrap.dedent(content).lstrip("\n"))
        return root

    return make


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Invoke the Typer app in-process with separate stdout and stderr."""
    from progressive_cli.cli.main import app

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        runner = CliRunner()
        result = runner.invoke(app, list(args), env=env, catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    return invoke
