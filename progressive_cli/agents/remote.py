"""Remote agents: ``command`` (a local process, any language) and ``http`` (a web service).

Both speak the same tiny protocol. The request is one JSON object::

    {"method": ..., "params": ..., "context": ..., "idempotency_key": ...}

and the answer is one JSON object ``{"output": ..., "confidence"?: ..., "metadata"?: ...}``
or ``{"error": "message"}``. A ``command`` agent reads the request on stdin and writes the
answer on stdout; an ``http`` agent receives it as the body of a POST (with an
``Idempotency-Key`` header) and answers with a 2xx JSON body, which may also be a bare value.

Both kinds are async callables ``agent(method, params, context, *, instance=None) -> {"output": ...}``
(``instance`` is the router's instance name: an http endpoint's configured url; a command agent
ignores it) with ``aclose()``; :class:`HttpAgent` also has ``health(instance)``. Failures are
:class:`StepError` kinds: ``AGENT_ERROR`` (the agent failed or answered nonsense), ``TIMEOUT``,
``NETWORK_ERROR`` (http only). Every message is one line run through the secret redactor.
``${env:...}`` references in argv, env, URLs and headers are resolved at call time, never earlier.

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

from progressive_cli.config.secrets import ENV_REF, REDACTOR, MissingSecretError, resolve
from progressive_cli.errors import StepError, one_line

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Largest answer an agent may give (stdout of a command agent, body of an http agent)."""
_STDERR_KEEP = 64 * 1024  # tail of a command agent's stderr kept for the error message
_PIPE_GRACE = 2.0
"""After a command agent exited: how long its stdout/stderr may stay open (held by a child it left behind)."""
_REAP_WAIT = 5.0
"""After SIGKILL: how long to wait for the agent to be reaped before its pipes are closed regardless."""


def _error(kind: str, message: str, **details: Any) -> StepError:
    return StepError(kind, one_line(REDACTOR.redact(message)), details or None)


def _secret_error(agent_id: str, exc: MissingSecretError) -> StepError:
    return _error("AGENT_ERROR", f"agent '{agent_id}': {exc}", reason="missing_secret")


def _too_large(agent_id: str, what: str) -> StepError:
    return _error("AGENT_ERROR", f"agent '{agent_id}' {what} more than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB",
                  reason="response_too_large")


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


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _until(future: asyncio.Future[None], timeout: float) -> bool:
    """Wait for ``future`` at most ``timeout`` seconds without cancelling it; whether it is done."""
    if not future.done() and timeout > 0:
        await asyncio.wait((future,), timeout=timeout)
    return future.done()


# --------------------------------------------------------------------------- command agents


