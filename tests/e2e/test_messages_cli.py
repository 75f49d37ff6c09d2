"""`agents send|messages|deliver` through the installed entry point: each command is its own process, so
a message queued by one and delivered by another has survived a restart."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent / "progressive"
HTTP_AGENT = Path(__file__).parents[1] / "mca" / "http_agent.py"


def progressive(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESSIVE_") and k != "NO_COLOR"}
    return subprocess.run([str(BIN), "-p", str(project), *args], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    root = tmp_path / "project"
    (root / "workflows").mkdir(parents=True)
    (root / "agents.yaml").write_text(f"""agents:
  - {{id: remote, kind: http, endpoints: [{{url: "http://127.0.0.1:{port}"}}], timeout: 5s}}
  - {{id: npa, kind: builtin}}
  - {{id: ema, kind: builtin, channels: [system-alerts]}}
  - {{id: rpa, kind: builtin, channels: []}}
  - {{id: bma, kind: builtin, enabled: false}}
""")
    return root, port


def test_message_to_a_down_http_agent_is_delivered_by_a_later_process_once(project: tuple[Path, int]) -> None:
    root, port = project
    log = root / "received.jsonl"
    r = progressive(root, "agents", "send", "remote", "--body", '{"n": 1}', "-o", "json")
    assert r.returncode == 0, r.stderr
    [sent] = json.loads(r.stdout)
    assert (sent["to"], sent["status"], sent["attempts"]) == ("remote", "queued", 0)
    assert "queued" in r.stderr and "remote is offline" in r.stderr
    r = progressive(root, "agents", "deliver")
    assert r.returncode == 0 and "still wait for remote" in r.stderr
    agent = subprocess.Popen([sys.executable, str(HTTP_AGENT), str(port), str(log)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert agent.stdout is not None and agent.stdout.readline().strip() == "ready"
        r = progressive(root, "agents", "deliver", "remote", "-o", "json")
        assert r.returncode == 0, r.stderr
        assert [(m["id"], m["status"], m["reply"]) for m in json.loads(r.stdout)] == [
            (sent["id"], "delivered", {"ack": sent["id"]})]
        assert "delivered 1 of 1" in r.stderr
        r = progressive(root, "agents", "deliver")
        assert r.returncode == 0 and r.stdout.splitlines()[1:] == []
    finally:
        agent.terminate()
        agent.wait()
    [request] = [json.loads(line) for line in log.read_text().splitlines()]
    assert request["header_key"] == f"msg:{sent['id']}" and request["params"]["body"] == {"n": 1}
    r = progressive(root, "agents", "messages", "remote", "--status", "delivered", "-o", "json")
    assert [(m["id"], m["attempts"]) for m in json.loads(r.stdout)] == [(sent["id"], 1)]


def test_broadcast_and_history(project: tuple[Path, int]) -> None:
    root, _ = project
    r = progressive(root, "agents", "send", "--channel", "system-alerts", "--from", "ema", "--body", '"disk full"',
                    "-o", "json")
    assert r.returncode == 0, r.stderr
    # npa and remote subscribe to every channel; ema sent it; rpa subscribes to none; bma is disabled
    assert {m["to"]: m["status"] for m in json.loads(r.stdout)} == {"remote": "queued", "npa": "delivered"}
    r = progressive(root, "agents", "send", "npa", "--body", '{"hi": 2}')
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()
    assert header.split() == ["ID", "CREATED", "FROM", "TO", "CHANNEL", "STATUS", "ATTEMPTS", "BODY", "ERROR"]
    assert row.split()[3:8] == ["operator", "npa", "-", "delivered", "1"]
    history = json.loads(progressive(root, "agents", "messages", "npa", "-o", "json").stdout)
    assert [m["body"] for m in history] == [{"hi": 2}, "disk full"]  # newest first
    r = progressive(root, "agents", "messages", "--channel", "system-alerts", "--status", "queued", "-o", "json")
    assert [m["to"] for m in json.loads(r.stdout)] == ["remote"]
    r = progressive(root, "agents", "messages", "--limit", "1", "-o", "json")
    assert [m["body"] for m in json.loads(r.stdout)] == [{"hi": 2}]


EXACTLY_ONE = "error: give AGENT or --channel CHANNEL (exactly one)"


@pytest.mark.parametrize(("args", "code", "says"), [
    (("send", "npa", "--body", "{bad"), 2, "error: --body: not JSON"),
    (("send", "npx", "--body", "1"), 4, "error: no agent 'npx' (did you mean 'npa'?)"),
    (("send", "bma", "--body", "1"), 2, "error: agent 'bma' is disabled"),
    (("send", "--channel", "alerts", "--body", "1"), 2, "error: --channel: unknown channel 'alerts'"),
    (("send", "npa", "--channel", "coordination", "--body", "1"), 2, EXACTLY_ONE),
    (("send", "--body", "1"), 2, EXACTLY_ONE),
    (("messages", "--status", "sent"), 2, "error: --status: unknown status 'sent'"),
    (("deliver", "nope"), 4, "error: no agent 'nope'"),
])
def test_bad_input(project: tuple[Path, int], args: tuple[str, ...], code: int, says: str) -> None:
    root, _ = project
    r = progressive(root, "agents", *args)
    assert (r.returncode, r.stdout) == (code, "")
    assert r.stderr.startswith(says) and len(r.stderr.splitlines()) == 1
    assert not (root / ".progressive").exists()  # nothing was written
