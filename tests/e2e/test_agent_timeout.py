"""A sync agent that overruns its timeout must not keep `progressive run` alive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent / "progressive"


def test_timed_out_sync_agent_does_not_block_exit(tmp_path: Path) -> None:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "slow_agent.py").write_text("import time\n\ndef handle(method, params, context):\n"
                                            "    time.sleep(30)\n    return 1\n")
    (tmp_path / "agents.yaml").write_text(
        "agents:\n  - {id: slow, kind: python, entrypoint: 'slow_agent:handle', timeout: 300ms}\n")
    (tmp_path / "workflows" / "w.yaml").write_text(
        "name: w\nsteps:\n  - {id: call, type: agent_call, agent: slow, method: m}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESSIVE_")}
    env["PYTHONPATH"] = str(tmp_path)
    start = time.monotonic()
    r = subprocess.run([str(BIN), "run", "workflow", "w", "-o", "json", "-q"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout)["error"]["kind"] == "TIMEOUT"
    assert elapsed < 10, f"the CLI waited {elapsed:.1f}s for an abandoned agent"