class _Exchange(asyncio.SubprocessProtocol):
    """Collects a command agent's stdout (capped) and stderr (tail) without ever pausing its pipes.

    Owning the protocol (rather than ``asyncio.subprocess.Process``, whose ``wait()`` also waits for
    every pipe to close, and whose readers stop reading when their buffer is full) is what lets a
    call end however the agent behaves: nothing here waits on a pipe that nobody reads.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.too_large = False
        self._open = {1, 2}
        self.exited: asyncio.Future[None] = loop.create_future()  # the agent itself ended and was reaped
        self.drained: asyncio.Future[None] = loop.create_future()  # stdout and stderr closed, or stdout overflowed

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 2:
            self.err += data
            if len(self.err) > 2 * _STDERR_KEEP:
                del self.err[:-_STDERR_KEEP]
        elif not self.too_large:
            self.out += data
            if len(self.out) > MAX_RESPONSE_BYTES:
                self.too_large = True
                self.out.clear()
                _settle(self.drained)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open:
            _settle(self.drained)

    def process_exited(self) -> None:
        _settle(self.exited)


class CommandAgent:
    """Runs ``agent.command`` once per call in its own process group (session); the request goes to its
    stdin, the answer comes from its stdout. On timeout, cancellation or an oversized answer the whole
    group is SIGKILLed, the agent is reaped and its pipes are closed: a call always ends.

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

    async def aclose(self) -> None:
        """Nothing to release: every call has its own process."""

    async def __call__(self, method: str, params: Any, context: Any, *,
                       instance: str | None = None) -> dict[str, Any]:
        try:
            argv = [resolve(part) for part in self.agent.command]
            env = {**os.environ, **{name: resolve(value) for name, value in self.agent.env.items()}}
        except MissingSecretError as exc:
            raise _secret_error(self.agent_id, exc) from None
        body = _request_body(method, params, context)
        loop = asyncio.get_running_loop()
        try:
            transport, proto = await loop.subprocess_exec(
                lambda: _Exchange(loop), *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, cwd=self.cwd, env=env, start_new_session=True)
        except (OSError, ValueError) as exc:  # no such program, not executable, bad cwd, NUL in argv
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise _error("AGENT_ERROR", f"agent '{self.agent_id}': cannot start {argv[0]}: {reason}",
                         reason="cannot_start") from None
        clean = False
        try:
            stdin = transport.get_pipe_transport(0)
            assert isinstance(stdin, asyncio.WriteTransport)
            stdin.write(body)  # an agent that exits without reading it is judged by its exit code
            stdin.close()  # flushes, then closes: the agent sees EOF
            deadline = loop.time() + self.timeout
            await asyncio.wait((proto.exited, proto.drained), timeout=self.timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            if proto.drained.done() and not proto.too_large:
                await _until(proto.exited, deadline - loop.time())  # it closed its stdout; let it finish
            elif proto.exited.done():
                # it exited; a child it left behind may hold the pipes, so give them only a grace period
                await _until(proto.drained, min(_PIPE_GRACE, deadline - loop.time()))
            if proto.too_large:
                raise _too_large(self.agent_id, "wrote")
            if not proto.exited.done():
                raise _error("TIMEOUT", f"agent '{self.agent_id}' did not answer within {self.timeout:g}s; "
                             "its process group was killed")
            clean = proto.drained.done()
        finally:
            await _stop(transport, proto, kill=not clean)
        code = transport.get_returncode()
        assert code is not None
        stdout, stderr = bytes(proto.out), bytes(proto.err[-_STDERR_KEEP:])
        if code != 0:
            raise self._exit_error(code, stdout, stderr)
        return _answer(self.agent_id, stdout, bare_ok=False)

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


async def _stop(transport: asyncio.SubprocessTransport, proto: _Exchange, *, kill: bool) -> None:
    """End a call's process for good: SIGKILL its group (unless it finished cleanly), wait a bounded time
    for the agent to be reaped, then close the transport, which closes our ends of its pipes whoever
    else still holds them. Never waits on a pipe, so neither a full pipe nor a child that left the
    group and kept our stdout can make it hang."""
    try:
        if kill:
            pid = transport.get_pid()
            # start_new_session: the group id is the agent's pid (and stays reserved while the group lives)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            if not proto.exited.done():  # not reaped yet, so the pid is still the agent's
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)  # in case the agent left its group
            await _until(proto.exited, _REAP_WAIT)
    finally:
        transport.close()


# --------------------------------------------------------------------------- http agents


