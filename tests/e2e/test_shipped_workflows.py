"""Every shipped example workflow runs offline, with no keys set, through the installed CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent / "progressive"
REPO = Path(__file__).resolve().parents[2]

CASES = {
    "calorie-targets": ["-i", "age=34", "-i", "sex=female", "-i", "weight_kg=68", "-i", "height_cm=170"],
    "daily-nutrition-plan": ["-i", "age=34", "-i", "sex=female", "-i", "weight_kg=68", "-i", "height_cm=170",
                             "-i", 'exclusions=["dairy"]'],
    "weekly-training-plan": [],
    "monthly-budget-review": [],
    "incident-escalation": ["-i", "source=external-apis", "-i", "severity=critical", "-i", "summary=stripe down"],
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shipped")
    for name in ("agents.yaml", "integrations.yaml", "workflows"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    return root


@pytest.mark.parametrize("name", sorted(CASES))
def test_shipped_workflow_runs_offline(project: Path, name: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESSIVE_") and not k.endswith("_KEY")}
    r = subprocess.run([str(BIN), "run", "workflow", name, "-q", "-o", "json", *CASES[name]], cwd=project, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    result = json.loads(r.stdout)
    assert result["status"] == "completed"
    outputs = result["outputs"]
    assert outputs and all(v is not None for k, v in outputs.items() if k not in ("incident", "warnings")), outputs
