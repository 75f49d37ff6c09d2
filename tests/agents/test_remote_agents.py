"""Remote agents against real processes and a real HTTP server: command and http kinds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from progressive_cli.agents.local import LocalAgents
from progressive_cli.agents.remote import CommandAgent, HttpAgent
from progressive_cli.config.agents import AgentsFile
from progressive_cli.engine.executor import AgentRequest
from progressive_cli.errors import StepError

CONTEXT = {"execution_id": "exec-1", "step": "s", "idempotency_key": "exec-1:s:1"}


def agent_config(**spec: Any) -> Any:
    return AgentsFile.model_validate({"agents": [spec]}).agents[0]


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def command_agent(tmp_path: Path, name: str, body: str, **extra: Any) -> CommandAgent:
    spec = {"id": "cmd", "kind": "command", "command": [sys.executable, script(tmp_path, name, body)], **extra}
    return CommandAgent(agent_config(**spec))


def failure(coro: Any) -> StepError:
    with pytest.raises(StepError) as info:
        asyncio.run(coro)
    return info.value


def gone(pid: int) -> bool:
    """The process no longer runs: it does not exist, or is a zombie waiting for an init that may not reap."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


ECHO = """
    import json, os, sys
    request = json.load(sys.stdin)
    print(json.dumps({"output": {"request": request, "canary": os.environ.get("CANARY"), "cwd": os.getcwd()},
                      "confidence": 0.9, "metadata": {"by": "echo"}}))
"""


def sleeper(pids: Path) -> str:
    """An agent that starts a child, records both pids, and sleeps past any timeout."""
    return f"""
        import json, os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        with open({str(pids)!r} + ".tmp", "w") as f:
            json.dump({{"agent": os.getpid(), "child": child.pid}}, f)
        os.replace({str(pids)!r} + ".tmp", {str(pids)!r})
        time.sleep(30)
    """


# --------------------------------------------------------------------------- command agents


def test_command_echo_round_trip(tmp_path: Path) -> None:
    agent = command_agent(tmp_path, "echo", ECHO, cwd=str(tmp_path))
    answer = asyncio.run(agent("plan", {"x": 1}, CONTEXT))
    assert answer["confidence"] == 0.9 and answer["metadata"] == {"by": "echo"}
    assert answer["output"]["request"] == {"method": "plan", "params": {"x": 1},
                                           "context": {"execution_id": "exec-1", "step": "s"},
                                           "idempotency_key": "exec-1:s:1"}
    assert answer["output"]["cwd"] == str(tmp_path)


