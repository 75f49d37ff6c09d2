"""Two `progressive run` processes on one embedded store at once, plus a reader (as the dashboard would be)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent / "progressive"
WORKFLOW = """
name: busy
inputs:
  n: {type: integer, default: 150}
steps:
  - {id: items, type: transform, value: "${{ range(inputs.n) }}"}
  - id: loop
    type: foreach
    items: steps.items.output
    concurrency: 4
    steps:
      - {id: sq, type: transform, value: "${{ item * item }}"}
outputs:
  total: ${{ sum(steps.loop.output) }}
"""


def test_two_runs_and_a_reader_share_one_store(tmp_path: Path) -> None:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "agents.yaml").write_text("agents: []\n")
    (tmp_path / "workflows" / "busy.yaml").write_text(WORKFLOW)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESSIVE_")}
    runs = [subprocess.Popen([str(BIN), "run", "workflow", "busy", "-q", "-o", "json", "-i", f"n={n}"],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for n in (150, 151)]
    readers = 0
    while any(p.poll() is None for p in runs):
        r = subprocess.run([str(BIN), "executions", "list", "-o", "json"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr  # never "database is locked"
        readers += 1
    results = []
    for p in runs:
        out, err = p.communicate()
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(r["outputs"]["total"] for r in results) == [sum(i * i for i in range(150)),
                                                              sum(i * i for i in range(151))]
    listed = json.loads(subprocess.run([str(BIN), "executions", "list", "-o", "json"], cwd=tmp_path, env=env,
                                       capture_output=True, text=True).stdout)
    assert sorted(e["status"] for e in listed) == ["completed", "completed"]
    assert readers >= 1
