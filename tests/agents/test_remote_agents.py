"""Remote agents against real processes and a real HTTP server: command and http kinds.

Timing margins are wide on purpose (the CI machine has 2 shared cores): agent timeouts are 2-3 s,
"slow" agents sleep for 60 s, and a call that must be cut short is asserted to return well before
that sleep would end, never within a tight bound.
"""

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

from progressive_cli.agents.remote import CommandAgent, HttpAgent
from progressive_cli.config.agents import AgentsFile
from progressive_cli.errors import StepError

pytestmark = [
    pytest.mark.timeout(60),
    # a subprocess transport or socket left for the garbage collector after its loop closed fails the test
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]

CONTEXT = {"execution_id": "exec-1", "step": "s", "idempotency_key": "exec-1:s:1"}
SLOW = 60  # seconds a "slow" agent sleeps; every cut-short call must return long before
CUT_SHORT = 20  # ... this many seconds


def agent_config(**spec: Any) -> Any:
    return AgentsFile.model_validate({"agents": [spec]}).agents[0]


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def command_agent(tmp_path: Path, name: str, body: str, **extra: Any) -> CommandAgent:
    spec = {"id": "cmd", "kind": "command", "command": [sys.executable, script(tmp_path, name, body)], **extra}
    return CommandAgent(agent_config(**spec))


def sh_agent(shell: str, **extra: Any) -> CommandAgent:
    return CommandAgent(agent_config(id="cmd", kind="command", command=["sh", "-c", shell], **extra))


def failure(coro: Any) -> StepError:
    with pytest.raises(StepError) as info:
        asyncio.run(coro)
    return info.value


def timed_failure(coro: Any) -> tuple[StepError, float]:
    started = time.monotonic()
    err = failure(coro)
    return err, time.monotonic() - started


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


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def read_pids(path: Path) -> list[int]:
    assert wait_for(path.exists), "the agent never recorded its pids"
    return [int(p) for p in path.read_text().split()]


@pytest.fixture
def strays() -> Iterator[list[int]]:
    """Pids a test must not leave running, whatever happens to it."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


ECHO = """
    import json, os, sys
    request = json.load(sys.stdin)
    print(json.dumps({"output": {"request": request, "canary": os.environ.get("CANARY"), "cwd": os.getcwd()},
                      "confidence": 0.9, "metadata": {"by": "echo"}}))
