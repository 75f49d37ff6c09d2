"""Remote agents: ``command`` (a local process, any language) and ``http`` (a web service).

Both speak the same tiny protocol. The request is one JSON object::

    {"method": ..., "params": ..., "context": ..., "idempotency_key": ...}

and the answer is one JSON object ``{"output": ..., "confidence"?: ..., "metadata"?: ...}``
or ``{"error": "message"}``. A ``command`` agent reads the request on stdin and writes the
answer on stdout; an ``http`` agent receives it as the body of a POST (with an
``Idempotency-Key`` header) and answers with a 2xx JSON body, which may also be a bare value.

Each agent is an async callable ``(method, params, context) -> {"output": ..., ...}`` that
:class:`progressive_cli.agents.local.LocalAgents` calls. Failures are :class:`StepError` kinds:
``AGENT_ERROR`` (the agent failed or answered nonsense), ``TIMEOUT``, ``NETWORK_ERROR`` (http only).
Every message is run through the secret redactor. ``${env:...}`` references in argv, env, URLs
and headers are resolved at call time, never earlier.

httpx is imported only when an http agent is first used: the CLI must start without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Mapping
from typing import Any

from progressive_cli.config.secrets import REDACTOR, MissingSecretError, resolve
from progressive_cli.errors import StepError, one_line

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Largest answer an agent may give (stdout of a command agent, body of an http agent)."""
_STDERR_KEEP = 64 * 1024  # tail of a command agent's stderr kept for the error message
_CHUNK = 64 * 1024


def _error(kind: str, message: str, **details: Any) -> StepError:
    return StepError(kind, one_line(REDACTOR.redact(message)), details or None)


def _request_body(method: str, params: Any, context: Any) -> bytes:
    ctx = dict(context) if isinstance(context, Mapping) else {}
    key = ctx.pop("idempotency_key", None)
    body = {"method": method, "params": params, "context": ctx, "idempotency_key": key}
    return json.dumps(body, default=str, ensure_ascii=False).encode()