class HttpAgent:
    """POSTs each call to one of ``agent.endpoints`` with one long-lived ``httpx.AsyncClient``.

    The MCA router chooses the instance: pass its name (the endpoint's configured url) as
    ``instance``; without it the first endpoint is used. The client is made on first use and
    belongs to the event loop that made it; a call from another loop makes a new one.
    """

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.agent_id: str = agent.id
        self.timeout: float = float(agent.timeout)
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._urls = [endpoint.url for endpoint in agent.endpoints]  # the instances' names, as configured
        # without ${env:...} references nothing needs resolving per call
        self._fixed_headers: dict[str, str] | None = None
        if not any(ENV_REF.search(value) for value in agent.headers.values()):
            self._fixed_headers = dict(agent.headers)

    def _http(self) -> Any:
        """The agent's client, made on first use (an httpx client belongs to one event loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import httpx

            connections = self.agent.concurrency * len(self.agent.endpoints)
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
                follow_redirects=False,
                trust_env=False,  # no proxies or .netrc from the environment: the URL is the agent
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the client (if it belongs to the running loop; one of a finished loop is dropped)."""
        client, self._client = self._client, None
        loop, self._loop = self._loop, None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()

    def _url(self, instance: str | None) -> tuple[str, str]:
        """(configured url, for messages; resolved url, for the request)."""
        configured = self._urls[0] if instance is None else instance
        if configured not in self._urls:
            raise _error("AGENT_ERROR", f"agent '{self.agent_id}' has no instance {configured!r}; its instances "
                         f"are its endpoints: {', '.join(self._urls)}", reason="unknown_instance")
        if "${" not in configured:
            return configured, configured
        try:
            return configured, resolve(configured)
        except MissingSecretError as exc:
            raise _secret_error(self.agent_id, exc) from None

    def _headers(self) -> dict[str, str]:
        if self._fixed_headers is not None:
            return dict(self._fixed_headers)
        try:
            return {name: resolve(value) for name, value in self.agent.headers.items()}
        except MissingSecretError as exc:
            raise _secret_error(self.agent_id, exc) from None

    async def __call__(self, method: str, params: Any, context: Any, *,
                       instance: str | None = None) -> dict[str, Any]:
        import httpx

        shown, url = self._url(instance)
        headers = self._headers()
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "application/json"
        key = context.get("idempotency_key") if isinstance(context, Mapping) else None
        if key:
            headers["Idempotency-Key"] = str(key)
        body = _request_body(method, params, context)
        client = self._http()
        try:
            async with asyncio.timeout(self.timeout):
                response = await client.send(client.build_request("POST", url, content=body, headers=headers),
                                             stream=True)
                try:
                    raw = await _read_capped(response, self.agent_id)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise _error("TIMEOUT", f"agent '{self.agent_id}' at {shown} did not answer within "
                         f"{self.timeout:g}s") from None
        except httpx.TimeoutException as exc:
            raise _error("TIMEOUT", f"agent '{self.agent_id}' at {shown}: {type(exc).__name__}") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise _error("AGENT_ERROR", f"agent '{self.agent_id}': bad url {shown}: {exc}",
                         reason="invalid_url") from None
        except (httpx.HTTPError, httpx.StreamError) as exc:  # ConnectError, ReadError, RemoteProtocolError, ...
            raise _error("NETWORK_ERROR", f"agent '{self.agent_id}' at {shown}: {type(exc).__name__}: "
                         f"{exc}", endpoint=REDACTOR.redact(shown)) from None
        status = response.status_code
        if not 200 <= status < 300:
            snippet = _snippet(raw)
            raise _error("AGENT_ERROR", f"agent '{self.agent_id}' at {shown} answered HTTP {status}"
                         + (f": {snippet}" if snippet else ""), status=status)
        return _answer(self.agent_id, raw, bare_ok=True)

    async def health(self, instance: str | None = None) -> tuple[bool, str]:
        """GET ``health_path`` on one endpoint: ``(True, "HTTP 200")`` or ``(False, why)``. Never raises."""
        try:
            return await self._health(instance)
        except asyncio.CancelledError:
            raise
        except StepError as exc:
            return False, exc.message
        except Exception as exc:  # never raises: a probe's failure is its answer
            return False, one_line(REDACTOR.redact(f"{type(exc).__name__}: {exc}"))

    async def _health(self, instance: str | None) -> tuple[bool, str]:
        import httpx

        _, url = self._url(instance)
        target = url.rstrip("/") + "/" + self.agent.health_path.lstrip("/")
        headers = self._headers()
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._http().get(target, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            return False, f"no answer within {self.timeout:g}s"
        if 200 <= response.status_code < 300:
            return True, f"HTTP {response.status_code}"
        snippet = _snippet(response.content)
        return False, f"HTTP {response.status_code}" + (f": {snippet}" if snippet else "")


async def _read_capped(response: Any, agent_id: str) -> bytes:
    """The body of a streamed response, at most :data:`MAX_RESPONSE_BYTES` of it."""
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and "content-encoding" not in response.headers:
        if int(length) > MAX_RESPONSE_BYTES:
            raise _too_large(agent_id, "answered with")
        return bytes(await response.aread())  # h11 never delivers more than Content-Length
    buf = bytearray()
    async for chunk in response.aiter_bytes():
        buf += chunk
        if len(buf) > MAX_RESPONSE_BYTES:
            raise _too_large(agent_id, "answered with")
    return bytes(buf)


def _snippet(raw: bytes, limit: int = 200) -> str:
    text = " ".join(raw[: limit * 4].decode(errors="replace").split())
    return one_line(REDACTOR.redact(text[:limit]))