"""

# sh as the agent and `sleep` as its child: both start in milliseconds, so the pids are on disk long
# before the timeout however loaded the machine is.
SLEEPER_SH = f'sleep {SLOW} & printf "%s %s" $$ $! > "$PIDS.tmp" && mv "$PIDS.tmp" "$PIDS"; wait'


# --------------------------------------------------------------------------- command agents: answers


def test_command_success_with_confidence_and_metadata(tmp_path: Path) -> None:
    agent = command_agent(tmp_path, "echo", ECHO, cwd=str(tmp_path))
    answer = asyncio.run(agent("plan", {"x": 1}, CONTEXT, instance="cmd#0"))
    assert answer["confidence"] == 0.9 and answer["metadata"] == {"by": "echo"}
    assert answer["output"]["request"] == {"method": "plan", "params": {"x": 1},
                                           "context": {"execution_id": "exec-1", "step": "s"},
                                           "idempotency_key": "exec-1:s:1"}
    assert answer["output"]["cwd"] == str(tmp_path)


def test_command_agent_in_another_language() -> None:
    """Any program that reads JSON on stdin and prints JSON is an agent: here, a shell one-liner."""
    agent = sh_agent('request=$(cat); printf \'{"output": {"got": %s, "lang": "sh"}, "confidence": 0.5}\' "$request"')
    answer = asyncio.run(agent("m", {"n": 2}, CONTEXT))
    assert answer["confidence"] == 0.5 and answer["output"]["lang"] == "sh"
    assert answer["output"]["got"]["params"] == {"n": 2} and answer["output"]["got"]["method"] == "m"


def test_command_relative_cwd_is_under_the_project_root(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    spec = {"id": "cmd", "kind": "command", "command": [sys.executable, script(tmp_path, "echo", ECHO)], "cwd": "sub"}
    answer = asyncio.run(CommandAgent(agent_config(**spec), root=str(tmp_path))("m", {}, CONTEXT))
    assert answer["output"]["cwd"] == str(tmp_path / "sub")


def test_command_agent_reported_error(tmp_path: Path) -> None:
    agent = command_agent(tmp_path, "err", "import json; print(json.dumps({'error': 'no such meal'}))\n")
    err = failure(agent("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "no such meal" in err.message and err.details["reason"] == "agent_error"


def test_command_malformed_json(tmp_path: Path) -> None:
    agent = command_agent(tmp_path, "bad", "print('this is {not json')\n")
    err = failure(agent("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "malformed response" in err.message
    assert err.details["reason"] == "malformed_response"


def test_command_object_without_output_is_malformed(tmp_path: Path) -> None:
    agent = command_agent(tmp_path, "noout", "print('{\"result\": 1}')\n")
    err = failure(agent("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "malformed response" in err.message


def test_command_that_never_reads_its_request(tmp_path: Path) -> None:
    """A 1 MiB request to an agent that does not read stdin: the broken pipe is no failure of ours."""
    agent = sh_agent('printf \'{"output": "ignored you"}\'')
    assert asyncio.run(agent("m", {"blob": "x" * (1 << 20)}, CONTEXT)) == {"output": "ignored you"}


# --------------------------------------------------------------------------- command agents: crashes


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


def test_command_crash_with_a_traceback_is_one_line(tmp_path: Path) -> None:
    err = failure(command_agent(tmp_path, "crash", "import sys; sys.stdin.read(); 1 / 0\n")("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "exited with code 1" in err.message
    assert "ZeroDivisionError" in err.message and "\n" not in err.message and "Traceback" not in err.message


def test_command_killed_mid_answer_is_an_agent_error(tmp_path: Path) -> None:
    """The agent starts its answer, then dies by SIGKILL: a typed error, not a half-parsed answer."""
    body = """
        import os, signal, sys
        sys.stdin.read()
        sys.stdout.write('{"output": {"partial": ')
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """
    err = failure(command_agent(tmp_path, "victim", body)("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "killed by SIGKILL" in err.message and err.details["exit_code"] == -9


def test_command_killed_from_outside_mid_call(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    agent = sh_agent(SLEEPER_SH, env={"PIDS": str(pids)}, timeout=f"{SLOW * 2}s")

    def killer() -> None:
        if wait_for(pids.exists, CUT_SHORT):
            os.kill(int(pids.read_text().split()[0]), signal.SIGTERM)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    err, elapsed = timed_failure(agent("m", {}, CONTEXT))
    thread.join()
    assert err.kind == "AGENT_ERROR" and "killed by SIGTERM" in err.message and elapsed < CUT_SHORT
    # the sh agent's own child (sleep) held the pipes open: it was killed with the agent's group
    assert wait_for(lambda: gone(read_pids(pids)[1]))


def test_command_that_cannot_start(tmp_path: Path) -> None:
    agent = CommandAgent(agent_config(id="cmd", kind="command", command=[str(tmp_path / "missing-binary")]))
    err = failure(agent("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "cannot start" in err.message and err.details["reason"] == "cannot_start"


def test_command_oversized_answer_is_cut_off(tmp_path: Path) -> None:
    """17 MiB on stdout, then the agent lingers: the call stops reading at 16 MiB and kills it.
    (The earlier version hung here: its stdout reader stopped, the full pipe was never drained,
    and ``Process.wait()`` waits for the pipes to close.)"""
    body = f"""
        import sys, time
        sys.stdout.write('x' * (17 * 1024 * 1024))
        sys.stdout.flush()
        time.sleep({SLOW})
    """
    err, elapsed = timed_failure(command_agent(tmp_path, "huge", body, timeout=f"{SLOW * 2}s")("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "16 MiB" in err.message and elapsed < CUT_SHORT
    assert err.details["reason"] == "response_too_large"


# --------------------------------------------------------------------------- command agents: timeouts


def test_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    agent = sh_agent(SLEEPER_SH, env={"PIDS": str(pids)}, timeout="3s")
    err, elapsed = timed_failure(agent("m", {}, CONTEXT))
    assert err.kind == "TIMEOUT" and "3s" in err.message and elapsed < CUT_SHORT
    agent_pid, child_pid = read_pids(pids)
    assert wait_for(lambda: gone(child_pid)), "the agent's child outlived the timeout"
    with pytest.raises(ProcessLookupError):
        os.kill(agent_pid, 0)  # the agent itself is gone and was reaped, not left a zombie


def test_command_timeout_with_pipes_held_by_an_escaped_grandchild(tmp_path: Path, strays: list[int]) -> None:
    """A grandchild that left the agent's session keeps stdout and stderr open and survives the group kill:
    the call still ends at its timeout (our ends of the pipes are closed, nothing waits on them)."""
    pids = tmp_path / "pids"
    agent = sh_agent(f'setsid sleep {SLOW} & printf "%s %s" $$ $! > "$PIDS.tmp" && mv "$PIDS.tmp" "$PIDS"; '
                     f"sleep {SLOW}", env={"PIDS": str(pids)}, timeout="3s")
    err, elapsed = timed_failure(agent("m", {}, CONTEXT))
    agent_pid, escaped = read_pids(pids)
    strays.append(escaped)
    assert err.kind == "TIMEOUT" and elapsed < CUT_SHORT
    with pytest.raises(ProcessLookupError):
        os.kill(agent_pid, 0)


def test_command_answer_with_pipes_held_by_a_leftover_child(tmp_path: Path, strays: list[int]) -> None:
    """The agent answers and exits but leaves a child (in another session) holding its stdout: the answer
    counts once the agent has exited and a short grace period has passed."""
    pids = tmp_path / "pids"
    agent = sh_agent(f'setsid sleep {SLOW} & echo $! > "$PIDS"; printf \'{{"output": "done"}}\'',
                     env={"PIDS": str(pids)}, timeout=f"{SLOW * 2}s")
    started = time.monotonic()
    answer = asyncio.run(agent("m", {}, CONTEXT))
    strays.extend(read_pids(pids))
    assert answer == {"output": "done"} and time.monotonic() - started < CUT_SHORT


def test_command_cancelled_by_the_caller_kills_the_process_group(tmp_path: Path) -> None:
    """The runtime's own deadline (a step timeout shorter than the agent's) cancels the call: nothing survives."""
    pids = tmp_path / "pids"
    agent = sh_agent(SLEEPER_SH, env={"PIDS": str(pids)}, timeout=f"{SLOW * 2}s")

    async def cut_short() -> None:
        async with asyncio.timeout(3):
            await agent("m", {}, CONTEXT)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(cut_short())
    assert time.monotonic() - started < CUT_SHORT
    agent_pid, child_pid = read_pids(pids)
    assert wait_for(lambda: gone(agent_pid)) and wait_for(lambda: gone(child_pid))


def test_command_many_calls_at_once(tmp_path: Path) -> None:
    agent = command_agent(tmp_path, "echo", ECHO)

    async def many() -> list[Any]:
        return await asyncio.gather(*(agent("m", {"i": i}, CONTEXT) for i in range(8)))

    answers = asyncio.run(many())
    assert [a["output"]["request"]["params"]["i"] for a in answers] == list(range(8))


# --------------------------------------------------------------------------- command agents: secrets


CANARY = "canary-5ecret-7f3a9b"


def test_command_canary_secret_reaches_the_process_but_never_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_SOURCE", CANARY)
    ok = command_agent(tmp_path, "echo", ECHO, env={"CANARY": "${env:CANARY_SOURCE}"})
    assert asyncio.run(ok("m", {}, CONTEXT))["output"]["canary"] == CANARY

    leaky = """
        import json, os, sys
        sys.stdin.read()
        print("auth failed with key " + os.environ["CANARY"], file=sys.stderr)
        sys.exit(1)
    """
    err = failure(command_agent(tmp_path, "leak", leaky, env={"CANARY": "${env:CANARY_SOURCE}"})("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "auth failed with key ***" in err.message
    assert CANARY not in json.dumps(err.as_dict())

    leaky_answer = "import json, os, sys; print(json.dumps({'error': 'bad ' + os.environ['CANARY']}))\n"
    err = failure(command_agent(tmp_path, "leak2", leaky_answer, env={"CANARY": "${env:CANARY_SOURCE}"})(
        "m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "bad ***" in err.message and CANARY not in json.dumps(err.as_dict())

    # a secret in argv: resolved for the process, masked in the message about the program that cannot start
    argv = [str(tmp_path / "no-such-dir" / "${env:CANARY_SOURCE}")]
    err = failure(CommandAgent(agent_config(id="cmd", kind="command", command=argv))("m", {}, CONTEXT))
    assert err.kind == "AGENT_ERROR" and "cannot start" in err.message and CANARY not in json.dumps(err.as_dict())


def test_command_missing_secret_starts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE_X", raising=False)
    marker = tmp_path / "started"
    for spec in ({"env": {"K": "${env:NOT_SET_ANYWHERE_X}"}, "command": ["sh", "-c", f"touch {marker}"]},
                 {"command": ["sh", "-c", f"touch {marker}", "${env:NOT_SET_ANYWHERE_X}"]}):
        err = failure(CommandAgent(agent_config(id="cmd", kind="command", **spec))("m", {}, CONTEXT))
        assert err.kind == "AGENT_ERROR" and "NOT_SET_ANYWHERE_X is not set" in err.message
        assert err.details["reason"] == "missing_secret"
    assert not marker.exists()


# --------------------------------------------------------------------------- http agents


RELEASE = threading.Event()  # set at each server's teardown: handlers waiting on it finish at once


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]
    timeout = 30  # a connection that never sends its request cannot hold a handler thread for ever

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client gave up (timeout and cut-off tests)
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, b'{"status": "ok"}')
        elif self.path == "/slow/health":
            RELEASE.wait(SLOW)
            self._send(200, b"{}")
        else:
            self._send(503, b"down for maintenance")

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, "headers": dict(self.headers), "body": request})
        if self.path == "/ok":
            self._send(200, json.dumps({"output": {"echo": request}, "confidence": 0.7,
                                        "metadata": {"server": "test"}}).encode())
        elif self.path == "/bare":
            self._send(200, b"[1, 2, 3]")
        elif self.path == "/agent-error":
            self._send(200, b'{"error": "no such meal"}')
        elif self.path == "/error":
            self._send(500, b'{"detail": "boom"}')
        elif self.path == "/echo-auth-500":
            self._send(500, f"denied for {self.headers['Authorization']}".encode(), "text/plain")
        elif self.path == "/slow":
            RELEASE.wait(SLOW)
            self._send(200, b'{"output": "late"}')
        elif self.path == "/malformed":
            self._send(200, b"<html>oops</html>", "text/html")
        elif self.path == "/drop":  # the server crashes before it answers
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif self.path == "/cut":  # the server dies mid-answer: headers and half the promised body
            self._send(200, b'{"output": "tru', length=40)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif self.path == "/huge-declared":  # promises 17 MiB (and would send it)
            self._send(200, b"x" * (17 * 1024 * 1024))
        elif self.path == "/huge-streamed":  # no Content-Length: the body runs until the server closes
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(17 * 16):
                    self.wfile.write(b"x" * 65536)
            self.close_connection = True
        else:
            self._send(404, b"not found")


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    handler = type("Handler", (_Handler,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False  # server_close() must not wait for handlers still in flight
    RELEASE.clear()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        RELEASE.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def http_agent(url: str, **extra: Any) -> HttpAgent:
    return HttpAgent(agent_config(id="web", kind="http", endpoints=[{"url": url}], **extra))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _closing(agent: HttpAgent, coro: Any) -> Any:
    """Await ``coro``, then close the agent's client before its event loop ends."""
    try:
        return await coro
    finally:
        await agent.aclose()


