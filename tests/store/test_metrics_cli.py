"""`progressive metrics`: Prometheus text exposition of the state store."""

from __future__ import annotations

import re

SAMPLE = re.compile(r'^progressive_[a-z_]+(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? -?[0-9.e+-]+$')


def test_metrics_is_valid_exposition_with_the_figures(cli, repo_root, tmp_path) -> None:
    p = ["-p", str(repo_root), "--set", f"state.url=sqlite:///{tmp_path}/state.db"]
    run = cli(*p, "run", "workflow", "calorie-targets", "-i", "age=34", "-i", "sex=female", "-i", "weight_kg=68",
              "-i", "height_cm=170", "-q")
    assert run.exit_code == 0, run.stderr
    cli(*p, "health", "-c", "state-store")
    cli(*p, "breakers", "open", "stripe")
    r = cli(*p, "metrics")
    assert r.exit_code == 0 and r.stderr == ""
    families: set[str] = set()
    for line in r.stdout.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("gauge", "counter") and name not in families
            families.add(name)
        elif not line.startswith("# HELP "):
            assert SAMPLE.match(line), line
    text = r.stdout
    assert 'progressive_executions{workflow="calorie-targets",status="completed"} 1' in text
    assert 'progressive_steps{type="transform",status="completed"}' in text
    assert 'progressive_breaker_state{breaker="integration:stripe",state="open"} 1' in text
    assert 'progressive_breaker_state{breaker="integration:stripe",state="closed"} 0' in text
    assert 'progressive_health_status{check="state-store"} 0' in text
    assert "progressive_work_queue_depth 0" in text
