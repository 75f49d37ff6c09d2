"""The emitted JSON Schema accepts the shipped project and rejects what the loader rejects."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from progressive_cli.config.schema import json_schema


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _files(repo_root: Path) -> list[tuple[str, Path]]:
    files = [("agents", repo_root / "agents.yaml"), ("integrations", repo_root / "integrations.yaml")]
    files += [("workflow", p) for p in sorted((repo_root / "workflows").glob("*.yaml"))]
    scaffold = repo_root / "progressive_cli" / "scaffold"
    files += [("agents", scaffold / "agents.yaml"), ("integrations", scaffold / "integrations.yaml"),
              ("settings", scaffold / "progressive.yaml"), ("workflow", scaffold / "workflows" / "hello.yaml")]
    return files


def test_shipped_files_match_schema(repo_root: Path) -> None:
    checked = 0
    for name, path in _files(repo_root):
        errors = list(_validator(name).iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, f"{path}: {[e.message for e in errors]}"
        checked += 1
    assert checked >= 9


@pytest.mark.parametrize(
    ("name", "doc"),
    [
        ("agents", {"agents": [{"id": "a", "kind": "builtin", "timout": 3}]}),
        ("agents", {"agents": [{"id": "a", "kind": "nope"}]}),
        ("integrations", {"integrations": [{"id": "x", "type": "http"}]}),
        ("workflow", {"name": "w", "steps": [{"id": "s", "type": "wait", "duration": "5x"}]}),
        ("workflow", {"name": "w", "steps": []}),
        ("settings", {"health": {"interval": "often"}}),
    ],
)
def test_schema_rejects_bad_documents(name: str, doc: dict) -> None:
    assert list(_validator(name).iter_errors(doc))
