"""External HTTP APIs: one long-lived httpx.AsyncClient per integration, with auth, rate limits, a
circuit breaker, retries and metrics.

One request goes through, in order:

1. **retry loop** (outside the breaker, so an open breaker fails fast): exponential backoff with
   full jitter and a cap, or the server's ``Retry-After`` (seconds or HTTP date, capped by
   ``retry.max_retry_after``). Only idempotent methods are retried, unless the request carries an
   ``Idempotency-Key`` header (or the step says ``idempotent: true``);
2. **breaker check**: while open, fail with CIRCUIT_BREAKER_OPEN; nothing leaves the process;
3. **connection slot** (``max_connections``), then **rate limiter** (pyrate-limiter, one bucket with
   every configured rate): wait up to ``max_wait`` or fail fast with RATE_LIMITED, as configured. The
   slot is taken first so that a request that got its rate-limit slot is sent at once: a request
   held back in a pool queue after its slot could otherwise reach the server inside the next
   window. Each window is also widened by ``WINDOW_MARGIN_MS`` for the time between the limiter and
   the server;
4. **pybreaker** ``calling()`` around the request itself, counting the failures the integration's
   ``circuit_breaker.count`` lists (API_ERROR only for 5xx and ``count_status``);
5. **metrics**: every request sent is timed; rate-limit hits, retries, rejections and breaker
   openings are counted.

Errors are :class:`StepError` kinds from the seed: API_ERROR (with ``status``), RATE_LIMITED (with
``retry_after``), CIRCUIT_BREAKER_OPEN, NETWORK_ERROR and TIMEOUT. Messages name the integration,
method and path, never the full URL (a query-string API key would show) or a credential.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping
from typing import Any

import httpx
import pybreaker
from pyrate_limiter import InMemoryBucket, Limiter, Rate

from progressive_cli.config.secrets import REDACTOR
from progressive_cli.errors import StepError, one_line
from progressive_cli.integrations.breakers import IntegrationBreaker

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
WINDOW_MARGIN_MS = 50
"""Each rate-limit window is this much longer than configured, for the time between taking a slot
and the request reaching the server (event-loop turns, connection set-up)."""
ERROR_BODY_CHARS = 500
USER_AGENT = "progressive/0.1 (+httpx)"

Sleep = Callable[[float], Awaitable[None]]


Record = Callable[[bool, float, str | None], None]
"""Record one request sent: ok, latency in ms, error."""
Count = Callable[[str], None]
"""Count one ``rate_limited``, ``retries`` or ``rejected`` (the store's integration counters)."""


# --- auth ---------------------------------------------------------------------------------------------
class OAuth2ClientCredentials(httpx.Auth):
    """OAuth 2.0 client credentials (RFC 6749 4.4): the token is cached, refreshed ``refresh_margin``
    seconds before it expires, and once more when the API answers 401 (it may have been revoked)."""

    def __init__(self, config: Any, timeout: httpx.Timeout, integration: str,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.integration = integration
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport, headers={"User-Agent": USER_AGENT})
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._current()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            token = await self._current(stale=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("oauth2 integrations are async only")  # pragma: no cover

    async def _current(self, stale: str | None = None) -> str:
        async with self._lock:
            if self._token is not None and self._token != stale and time.time() < self._expires:
                return self._token
            return await self._fetch()

    async def _fetch(self) -> str:
        c = self.config
        form = {"grant_type": "client_credentials", "client_id": c.client_id, "client_secret": c.client_secret}
        if c.scope:
            form["scope"] = c.scope
        if c.audience:
            form["audience"] = c.audience
        where = f"integration '{self.integration}': oauth2 token request"
        try:
            response = await self._client.post(c.token_url, data=form, headers={"Accept": "application/json"})
        except httpx.TimeoutException:
            raise StepError("TIMEOUT", f"{where} timed out", {"integration": self.integration}) from None
        except httpx.TransportError as exc:
            raise StepError("NETWORK_ERROR", f"{where} failed: {_reason(exc)}",
                            {"integration": self.integration}) from None
        if response.status_code != 200:
            raise StepError("API_ERROR", f"{where} answered {response.status_code}",
                            {"integration": self.integration, "status": response.status_code})
        try:
            body = response.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in") or 3600)
        except (ValueError, KeyError, TypeError):
            raise StepError("API_ERROR", f"{where} returned no access_token",
                            {"integration": self.integration, "status": response.status_code}) from None
        REDACTOR.register(token)
        self.fetches += 1
        self._token = str(token)
        self._expires = time.time() + max(0.0, lifetime - float(c.refresh_margin))
        return self._token

    async def aclose(self) -> None:
        await self._client.aclose()


def _auth(config: Any, timeout: httpx.Timeout, transport: httpx.AsyncBaseTransport | None
          ) -> tuple[httpx.Auth | None, dict[str, str], dict[str, str]]:
    """(httpx auth, headers, query parameters) for an integration's auth block."""
    auth = config.auth
    if auth.type == "api_key":
        return (None, {}, {auth.name: auth.value}) if auth.in_ == "query" else (None, {auth.name: auth.value}, {})
    if auth.type == "bearer":
        return None, {"Authorization": f"Bearer {auth.token}"}, {}
    if auth.type == "basic":
        return httpx.BasicAuth(auth.username, auth.password), {}, {}
    if auth.type == "headers":
        return None, dict(auth.headers), {}
    if auth.type == "oauth2_client_credentials":
        return OAuth2ClientCredentials(auth, timeout, config.id, transport), {}, {}
    return None, {}, {}


# --- errors -------------------------------------------------------------------------------------------
def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _scrubbed(exc: StepError) -> StepError:
    """The error with every known secret masked in its message and text details, each on one line: a
    server may echo a key or token back in its error body, and errors end up in the store and events."""
    exc.message = one_line(REDACTOR.redact(exc.message))
    exc.args = (exc.message,)
    for key, value in exc.details.items():
        if isinstance(value, str):
            exc.details[key] = one_line(REDACTOR.redact(value))
    return exc


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None  # pragma: no cover - python < 3.10 returned None
    return max(0.0, when.timestamp() - now)


def _body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    kind = response.headers.get("content-type", "")
    if "json" in kind:
        try:
            return response.json()
        except ValueError:
            pass
    try:
        return response.text
    except (UnicodeDecodeError, LookupError):  # pragma: no cover - httpx decodes leniently
        return None


def _error(integration: str, where: str, response: httpx.Response, now: float) -> StepError:
    status = response.status_code
    details: dict[str, object] = {"integration": integration, "status": status}
    wait = retry_after(response.headers.get("retry-after"), now)
    if wait is not None:
        details["retry_after"] = round(wait, 3)
    text = response.text[:ERROR_BODY_CHARS] if response.content else ""
    if text:
        details["body"] = text
    if status == 429:
        return StepError("RATE_LIMITED", f"integration '{integration}': {where} answered 429 Too Many Requests",
                         details)
    reason = response.reason_phrase or ""
    return StepError("API_ERROR", f"integration '{integration}': {where} answered {status} {reason}".rstrip(),
                     details)


# --- the client ---------------------------------------------------------------------------------------
class HttpClient:
    """One http integration: the client, its limiter and breaker, and the request pipeline."""

    def __init__(self, config: Any, *, breaker: IntegrationBreaker | None, record: Record,
                 count: Count, sleep: Sleep = asyncio.sleep, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.id: str = config.id
        self.breaker = breaker
        self.record = record
        self.count = count
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.clock = clock
        t = config.timeouts
        timeout = httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool)
        self.auth, auth_headers, self.auth_query = _auth(config, timeout, transport)
        headers = {"User-Agent": USER_AGENT, **config.headers, **auth_headers}
        self.client = httpx.AsyncClient(
            base_url=config.base_url, timeout=timeout, headers=headers, params=self.auth_query or None,
            auth=self.auth, transport=transport, follow_redirects=False,
            limits=httpx.Limits(max_connections=config.max_connections,
                                max_keepalive_connections=config.max_connections),
        )
        self.slots = asyncio.Semaphore(config.max_connections)
        self.limiter: Limiter | None = None
        if config.rate_limits:
            rates = sorted((Rate(r.requests, int(float(r.per) * 1000) + WINDOW_MARGIN_MS) for r in config.rate_limits),
                           key=lambda r: (r.interval, r.limit))
            self.limiter = Limiter(InMemoryBucket(rates))

    # --- public ------------------------------------------------------------------------------------
    async def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                      headers: Mapping[str, str] | None = None, json_body: Any = None, data: Any = None,
                      idempotent: bool | None = None) -> dict[str, Any]:
        """Send one request through the whole pipeline; return ``{status, headers, body, elapsed_ms,
        attempts}`` for a 2xx/3xx answer, raise :class:`StepError` otherwise."""
        method = method.upper()
        headers = dict(headers or {})
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS or any(k.lower() == "idempotency-key" for k in headers)
        policy = self.config.retry
        attempts = policy.max_attempts if policy is not None and idempotent else 1
        where = f"{method} {path}"
        attempt = 1
        while True:
            try:
                response = await self._once(method, path, where, query, headers, json_body, data)
            except StepError as exc:
                tripped = self.breaker is not None and self.breaker.state == "open"
                if attempt >= attempts or not self._retryable(exc) or tripped:
                    exc.details.setdefault("attempts", attempt)
                    # a rejection quotes only our own, already masked, text: no regex on the fast path
                    raise (exc if exc.kind == "CIRCUIT_BREAKER_OPEN" else _scrubbed(exc)) from None
                assert policy is not None
                wait = exc.details.get("retry_after")
                delay = min(float(wait), float(policy.max_retry_after)) if isinstance(wait, int | float) \
                    else policy.delay(attempt, self.rng)
                self.count("retries")
                await self.sleep(delay)
                attempt += 1
                continue
            response["attempts"] = attempt
            return response

    async def ping(self) -> str:
        """The integration's health check: its ``health`` request with its conditions (default GET /)."""
        from progressive_cli.integrations.conditions import check

        health = self.config.health
        method, path = (health.method, health.path) if health else ("GET", "/")
        started = time.perf_counter()
        try:
            response = await self.client.request(method, path)
        except httpx.TimeoutException:
            raise StepError("TIMEOUT", f"integration '{self.id}': {method} {path} timed out") from None
        except httpx.TransportError as exc:
            raise StepError("NETWORK_ERROR", f"integration '{self.id}': {method} {path} failed: {_reason(exc)}"
                            ) from None
        elapsed = (time.perf_counter() - started) * 1000
        conditions = health.conditions if health else ["status < 500"]
        failed = check(conditions, status=response.status_code, response_time=elapsed, body=_body(response))
        if failed:
            raise StepError("API_ERROR", f"integration '{self.id}': {method} {path}: {'; '.join(failed)}",
                            {"status": response.status_code})
        return f"{method} {path} -> {response.status_code}"

    async def aclose(self) -> None:
        await self.client.aclose()
        if isinstance(self.auth, OAuth2ClientCredentials):
            await self.auth.aclose()
        if self.limiter is not None:
            self.limiter.close()

    # --- pipeline ----------------------------------------------------------------------------------
    def _retryable(self, exc: StepError) -> bool:
        policy = self.config.retry
        if policy is None or exc.kind not in policy.retry_on or exc.details.get("local"):
            return False  # our own limiter said no: it has already waited max_wait, or is set to fail fast
        status = exc.details.get("status")
        return exc.kind != "API_ERROR" or (isinstance(status, int) and status >= 500)

    def counts(self, exc: BaseException) -> bool:
        """Whether a failure counts against the breaker."""
        breaker = self.config.circuit_breaker
        if not isinstance(exc, StepError) or breaker is None:
            return isinstance(exc, Exception)
        status = exc.details.get("status")
        if isinstance(status, int) and status in breaker.count_status:
            return True
        if exc.kind not in breaker.count:
            return False
        return exc.kind != "API_ERROR" or not isinstance(status, int) or status >= 500

    async def _once(self, method: str, path: str, where: str, query: Mapping[str, Any] | None,
                    headers: dict[str, str], json_body: Any, data: Any) -> dict[str, Any]:
        breaker = self.breaker
        if breaker is None:
            request = self._build(method, path, where, query, headers, json_body, data)
            async with self.slots:
                await self._acquire(where)
                return await self._send(request, where)
        await breaker.sync()
        admitted = breaker.admit()
        if admitted is None:
            self.count("rejected")
            raise breaker.rejection(breaker.blocked_for())
        request = self._build(method, path, where, query, headers, json_body, data)  # bad input: not counted
        snap = breaker.snapshot()
        try:
            async with self.slots:
                await self._acquire(where)
                with breaker.cb.calling():
                    return await self._send(request, where)
        except (asyncio.CancelledError, KeyboardInterrupt):
            breaker.restore(snap)
            raise
        except pybreaker.CircuitBreakerError:
            # it opened between the check above and this call (another task's failure)
            self.count("rejected")
            raise breaker.rejection(breaker.blocked_for() or 0.0) from None
        finally:
            if admitted == "trial":
                breaker.done()
            if breaker.storage.dirty or breaker.events:
                await breaker.flush()

    async def _acquire(self, where: str) -> None:
        if self.limiter is None:
            return
        if self.config.on_rate_limit == "wait":
            ok = await self.limiter.try_acquire_async(self.id, blocking=True, timeout=float(self.config.max_wait))
        else:
            ok = await self.limiter.try_acquire_async(self.id, blocking=False)
        if ok:
            return
        self.count("rate_limited")
        limits = ", ".join(f"{r.requests}/{r.per:g}s" for r in self.config.rate_limits)
        wait = f" within {float(self.config.max_wait):g}s" if self.config.on_rate_limit == "wait" else ""
        raise StepError("RATE_LIMITED", f"integration '{self.id}': rate limit {limits} reached; no slot{wait} "
                                        f"for {where}",
                        {"integration": self.id, "retry_after": self._next_slot(), "local": True})

    def _next_slot(self) -> float:
        """Seconds until the limiter has room again (an estimate for ``retry_after``)."""
        assert self.limiter is not None
        bucket = self.limiter.buckets()[0] if self.limiter.buckets() else None
        if bucket is None or bucket.failing_rate is None:
            return 0.0
        from pyrate_limiter import RateItem

        stamp = bucket.now()
        waiting = bucket.waiting(RateItem(self.id, stamp)) if isinstance(stamp, int) else None
        return round(max(0, int(waiting)) / 1000, 3) if isinstance(waiting, int) else 0.0

    def _build(self, method: str, path: str, where: str, query: Mapping[str, Any] | None,
               headers: dict[str, str], json_body: Any, data: Any) -> httpx.Request:
        """The request, or a STEP_ERROR for input that cannot make one (a header with a newline or
        non-ASCII text, a bad URL): the caller's mistake, never counted against the server. A query
        string written in ``path`` is kept and merged with ``query`` and the auth parameters (httpx
        would replace it)."""
        try:
            url = httpx.URL(path)
            params = httpx.QueryParams(url.query.decode())
            for key, value in (_params(query) or {}).items():
                params = params.merge({key: value})
            if path and "?" in path:
                path = path.split("?", 1)[0]
            return self.client.build_request(method, path, params=params or None, headers=headers,
                                             json=json_body, data=data)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError, UnicodeEncodeError,
                ValueError, TypeError) as exc:
            raise StepError("STEP_ERROR", f"integration '{self.id}': {where}: cannot make the request: "
                            f"{_reason(exc)}", {"integration": self.id}) from None

    async def _send(self, request: httpx.Request, where: str) -> dict[str, Any]:
        started = time.perf_counter()
        error: StepError | None = None
        try:
            response = await self.client.send(request)
        except (httpx.LocalProtocolError, UnicodeEncodeError) as exc:  # found while sending (auth headers)
            raise StepError("STEP_ERROR", f"integration '{self.id}': {where}: cannot make the request: "
                            f"{_reason(exc)}", {"integration": self.id}) from None
        except httpx.TimeoutException as exc:
            phase = type(exc).__name__.replace("Timeout", "").lower() or "request"
            error = StepError("TIMEOUT", f"integration '{self.id}': {where} timed out ({phase})",
                              {"integration": self.id})
        except httpx.TransportError as exc:
            error = StepError("NETWORK_ERROR", f"integration '{self.id}': {where} failed: {_reason(exc)}",
                              {"integration": self.id})
        except StepError as exc:  # from the oauth2 token request
            error = exc
        elapsed = (time.perf_counter() - started) * 1000
        if error is not None:
            self.record(False, elapsed, f"{error.kind}: {error.message}")
            raise error
        if response.status_code >= 400:
            error = _error(self.id, where, response, self.clock())
            if error.kind == "RATE_LIMITED":
                self.count("rate_limited")
            self.record(False, elapsed, f"{error.kind}: {error.message}")
            raise error
        self.record(True, elapsed, None)
        return {"status": response.status_code, "headers": dict(response.headers), "body": _body(response),
                "elapsed_ms": round(elapsed, 3)}


def _params(query: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Query values as strings httpx accepts: lists repeat the key, other values are JSON-ish text."""
    if not query:
        return None
    out: dict[str, Any] = {}
    for key, value in query.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, list | tuple):
            out[key] = [v if isinstance(v, str) else json.dumps(v) for v in value]
        elif isinstance(value, dict):
            out[key] = json.dumps(value, separators=(",", ":"))
        else:
            out[key] = value
    return out


__all__ = ["HttpClient", "OAuth2ClientCredentials", "retry_after"]