def _answer(agent_id: str, raw: bytes, *, bare_ok: bool) -> dict[str, Any]:
    """Decode an agent's answer into ``{"output": ..., "confidence"?: ..., "metadata"?: ...}``."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _error("AGENT_ERROR", f"agent '{agent_id}' gave a malformed response (not JSON)",
                     reason="malformed_response") from None
    if isinstance(data, dict) and "output" in data:
        answer = {"output": data["output"]}
        for extra in ("confidence", "metadata"):
            if extra in data:
                answer[extra] = data[extra]
        return answer
    if isinstance(data, dict) and "error" in data:
        raise _error("AGENT_ERROR", f"agent '{agent_id}' failed: {data['error']}", reason="agent_error")
    if bare_ok:
        return {"output": data}
    raise _error("AGENT_ERROR", f"agent '{agent_id}' gave a malformed response "
                 "(expected a JSON object with 'output' or 'error')", reason="malformed_response")


# --------------------------------------------------------------------------- command agents


class CommandAgent:
    """Runs ``agent.command`` once per call in its own process group; kills the whole group on timeout.

    ``root`` (the project directory) is where the process runs when ``cwd`` is unset, and what a
    relative ``cwd`` is relative to; without it the current directory is used.
    """

    def __init__(self, agent: Any, root: str | None = None) -> None:
        self.agent = agent
        self.agent_id: str = agent.id
        self.timeout: float = float(agent.timeout)
        cwd = agent.cwd
        if root is not None:
            cwd = os.path.join(root, cwd) if cwd else root
        self.cwd: str | None = cwd

    async def __call__(self, method: str, params: Any, context: Any) -> dict[str, Any]:
        try:
            argv = [resolve(part) for part in self.agent.command]
            env = {**os.environ, **{name: resolve(value) for name, value in self.agent.env.items()}}
        except MissingSecretError as exc:
            raise _error("AGENT_ERROR", f"agent '{self.agent_id}': {exc}", reason="missing_secret") from None
        body = _request_body(method, params, context)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, cwd=self.cwd, env=env, start_new_session=True)
        except OSError as exc:
            raise _error("AGENT_ERROR", f"agent '{self.agent_id}': cannot start {argv[0]}: "
                         f"{exc.strerror or exc}", reason="cannot_start") from None
        finished = False
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    stdout, stderr = await self._exchange(proc, body)
                    code = await proc.wait()
            except TimeoutError:
                raise _error("TIMEOUT", f"agent '{self.agent_id}' did not answer within {self.timeout:g}s; "
                             "its process group was killed") from None
            finished = True
        finally:
            if not finished:  # timeout, cancellation, oversized answer: nothing of the agent may outlive us
                await _kill_group(proc)
        if code != 0:
            raise self._exit_error(code, stdout, stderr)
        return _answer(self.agent_id, stdout, bare_ok=False)

    async def _exchange(self, proc: asyncio.subprocess.Process, body: bytes) -> tuple[bytes, bytes]:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr

        async def write() -> None:
            # the agent may exit without reading its request; that is reported by its exit code
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stdin.write(body)
                await stdin.drain()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stdin.close()
                await stdin.wait_closed()

        async def read_out() -> bytes:
            buf = bytearray()
            while chunk := await stdout.read(_CHUNK):
                buf += chunk
                if len(buf) > MAX_RESPONSE_BYTES:
                    raise _error("AGENT_ERROR", f"agent '{self.agent_id}' wrote more than "
                                 f"{MAX_RESPONSE_BYTES // (1024 * 1024)} MiB to stdout", reason="response_too_large")
            return bytes(buf)

        async def read_err() -> bytes:
            tail = bytearray()
            while chunk := await stderr.read(_CHUNK):
                tail += chunk
                del tail[:-_STDERR_KEEP]
            return bytes(tail)

        writer = asyncio.ensure_future(write())
        out, err = asyncio.ensure_future(read_out()), asyncio.ensure_future(read_err())
        try:
            await asyncio.gather(writer, out, err)
        finally:  # one side failed (an oversized answer) or we were cancelled: stop the others
            for task in (writer, out, err):
                task.cancel()
        return out.result(), err.result()

    def _exit_error(self, code: int, stdout: bytes, stderr: bytes) -> StepError:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            data = json.loads(stdout)
            if isinstance(data, dict) and "error" in data:
                return _error("AGENT_ERROR", f"agent '{self.agent_id}' failed (exit code {code}): {data['error']}",
                              exit_code=code)
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
        last = f": {lines[-1][:500]}" if lines else ""
        return _error("AGENT_ERROR", f"agent '{self.agent_id}' {how}{last}", exit_code=code)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the agent's process group (the agent and everything it started), then reap the agent."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: the group id is the agent's pid
    with contextlib.suppress(ProcessLookupError):
        proc.kill()  # in case the agent left its group
    # shielded so a second cancellation cannot leave a zombie behind
    await asyncio.shield(proc.wait())


# --------------------------------------------------------------------------- http agents


class HttpAgent:
    """POSTs each call to one of ``agent.endpoints`` with one long-lived ``httpx.AsyncClient``.

    The MCA router chooses the instance: pass its name (the endpoint's configured url) as
    ``endpoint``; without it the first endpoint is used.
    """

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.agent_id: str = agent.id
        self.timeout: float = float(agent.timeout)
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> Any:
        """The agent's client, made on first use (an httpx client belongs to one event loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                limits=httpx.Limits(max_connections=self.agent.concurrency * len(self.agent.endpoints)),
                follow_redirects=False,
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = self._loop = None

    def _url(self, endpoint: str | None) -> tuple[str, str]:
        """(configured url, for messages; resolved url, for the request)."""
        configured = endpoint if endpoint is not None else self.agent.endpoints[0].url
        try:
            return configured, resolve(configured)
        except MissingSecretError as exc:
            raise _error("AGENT_ERROR", f"agent '{self.agent_id}': {exc}", reason="missing_secret") from None

    def _headers(self) -> dict[str, str]:
        try:
            return {name: resolve(value) for name, value in self.agent.headers.items()}
        except MissingSecretError as exc:
            raise _error("AGENT_ERROR", f"agent '{self.agent_id}': {exc}", reason="missing_secret") from None

    async def __call__(self, method: str, params: Any, context: Any, *,
                       endpoint: str | None = None) -> dict[str, Any]:
        import httpx

        shown, url = self._url(endpoint)
        headers = {**self._headers(), "Content-Type": "application/json", "Accept": "application/json"}
        key = context.get("idempotency_key") if isinstance(context, Mapping) else None
        if key:
            headers["Idempotency-Key"] = str(key)
        body = _request_body(method, params, context)
        client = self._http()
        try:
            async with asyncio.timeout(self.timeout):
                async with client.stream("POST", url, content=body, headers=headers) as response:
                    status = response.status_code
                    raw = await _read_capped(response, self.agent_id)
        except TimeoutError:
            raise _error("TIMEOUT", f"agent '{self.agent_id}' at {shown} did not answer within "
                         f"{self.timeout:g}s") from None
        except httpx.TimeoutException as exc:
            raise _error("TIMEOUT", f"agent '{self.agent_id}' at {shown}: {type(exc).__name__}") from None
        except httpx.HTTPError as exc:  # ConnectError, ReadError, RemoteProtocolError, ...
            raise _error("NETWORK_ERROR", f"agent '{self.agent_id}' at {shown}: {type(exc).__name__}: "
                         f"{exc}", endpoint=REDACTOR.redact(shown)) from None
        if not 200 <= status < 300:
            snippet = _snippet(raw)
            raise _error("AGENT_ERROR", f"agent '{self.agent_id}' at {shown} answered HTTP {status}"
                         + (f": {snippet}" if snippet else ""), status=status)
        return _answer(self.agent_id, raw, bare_ok=True)

    async def health(self, endpoint: str | None = None) -> tuple[bool, str]:
        """GET ``health_path`` on one endpoint: ``(True, "HTTP 200")`` or ``(False, why)``. Never raises."""
        import httpx

        try:
            _, url = self._url(endpoint)
            headers = self._headers()
        except StepError as exc:
            return False, exc.message
        target = url.rstrip("/") + "/" + self.agent.health_path.lstrip("/")
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._http().get(target, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            return False, f"no answer within {self.timeout:g}s"
        except httpx.HTTPError as exc:
            return False, one_line(REDACTOR.redact(f"{type(exc).__name__}: {exc}"))
        if 200 <= response.status_code < 300:
            return True, f"HTTP {response.status_code}"
        snippet = _snippet(response.content)
        return False, f"HTTP {response.status_code}" + (f": {snippet}" if snippet else "")


async def _read_capped(response: Any, agent_id: str) -> bytes:
    buf = bytearray()
    async for chunk in response.aiter_bytes():
        buf += chunk
        if len(buf) > MAX_RESPONSE_BYTES:
            raise _error("AGENT_ERROR", f"agent '{agent_id}' answered with more than "
                         f"{MAX_RESPONSE_BYTES // (1024 * 1024)} MiB", reason="response_too_large")
    return bytes(buf)


def _snippet(raw: bytes, limit: int = 200) -> str:
    text = " ".join(raw.decode(errors="replace").split())
    return one_line(REDACTOR.redact(text[:limit]))
