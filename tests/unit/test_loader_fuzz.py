"""Fuzzing the loader through the CLI: any bytes, any YAML -> exit 0 or 2 with file:line lines, never a traceback."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from progressive_cli.config.project import load_project
from progressive_cli.errors import ConfigError

LINE = re.compile(r"^(workflows/fuzz\.yaml|agents\.yaml|integrations\.yaml|progressive\.yaml):\d+:\d+: \S")

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False), st.text(max_size=20),
    st.sampled_from(["transform", "agent_call", "wait", "condition", "parallel", "foreach", "${{ inputs.x }}",
                     "${{ __import__('os') }}", "5s", "npa", "steps", "id", "type", "value", "${env:X}"]),
)
keys = st.one_of(st.text(max_size=10), st.sampled_from(
    ["name", "steps", "id", "type", "value", "inputs", "outputs", "agent", "method", "if", "then", "else",
     "branches", "items", "duration", "triggers", "cron", "agents", "integrations", "kind", "base_url"]))
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(keys, inner, max_size=5)), max_leaves=25)

FILES = ["workflows/fuzz.yaml", "agents.yaml", "integrations.yaml", "progressive.yaml"]


def _project_with(rel: str, content: bytes) -> Path:
    root = Path(tempfile.mkdtemp(prefix="fuzz-"))
    (root / "workflows").mkdir()
    (root / rel).write_bytes(content)
    return root


def _check(cli, root: Path) -> None:
    r = cli("-p", str(root), "validate")
    assert r.exit_code in (0, 2), (r.exit_code, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    if r.exit_code == 2:
        lines = [ln for ln in r.stderr.splitlines() if ": warning: " not in ln]
        assert lines and all(LINE.match(ln) for ln in lines), r.stderr


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rel=st.sampled_from(FILES), content=st.binary(max_size=300))
def test_arbitrary_bytes(cli, rel: str, content: bytes) -> None:
    _check(cli, _project_with(rel, content))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rel=st.sampled_from(FILES), doc=documents)
def test_arbitrary_yaml(cli, rel: str, doc: object) -> None:
    _check(cli, _project_with(rel, yaml.safe_dump(doc).encode()))


@settings(max_examples=150, deadline=None)
@given(doc=st.fixed_dictionaries({"name": st.just("w"), "steps": st.lists(
    st.dictionaries(keys, documents, max_size=6).map(lambda d: {"id": "s", "type": "transform", **d}),
    min_size=1, max_size=3)}))
def test_workflow_shaped_yaml_only_raises_config_error(doc: dict) -> None:
    root = _project_with("workflows/fuzz.yaml", yaml.safe_dump(doc).encode())
    try:
        load_project(root, environ={})
    except ConfigError as exc:
        assert exc.diagnostics and all(d.location.line >= 1 for d in exc.diagnostics)