def test_command_relative_cwd_is_under_the_project_root(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    spec = {"id": "cmd", "kind": "command", "command": [sys.executable, script(tmp_path, "echo", ECHO)], "cwd": "sub"}
    answer = asyncio.run(CommandAgent(agent_config(**spec), root=str(tmp_path))("m", {}, CONTEXT))
    assert answer["output"]["cwd"] == str(tmp_path / "sub")


def test_command_malformed_json(tmp_path: Path) -> None:
    agent = command_agent(tmp_path, "bad", "print('this is {not json')\n")
    err = failure(agent("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "malformed response" in err.message


def test_command_object_without_output_is_malformed(tmp_path: Path) -> None:
    agent = command_agent(tmp_path, "noout", "print('{\"result\": 1}')\n")
    err = failure(agent("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "malformed response" in err.message


def test_command_error_answer(tmp_path: Path) -> None:
    agent = command_agent(tmp_path, "err", "import json; print(json.dumps({'error': 'no such meal'}))\n")
    err = failure(agent("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "no such meal" in err.message


def test_command_non_zero_exit_reports_code_and_last_stderr_line(tmp_path: Path) -> None:
    body = """
        import sys
        sys.stdin.read()
        print("warming up", file=sys.stderr)
        print("database is locked", file=sys.stderr)
        sys.exit(3)
    """
    err = failure(command_agent(tmp_path, "exit3", body)("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR"
    assert "exited with code 3" in err.message and "database is locked" in err.message
    assert "warming up" not in err.message and err.details["exit_code"] == 3


def test_command_that_cannot_start(tmp_path: Path) -> None:
    agent = CommandAgent(agent_config(id="cmd", kind="command", command=[str(tmp_path / "missing-binary")]))
    err = failure(agent("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "cannot start" in err.message


def test_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids.json"
    agent = command_agent(tmp_path, "sleeper", sleeper(pids), timeout=1.0)
    started = time.monotonic()
    err = failure(agent("m", {}, CONTEXT))
    assert err.kind == "TIMEOUT" and time.monotonic() - started < 10
    recorded = json.loads(pids.read_text())
    assert wait_for(lambda: gone(recorded["agent"])), "the agent outlived its timeout"
    assert wait_for(lambda: gone(recorded["child"])), "the agent's child outlived the timeout"
    with pytest.raises(ProcessLookupError):
        os.kill(recorded["agent"], 0)  # the agent itself was reaped, not left a zombie


def test_command_killed_mid_call_is_an_agent_error(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    body = f"""
        import os, time
        with open({str(pid_file)!r} + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace({str(pid_file)!r} + ".tmp", {str(pid_file)!r})
        time.sleep(30)
    """
    agent = command_agent(tmp_path, "victim", body, timeout=20.0)

    def killer() -> None:
        if wait_for(pid_file.exists, 10):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    started = time.monotonic()
    err = failure(agent("m", {}, CONTEXT))
    thread.join()
    assert err.kind == "AGENT_ERROR" and "SIGKILL" in err.message and time.monotonic() - started < 10


def test_command_canary_secret_reaches_the_process_but_never_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-5ecret-7f3a9b"
    monkeypatch.setenv("CANARY_SOURCE", canary)
    ok = command_agent(tmp_path, "echo", ECHO, env={"CANARY": "${env:CANARY_SOURCE}"})
    assert asyncio.run(ok("m", {}, CONTEXT))["output"]["canary"] == canary

    leaky = """
        import json, os, sys
        sys.stdin.read()
        print("auth failed with key " + os.environ["CANARY"], file=sys.stderr)
        sys.exit(1)
    """
    err = failure(command_agent(tmp_path, "leak", leaky, env={"CANARY": "${env:CANARY_SOURCE}"})("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "auth failed with key ***" in err.message
    assert canary not in err.message and canary not in json.dumps(err.as_dict())

    leaky_answer = "import json, os, sys; print(json.dumps({'error': 'bad ' + os.environ['CANARY']}))\n"
    err = failure(command_agent(tmp_path, "leak2", leaky_answer, env={"CANARY": "${env:CANARY_SOURCE}"})(
        "m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and canary not in err.message


def test_command_missing_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE_X", raising=False)
    agent = command_agent(tmp_path, "echo", ECHO, env={"K": "${env:NOT_SET_ANYWHERE_X}"})
    err = failure(agent("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "NOT_SET_ANYWHERE_X is not set" in err.message


def test_command_oversized_answer_is_cut_off(tmp_path: Path) -> None:
    body = "import sys; sys.stdout.write('x' * (17 * 1024 * 1024)); sys.stdout.flush()\n"
    err = failure(command_agent(tmp_path, "huge", body)("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "16 MiB" in err.message


# --------------------------------------------------------------------------- http agents


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, b'{"status": "ok"}')
        else:
            self._send(503, b"down for maintenance")

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, "headers": dict(self.headers), "body": request})
        if self.path == "/ok":
            self._send(200, json.dumps({"output": {"echo": request}, "confidence": 0.7}).encode())
        elif self.path == "/bare":
            self._send(200, b"[1, 2, 3]")
        elif self.path == "/error":
            self._send(500, b'{"detail": "boom"}')
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, b'{"output": "late"}')
        elif self.path == "/malformed":
            self._send(200, b"<html>oops</html>", "text/html")
        else:
            self._send(404, b"not found")


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    handler = type("Handler", (_Handler,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def http_agent(url: str, **extra: Any) -> HttpAgent:
    return HttpAgent(agent_config(id="web", kind="http", endpoints=[{"url": url}], **extra))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_success_and_idempotency_key(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    base, seen = server
    monkeypatch.setenv("WEB_TOKEN", "tok-123456")
    agent = http_agent(f"{base}/ok", headers={"Authorization": "Bearer ${env:WEB_TOKEN}"})
    answer = asyncio.run(agent("plan", {"x": 1}, CONTEXT))
    assert answer == {"output": {"echo": {"method": "plan", "params": {"x": 1},
                                          "context": {"execution_id": "exec-1", "step": "s"},
                                          "idempotency_key": "exec-1:s:1"}}, "confidence": 0.7}
    headers = seen[0]["headers"]
    assert headers["Idempotency-Key"] == "exec-1:s:1" and headers["Authorization"] == "Bearer tok-123456"


def test_http_bare_value_and_chosen_endpoint(server: Any) -> None:
    base, seen = server
    agent = HttpAgent(agent_config(id="web", kind="http", endpoints=[{"url": f"{base}/ok"}, {"url": f"{base}/bare"}]))
    assert asyncio.run(agent("m", {}, CONTEXT, endpoint=f"{base}/bare")) == {"output": [1, 2, 3]}
    assert seen[0]["path"] == "/bare"


def test_http_500_is_agent_error(server: Any) -> None:
    err = failure(http_agent(f"{server[0]}/error")("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "HTTP 500" in err.message and "boom" in err.message
    assert err.details["status"] == 500


def test_http_slow_answer_is_timeout(server: Any) -> None:
    started = time.monotonic()
    err = failure(http_agent(f"{server[0]}/slow", timeout=0.5)("m", {}, CONTEXT))
    assert err.kind == "TIMEOUT" and time.monotonic() - started < 2.5


def test_http_connection_refused_is_network_error() -> None:
    err = failure(http_agent(f"http://127.0.0.1:{closed_port()}/ok")("m", {}, CONTEXT))
    assert err.kind == "NETWORK_ERROR"


def test_http_malformed_body(server: Any) -> None:
    err = failure(http_agent(f"{server[0]}/malformed")("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "malformed response" in err.message


def test_http_health(server: Any) -> None:
    base, _ = server
    assert asyncio.run(http_agent(base, health_path="/healthz").health()) == (True, "HTTP 200")
    ok, detail = asyncio.run(http_agent(base).health())  # default /health: the server answers 503
    assert not ok and "HTTP 503" in detail and "maintenance" in detail
    ok, detail = asyncio.run(http_agent(f"http://127.0.0.1:{closed_port()}").health())
    assert not ok and "ConnectError" in detail


def test_http_client_is_reused_within_a_loop(server: Any) -> None:
    agent = http_agent(f"{server[0]}/ok")

    async def twice() -> bool:
        await agent("m", {}, CONTEXT)
        first = agent._client
        await agent("m", {}, CONTEXT)
        same = agent._client is first
        await agent.aclose()
        return same

    assert asyncio.run(twice())


# --------------------------------------------------------------------------- through LocalAgents


def test_local_agents_end_to_end(tmp_path: Path, server: Any) -> None:
    base, seen = server
    config = AgentsFile.model_validate({"agents": [
        {"id": "cmd", "kind": "command", "capabilities": ["echoing"],
         "command": [sys.executable, script(tmp_path, "echo", ECHO)], "timeout": "10s"},
        {"id": "web", "kind": "http", "capabilities": ["webbing"], "endpoints": [{"url": f"{base}/ok"}],
         "timeout": "10s"},
    ]})
    runtime = LocalAgents(config.agents)

    def call(agent: str | None, capability: str | None) -> Any:
        return asyncio.run(runtime(AgentRequest(agent=agent, capability=capability, method="go", params={"n": 2},
                                                idempotency_key="run:step:1", timeout=None,
                                                context={"execution_id": "run"})))

    out = call("cmd", None)
    assert out["request"]["method"] == "go" and out["request"]["idempotency_key"] == "run:step:1"
    out = call(None, "webbing")
    assert out["echo"]["params"] == {"n": 2} and seen[-1]["headers"]["Idempotency-Key"] == "run:step:1"


def test_local_agents_request_timeout_also_kills_the_process_group(tmp_path: Path) -> None:
    """The runtime's own deadline (a step timeout shorter than the agent's) cancels the call: nothing survives."""
    pids = tmp_path / "pids.json"
    config = AgentsFile.model_validate({"agents": [
        {"id": "cmd", "kind": "command", "command": [sys.executable, script(tmp_path, "sleeper", sleeper(pids))],
         "timeout": "30s"}]})
    request = AgentRequest(agent="cmd", capability=None, method="m", params={}, idempotency_key="k",
                           timeout=1.0, context={})
    err = failure(LocalAgents(config.agents)(request))
    assert err.kind == "TIMEOUT"
    recorded = json.loads(pids.read_text())
    assert wait_for(lambda: gone(recorded["agent"])) and wait_for(lambda: gone(recorded["child"]))
