"""The MCA runtime routing to real remote agents: http agent servers on loopback and a command agent.

Distribution across endpoints, an endpoint whose heartbeat probe failed skipped, a dead endpoint's
breaker opening so that calls move to the live one, and status/metrics in the store.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from progressive_cli.config.agents import AgentsFile
from progressive_cli.engine.executor import AgentRequest
from progressive_cli.errors import StepError
from progressive_cli.mca.runtime import AgentRuntime, instance_report
from progressive_cli.store.sqlite import SQLiteStore

pytestmark = pytest.mark.timeout(120)


class Agent(BaseHTTPRequestHandler):
    hits: Counter[int] = Counter()

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"status": "ok"})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        port = self.server.server_address[1]
        Agent.hits[port] += 1
        self._send(200, {"output": {"port": port, "method": request["method"],
                                    "key": self.headers.get("Idempotency-Key")}, "confidence": 0.9})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def servers() -> Iterator[list[ThreadingHTTPServer]]:
    Agent.hits.clear()
    started = []
    for _ in range(2):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Agent)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def http_agent(*urls: str, **extra: Any) -> list[Any]:
    return AgentsFile.model_validate({"agents": [{
        "id": "remote", "kind": "http", "timeout": "5s", "endpoints": [{"url": u} for u in urls], **extra}]}).agents


def call(method: str = "plan") -> AgentRequest:
    return AgentRequest("remote", None, method, {"x": 1}, "exec:step:1", None, {})


def test_calls_spread_over_endpoints_and_a_failed_probe_is_skipped(servers: list[Any], tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    agents = http_agent(url(servers[0]), url(servers[1]), dead)
    store = SQLiteStore(tmp_path / "state.db")

    async def go() -> list[dict[str, Any]]:
        runtime = AgentRuntime(agents, store=store)
        results = await runtime.check()
        outputs = [await runtime(call()) for _ in range(10)]
        assert {o["key"] for o in outputs} == {"exec:step:1"}  # the idempotency key travels as a header
        await runtime.aclose()
        return results

    results = asyncio.run(go())
    assert [r["ok"] for r in results] == [True, True, False]
    assert Agent.hits == {servers[0].server_address[1]: 5, servers[1].server_address[1]: 5}
    report = instance_report(agents, asyncio.run(store.heartbeats()), asyncio.run(store.agent_metrics()), [],
                             __import__("time").time())
    assert [(r["probe"], r["calls"]) for r in report] == [("ok", 5), ("ok", 5), ("failed", 0)]
    assert report[0]["status"] == "online" and report[0]["p95_ms"] > 0
    asyncio.run(store.close())


def test_a_dead_endpoint_opens_its_breaker_and_calls_move_on(servers: list[Any], tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    agents = http_agent(dead, url(servers[0]), breaker={"fail_max": 2, "reset_timeout": "1h"})
    store = SQLiteStore(tmp_path / "state.db")

    async def go() -> tuple[list[str], StepError]:
        runtime = AgentRuntime(agents, store=store)
        outcomes = []
        for _ in range(8):
            try:
                outcomes.append(str((await runtime(call()))["port"]))
            except StepError as exc:
                outcomes.append(exc.kind)
        servers[0].shutdown()
        servers[0].server_close()
        for _ in range(2):
            with pytest.raises(StepError):
                await runtime(call())
        with pytest.raises(StepError) as info:
            await runtime(call())
        await runtime.aclose()
        return outcomes, info.value

    outcomes, error = asyncio.run(go())
    live = str(servers[0].server_address[1])
    # round-robin: the dead endpoint fails twice (NETWORK_ERROR), then only the live one is used
    assert outcomes == ["NETWORK_ERROR", live, "NETWORK_ERROR", live, live, live, live, live]
    assert "no instance of agent 'remote' is available" in error.message
    assert "circuit breaker open after 2 failures" in error.message
    states = {b["name"]: b["state"] for b in asyncio.run(store.breakers("agent:remote@"))}
    assert set(states.values()) == {"open"} and len(states) == 2
    asyncio.run(store.close())


def test_command_agent_through_the_runtime_and_its_probe(tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(
        "import json, sys\n"
        "req = json.load(sys.stdin)\n"
        "if req['method'] == 'health':\n"
        "    print(json.dumps({'error': 'no method health'}))\n"
        "else:\n"
        "    print(json.dumps({'output': {'echo': req['params'], 'key': req['idempotency_key']}, 'confidence': 1}))\n")
    agents = AgentsFile.model_validate({"agents": [
        {"id": "cmd", "kind": "command", "command": [sys.executable, str(script)], "timeout": "20s"},
        {"id": "broken", "kind": "command", "command": [str(tmp_path / "missing-program")]}]}).agents
    store = SQLiteStore(tmp_path / "state.db")

    async def go() -> tuple[Any, list[dict[str, Any]]]:
        runtime = AgentRuntime(agents, store=store)
        answer = await runtime(AgentRequest("cmd", None, "m", {"a": 1}, "k1", None, {}, envelope=True))
        probes = await runtime.check()
        await runtime.aclose()
        return answer, probes

    answer, probes = asyncio.run(go())
    assert answer == {"output": {"echo": {"a": 1}, "key": "k1"}, "confidence": 1.0}
    assert [(p["agent"], p["ok"]) for p in probes] == [("cmd", True), ("broken", False)]
    assert "cannot start" in probes[1]["detail"]
    asyncio.run(store.close())