def call(agent: HttpAgent, *args: Any, **kwargs: Any) -> Any:
    return asyncio.run(_closing(agent, agent(*args, **kwargs)))


def http_failure(agent: HttpAgent, *args: Any, **kwargs: Any) -> tuple[StepError, float]:
    return timed_failure(_closing(agent, agent(*args, **kwargs)))


def health(agent: HttpAgent, instance: str | None = None) -> tuple[bool, str]:
    return asyncio.run(_closing(agent, agent.health(instance)))


def test_http_success_with_confidence_metadata_and_idempotency_key(
        server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    base, seen = server
    monkeypatch.setenv("WEB_TOKEN", "tok-123456")
    agent = http_agent(f"{base}/ok", headers={"Authorization": "Bearer ${env:WEB_TOKEN}"})
    answer = call(agent, "plan", {"x": 1}, CONTEXT)
    assert answer == {"output": {"echo": {"method": "plan", "params": {"x": 1},
                                          "context": {"execution_id": "exec-1", "step": "s"},
                                          "idempotency_key": "exec-1:s:1"}},
                      "confidence": 0.7, "metadata": {"server": "test"}}
    headers = seen[0]["headers"]
    assert headers["Idempotency-Key"] == "exec-1:s:1" and headers["Authorization"] == "Bearer tok-123456"
    assert headers["Content-Type"] == "application/json"


def test_http_bare_value_and_chosen_instance(server: Any) -> None:
    base, seen = server
    agent = HttpAgent(agent_config(id="web", kind="http", endpoints=[{"url": f"{base}/ok"}, {"url": f"{base}/bare"}]))
    assert call(agent, "m", {}, CONTEXT, instance=f"{base}/bare") == {"output": [1, 2, 3]}
    assert call(agent, "m", {}, CONTEXT)["output"]["echo"]["method"] == "m"  # no instance: the first endpoint
    assert [s["path"] for s in seen] == ["/bare", "/ok"]
    err, _ = http_failure(agent, "m", {}, CONTEXT, instance="web#0")  # only its endpoints are its instances
    assert err.kind == "AGENT_ERROR" and err.details["reason"] == "unknown_instance" and len(seen) == 2


def test_http_agent_reported_error(server: Any) -> None:
    err, _ = http_failure(http_agent(f"{server[0]}/agent-error"), "m", {}, CONTEXT)
    assert err.kind == "AGENT_ERROR" and "no such meal" in err.message and err.details["reason"] == "agent_error"


def test_http_500_is_agent_error_with_status(server: Any) -> None:
    err, _ = http_failure(http_agent(f"{server[0]}/error"), "m", {}, CONTEXT)
    assert err.kind == "AGENT_ERROR" and "HTTP 500" in err.message and "boom" in err.message
    assert err.details["status"] == 500


def test_http_slow_answer_is_timeout(server: Any) -> None:
    err, elapsed = http_failure(http_agent(f"{server[0]}/slow", timeout="2s"), "m", {}, CONTEXT)
    assert err.kind == "TIMEOUT" and elapsed < CUT_SHORT


def test_http_connection_refused_is_network_error() -> None:
    err, _ = http_failure(http_agent(f"http://127.0.0.1:{closed_port()}/ok"), "m", {}, CONTEXT)
    assert err.kind == "NETWORK_ERROR" and "ConnectError" in err.message


def test_http_server_drops_the_connection_before_answering(server: Any) -> None:
    err, _ = http_failure(http_agent(f"{server[0]}/drop"), "m", {}, CONTEXT)
    assert err.kind == "NETWORK_ERROR" and "RemoteProtocolError" in err.message


def test_http_server_dies_mid_answer(server: Any) -> None:
    err, _ = http_failure(http_agent(f"{server[0]}/cut"), "m", {}, CONTEXT)
    assert err.kind == "NETWORK_ERROR" and "RemoteProtocolError" in err.message


def test_http_malformed_body(server: Any) -> None:
    err, _ = http_failure(http_agent(f"{server[0]}/malformed"), "m", {}, CONTEXT)
    assert err.kind == "AGENT_ERROR" and "malformed response" in err.message


@pytest.mark.parametrize("path", ["/huge-declared", "/huge-streamed"])
def test_http_oversized_answer_is_cut_off(server: Any, path: str) -> None:
    err, elapsed = http_failure(http_agent(f"{server[0]}{path}"), "m", {}, CONTEXT)
    assert err.kind == "AGENT_ERROR" and "16 MiB" in err.message and err.details["reason"] == "response_too_large"
    assert elapsed < CUT_SHORT


def test_http_bad_url_is_a_typed_error() -> None:
    err, _ = http_failure(http_agent("ftp://127.0.0.1/agent"), "m", {}, CONTEXT)
    assert err.kind == "AGENT_ERROR" and err.details["reason"] == "invalid_url"


def test_http_health(server: Any) -> None:
    base, _ = server
    assert health(http_agent(base, health_path="/healthz")) == (True, "HTTP 200")
    ok, detail = health(http_agent(base))  # default /health: the server answers 503
    assert not ok and "HTTP 503" in detail and "maintenance" in detail
    ok, detail = health(http_agent(f"http://127.0.0.1:{closed_port()}"))
    assert not ok and "ConnectError" in detail
    ok, detail = health(http_agent(f"{base}/slow", timeout="2s"))
    assert not ok and "no answer within 2s" in detail
    ok, detail = health(http_agent("not a url at all"))
    assert not ok and detail  # never raises


def test_http_health_of_a_chosen_instance(server: Any) -> None:
    base, _ = server
    agent = HttpAgent(agent_config(id="web", kind="http", health_path="/healthz",
                                   endpoints=[{"url": f"http://127.0.0.1:{closed_port()}"}, {"url": base}]))
    assert health(agent, base) == (True, "HTTP 200")
    assert not health(agent)[0]


def test_http_missing_secret(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    base, seen = server
    monkeypatch.delenv("NOT_SET_ANYWHERE_X", raising=False)
    for agent in (http_agent(f"{base}/ok", headers={"Authorization": "${env:NOT_SET_ANYWHERE_X}"}),
                  http_agent(base + "/ok?key=${env:NOT_SET_ANYWHERE_X}")):
        err, _ = http_failure(agent, "m", {}, CONTEXT)
        assert err.kind == "AGENT_ERROR" and "NOT_SET_ANYWHERE_X is not set" in err.message
        ok, detail = health(agent)
        assert not ok and "NOT_SET_ANYWHERE_X is not set" in detail
    assert seen == []  # nothing was sent


def test_http_canary_secret_reaches_the_server_but_never_an_error(
        server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    base, seen = server
    monkeypatch.setenv("CANARY_SOURCE", CANARY)
    headers = {"Authorization": "Bearer ${env:CANARY_SOURCE}"}
    err, _ = http_failure(http_agent(f"{base}/echo-auth-500", headers=headers), "m", {}, CONTEXT)
    assert seen[-1]["headers"]["Authorization"] == f"Bearer {CANARY}"
    assert err.kind == "AGENT_ERROR" and "denied for Bearer ***" in err.message
    assert CANARY not in json.dumps(err.as_dict())
    # the secret in the url (query and userinfo) of an instance that refuses connections
    url = f"http://user:${{env:CANARY_SOURCE}}@127.0.0.1:{closed_port()}/a?token=${{env:CANARY_SOURCE}}"
    err, _ = http_failure(http_agent(url), "m", {}, CONTEXT)
    assert err.kind == "NETWORK_ERROR" and CANARY not in json.dumps(err.as_dict())
    ok, detail = health(http_agent(url))
    assert not ok and CANARY not in detail


def test_http_client_is_made_on_first_use_and_reused_within_a_loop(server: Any) -> None:
    agent = http_agent(f"{server[0]}/ok")
    assert agent._client is None

    async def twice() -> bool:
        await agent("m", {}, CONTEXT)
        first = agent._client
        await asyncio.gather(*(agent("m", {"i": i}, CONTEXT) for i in range(5)))
        same = agent._client is first
        await agent.aclose()
        return same

    assert asyncio.run(twice()) and agent._client is None
    assert call(agent, "m", {}, CONTEXT)["output"]["echo"]["method"] == "m"  # a new loop gets a new client


def test_httpx_is_not_imported_until_an_http_agent_is_used() -> None:
    code = ("import sys; import progressive_cli.agents.remote as r; "
            "r.HttpAgent; r.CommandAgent; print('httpx' in sys.modules)")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=50)
    assert out.stdout.strip() == "False"
