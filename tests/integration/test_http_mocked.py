"""HTTP integrations against pytest-httpx: what goes on the wire, every error kind, retries, the breaker,
metrics in the store, and that no credential leaks into errors, the store or events.

Every test drives :class:`progressive_cli.integrations.hub.Integrations` (as the engine does) inside
``asyncio.run``; delays are recorded by an injected ``sleep`` instead of being slept.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import email.utils
import random
import sqlite3
import time
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pytest_httpx import HTTPXMock

from progressive_cli.config.integrations import HttpIntegration
from progressive_cli.errors import StepError
from progressive_cli.integrations import http as http_module
from progressive_cli.integrations.hub import Integrations
from progressive_cli.store.sqlite import SQLiteStore

BASE = "http://api.test"
TOKEN_URL = "http://auth.test/oauth/token"
CANARY = "CANARY-7f3a9c"
RETRY = {"max_attempts": 3, "initial_delay": 0.01, "multiplier": 2, "max_delay": 0.05, "max_retry_after": 2}


def config(**over: Any) -> HttpIntegration:
    data: dict[str, Any] = {
        "id": "api", "type": "http", "base_url": BASE, "timeout": 2,
        "circuit_breaker": {"fail_max": 50, "reset_timeout": "30s", "success_threshold": 1},
        "retry": dict(RETRY),
    }
    data.update(over)
    return HttpIntegration.model_validate(data)


def once(**retry: Any) -> dict[str, Any]:
    """A retry policy of one attempt (``retry: null`` is not used: see test_null_blocks_are_honoured)."""
    return {**RETRY, "max_attempts": 1, **retry}


class Sleeps:
    """A fake ``sleep`` that records each delay instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


Call = Callable[..., Awaitable[Any]]


def run(cfg: HttpIntegration, body: Callable[[Integrations], Awaitable[Any]], *, store: Any = None,
        sleeps: Sleeps | None = None) -> Any:
    """Run ``body(hub)`` with a fresh hub for ``cfg``; the hub is closed (metrics flushed) after."""

    async def go() -> Any:
        hub = Integrations([cfg], store, sleep=sleeps or Sleeps(), rng=random.Random(7))
        try:
            return await body(hub)
        finally:
            await hub.close()

    return asyncio.run(go())


async def outcome(hub: Integrations, method: str = "GET", path: str = "/items", **kw: Any) -> Any:
    """The answer of one api_call, or the StepError it raised."""
    try:
        return await hub.api_call("api", method, path, **kw)
    except StepError as exc:
        return exc


def error(result: Any) -> StepError:
    assert isinstance(result, StepError), result
    return result


# --- auth on the wire -------------------------------------------------------------------------------------
AUTH_CASES: dict[str, tuple[dict[str, Any], Callable[[httpx.Request], None]]] = {
    "none": ({"type": "none"}, lambda r: _no_credentials(r)),
    "api_key_query": (
        {"type": "api_key", "in": "query", "name": "api_key", "value": "${env:SECRET}"},
        lambda r: _expect(parse_qs(r.url.query.decode())["api_key"] == [CANARY] and "authorization" not in r.headers),
    ),
    "api_key_header": (
        {"type": "api_key", "in": "header", "name": "X-API-Key", "value": "${env:SECRET}"},
        lambda r: _expect(r.headers["X-API-Key"] == CANARY and "api_key" not in r.url.query.decode()),
    ),
    "bearer": ({"type": "bearer", "token": "${env:SECRET}"},
               lambda r: _expect(r.headers["Authorization"] == f"Bearer {CANARY}")),
    "basic": (
        {"type": "basic", "username": "ops", "password": "${env:SECRET}"},
        lambda r: _expect(r.headers["Authorization"] == "Basic " + base64.b64encode(f"ops:{CANARY}".encode()).decode()),
    ),
    "headers": (
        {"type": "headers", "headers": {"X-Tenant": "t1", "X-Signature": "sig ${env:SECRET}"}},
        lambda r: _expect(r.headers["X-Tenant"] == "t1" and r.headers["X-Signature"] == f"sig {CANARY}"),
    ),
}


def _expect(ok: bool) -> None:
    assert ok


def _no_credentials(request: httpx.Request) -> None:
    assert "authorization" not in request.headers
    assert CANARY not in str(request.url) and CANARY not in str(request.headers)


@pytest.mark.parametrize("case", sorted(AUTH_CASES))
def test_each_auth_type_puts_its_credentials_on_the_wire(case: str, httpx_mock: HTTPXMock,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET", CANARY)
    auth, check = AUTH_CASES[case]
    url = f"{BASE}/items?api_key={CANARY}&q=1" if case == "api_key_query" else f"{BASE}/items?q=1"
    httpx_mock.add_response(url=url, json={"items": [1, 2]}, is_reusable=True)

    async def body(hub: Integrations) -> list[Any]:
        return [await hub.api_call("api", "GET", "/items", query={"q": 1}) for _ in range(2)]

    answers = run(config(auth=auth, headers={"X-Static": "yes"}), body)
    assert [a["body"] for a in answers] == [{"items": [1, 2]}] * 2
    assert [a["status"] for a in answers] == [200, 200]
    requests = httpx_mock.get_requests()
    assert len(requests) == 2
    for request in requests:
        check(request)
        assert request.headers["X-Static"] == "yes"  # static headers travel with every auth type
        assert request.headers["User-Agent"].startswith("progressive/")
        assert parse_qs(request.url.query.decode())["q"] == ["1"]  # the call's query survives the auth query


def _token(httpx_mock: HTTPXMock, *tokens: str, expires_in: float = 3600) -> None:
    for token in tokens:
        httpx_mock.add_response(url=TOKEN_URL, method="POST",
                                json={"access_token": token, "token_type": "Bearer", "expires_in": expires_in})


OAUTH = {"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_id": "progressive",
         "client_secret": "${env:SECRET}", "scope": "read write", "refresh_margin": "60s"}


def test_oauth2_token_is_fetched_once_and_cached(httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET", CANARY)
    _token(httpx_mock, "tok-1")
    httpx_mock.add_response(url=f"{BASE}/items", json={"ok": True}, is_reusable=True)

    async def body(hub: Integrations) -> None:
        await asyncio.gather(*(hub.api_call("api", "GET", "/items") for _ in range(5)))  # concurrent first use
        for _ in range(3):
            await hub.api_call("api", "GET", "/items")

    run(config(auth=OAUTH), body)
    token_requests = httpx_mock.get_requests(url=TOKEN_URL)
    assert len(token_requests) == 1
    form = parse_qs(token_requests[0].content.decode())
    assert form == {"grant_type": ["client_credentials"], "client_id": ["progressive"], "client_secret": [CANARY],
                    "scope": ["read write"]}
    api = httpx_mock.get_requests(url=f"{BASE}/items")
    assert len(api) == 8
    assert {r.headers["Authorization"] for r in api} == {"Bearer tok-1"}


def test_oauth2_token_is_refreshed_within_refresh_margin_of_expiry(httpx_mock: HTTPXMock,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET", CANARY)
    clock = [1_000_000.0]
    fake_time = types.SimpleNamespace(time=lambda: clock[0], perf_counter=time.perf_counter,
                                      monotonic=time.monotonic)
    monkeypatch.setattr(http_module, "time", fake_time)
    _token(httpx_mock, "tok-1", "tok-2", expires_in=600)  # valid 600 s, refreshed 60 s before: at +540
    httpx_mock.add_response(url=f"{BASE}/items", json={"ok": True}, is_reusable=True)

    async def body(hub: Integrations) -> None:
        for at in (0, 300, 539):
            clock[0] = 1_000_000.0 + at
            await hub.api_call("api", "GET", "/items")
        clock[0] = 1_000_000.0 + 541  # not expired yet (600), but within the margin
        await hub.api_call("api", "GET", "/items")
        clock[0] = 1_000_000.0 + 541 + 539
        await hub.api_call("api", "GET", "/items")

    run(config(auth=OAUTH), body)
    assert len(httpx_mock.get_requests(url=TOKEN_URL)) == 2
    used = [r.headers["Authorization"] for r in httpx_mock.get_requests(url=f"{BASE}/items")]
    assert used == ["Bearer tok-1"] * 3 + ["Bearer tok-2"] * 2


def test_oauth2_401_refreshes_the_token_once_and_retries(httpx_mock: HTTPXMock,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET", CANARY)
    _token(httpx_mock, "tok-1", "tok-2")
    wire: list[tuple[str, bytes]] = []  # what each request carried when it was sent (the auth flow re-sends the
    # same Request object, so httpx_mock.get_requests() shows its final headers only)

    def api(request: httpx.Request) -> httpx.Response:
        wire.append((request.headers["Authorization"], request.content))
        return httpx.Response(401 if request.headers["Authorization"] == "Bearer tok-1" else 200, json={})

    httpx_mock.add_callback(api, url=f"{BASE}/items", is_reusable=True)

    async def body(hub: Integrations) -> list[Any]:
        return [await hub.api_call("api", "POST", "/items", json_body={"n": i}) for i in range(2)]

    answers = run(config(auth=OAUTH, retry=once()), body)
    assert [a["status"] for a in answers] == [200, 200]
    assert [a["attempts"] for a in answers] == [1, 1]  # the 401 replay is the auth flow's, not a retry
    assert len(httpx_mock.get_requests(url=TOKEN_URL)) == 2
    assert wire == [("Bearer tok-1", b'{"n":0}'), ("Bearer tok-2", b'{"n":0}'), ("Bearer tok-2", b'{"n":1}')]


def test_oauth2_a_second_401_is_an_api_error_not_a_loop(httpx_mock: HTTPXMock,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET", CANARY)
    _token(httpx_mock, "tok-1", "tok-2")
    httpx_mock.add_response(url=f"{BASE}/items", status_code=401, json={"error": "revoked"}, is_reusable=True)

    exc = error(run(config(auth=OAUTH), lambda hub: outcome(hub)))
    assert exc.kind == "API_ERROR" and exc.details["status"] == 401
    assert exc.details["attempts"] == 1  # 4xx: not retried
    assert len(httpx_mock.get_requests(url=TOKEN_URL)) == 2
    assert len(httpx_mock.get_requests(url=f"{BASE}/items")) == 2


@pytest.mark.parametrize(("status", "answer"), [(401, {"error": "invalid_client"}), (200, {"token": "no"})])
def test_oauth2_token_endpoint_failure_is_an_api_error_and_no_api_request(
        status: int, answer: dict[str, Any], httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET", CANARY)
    httpx_mock.add_response(url=TOKEN_URL, method="POST", status_code=status, json=answer)

    exc = error(run(config(auth=OAUTH), lambda hub: outcome(hub)))
    assert exc.kind == "API_ERROR"
    assert exc.details["status"] == status
    assert "oauth2 token request" in exc.message
    assert CANARY not in exc.message and CANARY not in str(exc.details)
    assert httpx_mock.get_requests(url=f"{BASE}/items") == []


# --- error kinds ------------------------------------------------------------------------------------------
def test_4xx_is_an_api_error_with_its_status_and_is_not_retried(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/items", status_code=404, json={"error": "no such item"})
    sleeps = Sleeps()

    exc = error(run(config(), lambda hub: outcome(hub), sleeps=sleeps))
    assert exc.kind == "API_ERROR"
    assert exc.details["status"] == 404 and exc.details["attempts"] == 1
    assert "no such item" in str(exc.details["body"])
    assert exc.message == "integration 'api': GET /items answered 404 Not Found"
    assert sleeps.delays == []
    assert len(httpx_mock.get_requests()) == 1


def test_5xx_get_is_retried_with_capped_backoff_then_fails(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/items", status_code=503, text="down", is_reusable=True)
    sleeps = Sleeps()
    retry = {**RETRY, "max_attempts": 5, "initial_delay": 0.01, "multiplier": 2, "max_delay": 0.03}

    exc = error(run(config(retry=retry), lambda hub: outcome(hub), sleeps=sleeps))
    assert exc.kind == "API_ERROR" and exc.details["status"] == 503 and exc.details["attempts"] == 5
    assert len(httpx_mock.get_requests()) == 5
    assert len(sleeps.delays) == 4
    caps = [min(0.03, 0.01 * 2 ** i) for i in range(4)]  # 0.01, 0.02, 0.03, 0.03
    for delay, cap in zip(sleeps.delays, caps, strict=True):
        assert 0 <= delay <= cap


def test_backoff_without_jitter_is_exactly_exponential_and_capped(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/items", status_code=500, is_reusable=True)
    sleeps = Sleeps()
    retry = {**RETRY, "max_attempts": 5, "initial_delay": 0.01, "multiplier": 3, "max_delay": 0.1, "jitter": "none"}

    run(config(retry=retry), lambda hub: outcome(hub), sleeps=sleeps)
    assert sleeps.delays == pytest.approx([0.01, 0.03, 0.09, 0.1])


def test_a_5xx_then_success_returns_the_answer(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/items", status_code=502)
    httpx_mock.add_response(url=f"{BASE}/items", json={"ok": 1})

    answer = run(config(), lambda hub: hub.api_call("api", "GET", "/items"))
    assert answer["status"] == 200 and answer["body"] == {"ok": 1} and answer["attempts"] == 2


def test_429_is_rate_limited_with_retry_after_seconds(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/items", status_code=429, headers={"Retry-After": "7"})

    exc = error(run(config(retry=once()), lambda hub: outcome(hub)))
    assert exc.kind == "RATE_LIMITED"
    assert exc.details["retry_after"] == 7 and exc.details["status"] == 429
    assert "429" in exc.message


def test_429_is_rate_limited_with_retry_after_http_date(httpx_mock: HTTPXMock) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    httpx_mock.add_response(url=f"{BASE}/items", status_code=429, headers={"Retry-After": when})

    exc = error(run(config(retry=once()), lambda hub: outcome(hub)))
    assert exc.kind == "RATE_LIMITED"
    assert 27 <= float(exc.details["retry_after"]) <= 31


def test_a_retry_after_in_the_past_means_no_wait() -> None:
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert http_module.retry_after(past, time.time()) == 0.0
    assert http_module.retry_after("not a date", time.time()) is None
    assert http_module.retry_after(" 2.5 ", time.time()) == 2.5


def test_connect_error_is_a_network_error_and_retried_for_get(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ConnectError("Connection refused"), is_reusable=True)

    async def body(hub: Integrations) -> tuple[StepError, StepError]:
        return error(await outcome(hub)), error(await outcome(hub, "POST", json_body={}))

    get, post = run(config(), body)
    assert get.kind == post.kind == "NETWORK_ERROR"
    assert "Connection refused" in get.message
    assert get.details["attempts"] == 3 and post.details["attempts"] == 1
    assert len(httpx_mock.get_requests(method="GET")) == 3
    assert len(httpx_mock.get_requests(method="POST")) == 1


def test_read_timeout_is_a_timeout(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ReadTimeout("timed out"))

    exc = error(run(config(retry=once()), lambda hub: outcome(hub)))
    assert exc.kind == "TIMEOUT"
    assert exc.message == "integration 'api': GET /items timed out (read)"


# --- retries ----------------------------------------------------------------------------------------------
def test_post_is_not_retried_unless_it_carries_an_idempotency_key(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/orders", status_code=503, is_reusable=True)
    sleeps = Sleeps()

    async def body(hub: Integrations) -> list[StepError]:
        return [
            error(await outcome(hub, "POST", "/orders", json_body={"n": 1})),
            error(await outcome(hub, "PATCH", "/orders", json_body={"n": 2})),
            error(await outcome(hub, "POST", "/orders", json_body={"n": 3}, headers={"Idempotency-Key": "k-3"})),
            error(await outcome(hub, "POST", "/orders", json_body={"n": 4}, idempotent=True)),
            error(await outcome(hub, "PUT", "/orders", json_body={"n": 5})),
            error(await outcome(hub, "DELETE", "/orders")),
        ]

    errors = run(config(), body, sleeps=sleeps)
    assert [e.details["attempts"] for e in errors] == [1, 1, 3, 3, 3, 3]
    sent = httpx_mock.get_requests()
    assert [r.method for r in sent] == ["POST", "PATCH"] + ["POST"] * 6 + ["PUT"] * 3 + ["DELETE"] * 3
    keyed = [r for r in sent if r.headers.get("Idempotency-Key")]
    assert len(keyed) == 3 and {r.headers["Idempotency-Key"] for r in keyed} == {"k-3"}
    assert len(sleeps.delays) == 8


@pytest.mark.parametrize(("header", "expected"), [("1", 1.0), ("0.25", 0.25), ("100", 2.0), ("date+30", 2.0)])
def test_retry_after_is_honoured_and_capped_by_max_retry_after(header: str, expected: float,
                                                               httpx_mock: HTTPXMock) -> None:
    value = email.utils.formatdate(time.time() + 30, usegmt=True) if header == "date+30" else header
    httpx_mock.add_response(url=f"{BASE}/items", status_code=503, headers={"Retry-After": value})
    httpx_mock.add_response(url=f"{BASE}/items", json={"ok": True})
    sleeps = Sleeps()

    answer = run(config(), lambda hub: hub.api_call("api", "GET", "/items"), sleeps=sleeps)
    assert answer["attempts"] == 2
    assert sleeps.delays == [pytest.approx(expected)]


def test_a_429_retry_after_is_honoured_for_an_idempotent_request(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/items", status_code=429, headers={"Retry-After": "1"})
    httpx_mock.add_response(url=f"{BASE}/items", status_code=429, headers={"Retry-After": "bogus"})
    httpx_mock.add_response(url=f"{BASE}/items", json={"ok": True})
    sleeps = Sleeps()

    answer = run(config(), lambda hub: hub.api_call("api", "GET", "/items"), sleeps=sleeps)
    assert answer["attempts"] == 3
    assert sleeps.delays[0] == 1.0
    assert 0 <= sleeps.delays[1] <= 0.02  # an unreadable Retry-After falls back to the backoff


# --- the breaker ------------------------------------------------------------------------------------------
def test_4xx_does_not_count_against_the_breaker_and_5xx_does(httpx_mock: HTTPXMock) -> None:
    for status in (500, 404, 500, 404, 500, 500):
        httpx_mock.add_response(url=f"{BASE}/items", status_code=status)

    async def body(hub: Integrations) -> list[str]:
        kinds = [error(await outcome(hub)).kind for _ in range(7)]
        client = await hub.http("api")
        assert client.breaker is not None
        return [*kinds, client.breaker.state]

    result = run(config(circuit_breaker={"fail_max": 2, "reset_timeout": "30s"}, retry=once()), body)
    # a 404 is an answer: it resets the failure streak, so only the last two 500s in a row open it
    assert result == ["API_ERROR"] * 6 + ["CIRCUIT_BREAKER_OPEN", "open"]
    assert len(httpx_mock.get_requests()) == 6


def test_after_fail_max_the_breaker_rejects_without_sending(httpx_mock: HTTPXMock, tmp_path: Path) -> None:
    httpx_mock.add_response(url=f"{BASE}/items", status_code=500, is_reusable=True)
    store = SQLiteStore(tmp_path / "state.db")

    async def body(hub: Integrations) -> list[StepError]:
        return [error(await outcome(hub)) for _ in range(6)]

    errors = run(config(circuit_breaker={"fail_max": 3, "reset_timeout": "30s"}, retry=once()), body, store=store)
    assert [e.kind for e in errors] == ["API_ERROR"] * 3 + ["CIRCUIT_BREAKER_OPEN"] * 3
    assert len(httpx_mock.get_requests()) == 3  # nothing left the process while open
    rejected = errors[3]
    assert 25 < float(rejected.details["retry_after"]) <= 30
    assert "circuit breaker open" in rejected.message and "API_ERROR" in rejected.message  # names the last error
    rows = asyncio.run(store.breakers("integration:"))
    assert [(r["name"], r["state"], r["failures"]) for r in rows] == [("integration:api", "open", 3)]
    events = asyncio.run(store.list_events(type_prefix="breaker."))
    assert [(e.data["previous"], e.data["state"]) for e in events] == [("closed", "open")]
    (metrics,) = asyncio.run(store.integration_metrics())
    assert (metrics["total"], metrics["failure"], metrics["rejected"], metrics["breaker_opens"]) == (3, 3, 3, 1)
    asyncio.run(store.close())


def test_retries_stop_at_an_open_breaker(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/items", status_code=500, is_reusable=True)
    sleeps = Sleeps()

    exc = error(run(config(circuit_breaker={"fail_max": 2, "reset_timeout": "30s"}, retry={**RETRY, "max_attempts": 6}),
                    lambda hub: outcome(hub), sleeps=sleeps))
    # two 500s open it: the call that tripped it fails with its own error, and is not retried into the breaker
    assert exc.kind == "API_ERROR" and exc.details["status"] == 500
    assert exc.details["attempts"] == 2
    assert len(httpx_mock.get_requests()) == 2
    assert len(sleeps.delays) == 1


def test_rate_limit_429_can_count_against_the_breaker_when_listed(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/items", status_code=429, is_reusable=True)

    async def body(hub: Integrations) -> list[str]:
        return [error(await outcome(hub)).kind for _ in range(3)]

    kinds = run(config(circuit_breaker={"fail_max": 2, "reset_timeout": "30s", "count_status": [429]}, retry=once()),
                body)
    assert kinds == ["RATE_LIMITED", "RATE_LIMITED", "CIRCUIT_BREAKER_OPEN"]


# --- local rate limit -------------------------------------------------------------------------------------
def test_on_rate_limit_fail_rejects_the_surplus_without_sending(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/items", json={"ok": True}, is_reusable=True)

    async def body(hub: Integrations) -> list[Any]:
        return await asyncio.gather(*(outcome(hub) for _ in range(8)))

    results = run(config(rate_limits=[{"requests": 3, "per": "10s"}], on_rate_limit="fail", retry=once()), body)
    failed = [r for r in results if isinstance(r, StepError)]
    assert len(failed) == 5 and {e.kind for e in failed} == {"RATE_LIMITED"}
    assert "rate limit 3/10s reached" in failed[0].message
    assert len(httpx_mock.get_requests()) == 3


def test_local_rate_limit_rejection_says_when_a_slot_frees(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/items", json={"ok": True})

    async def body(hub: Integrations) -> StepError:
        await hub.api_call("api", "GET", "/items")
        return error(await outcome(hub))

    exc = run(config(rate_limits=[{"requests": 1, "per": "10s"}], on_rate_limit="fail", retry=once()), body)
    assert exc.kind == "RATE_LIMITED"
    assert 5 < float(exc.details["retry_after"]) <= 10.2


# --- metrics ----------------------------------------------------------------------------------------------
def test_metrics_in_the_store_match_what_was_done(httpx_mock: HTTPXMock, tmp_path: Path) -> None:
    httpx_mock.add_response(url=f"{BASE}/ok", json={"ok": True}, is_reusable=True)
    httpx_mock.add_response(url=f"{BASE}/missing", status_code=404)
    httpx_mock.add_response(url=f"{BASE}/busy", status_code=429, headers={"Retry-After": "3"})
    httpx_mock.add_response(url=f"{BASE}/down", status_code=503, is_reusable=True)
    store = SQLiteStore(tmp_path / "state.db")
    sleeps = Sleeps()

    async def body(hub: Integrations) -> list[Any]:
        results = [await outcome(hub, "GET", "/ok"), await outcome(hub, "GET", "/ok")]
        await hub.flush()  # a flush in the middle must not count anything twice
        results += [await outcome(hub, "GET", "/missing"), await outcome(hub, "POST", "/busy", json_body={}),
                    await outcome(hub, "GET", "/down"),  # 3 attempts; the third opens the breaker
                    await outcome(hub, "GET", "/ok")]  # rejected
        return results

    cfg = config(circuit_breaker={"fail_max": 3, "reset_timeout": "30s"})
    results = run(cfg, body, store=store, sleeps=sleeps)
    kinds = [r.kind if isinstance(r, StepError) else r["status"] for r in results]
    assert kinds == [200, 200, "API_ERROR", "RATE_LIMITED", "API_ERROR", "CIRCUIT_BREAKER_OPEN"]
    (row,) = asyncio.run(store.integration_metrics())
    sent = len(httpx_mock.get_requests())
    assert sent == 7
    assert row["integration"] == "api"
    assert (row["total"], row["success"], row["failure"]) == (7, 2, 5)
    assert (row["retries"], row["rate_limited"], row["breaker_opens"], row["rejected"]) == (2, 1, 1, 1)
    assert sum(row["buckets"].values()) == 7
    assert row["latency_sum_ms"] > 0
    assert row["last_error"].startswith("API_ERROR: integration 'api': GET /down answered 503")
    assert row["last_call_at"] == pytest.approx(time.time(), abs=60)
    asyncio.run(store.close())


# --- secret canary ----------------------------------------------------------------------------------------
def dump_store(path: Path) -> str:
    """Every row of every table of the SQLite file as text, plus the raw bytes of the file and its WAL."""
    db = sqlite3.connect(str(path))
    parts = []
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        parts.extend(repr(row) for row in db.execute(f'SELECT * FROM "{table}"'))
    db.close()
    for file in (path, path.with_name(path.name + "-wal")):
        if file.exists():
            parts.append(file.read_bytes().decode("latin-1"))
    return "\n".join(parts)


CANARY_AUTHS = {
    "api_key_query": {"type": "api_key", "in": "query", "name": "api_key", "value": "${env:SECRET}"},
    "api_key_header": {"type": "api_key", "in": "header", "name": "X-API-Key", "value": "${env:SECRET}"},
    "bearer": {"type": "bearer", "token": "${env:SECRET}"},
    "basic": {"type": "basic", "username": "ops", "password": "${env:SECRET}"},
    "oauth2": OAUTH,
}


@pytest.mark.parametrize("auth", sorted(CANARY_AUTHS))
def test_secret_canary_never_reaches_errors_the_store_or_events(auth: str, httpx_mock: HTTPXMock,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    monkeypatch.setenv("SECRET", CANARY)
    if auth == "oauth2":
        httpx_mock.add_response(url=TOKEN_URL, method="POST", json={"access_token": "tok", "expires_in": 3600},
                                is_reusable=True)
    for path, kw in {
        "/bad": {"status_code": 400, "json": {"error": "bad request"}},
        "/down": {"status_code": 500, "text": "internal error"},
        "/busy": {"status_code": 429, "headers": {"Retry-After": "1"}},
        "/ok": {"json": {"ok": True}},
    }.items():
        httpx_mock.add_response(url=re_url(path), is_reusable=True, **kw)
    httpx_mock.add_exception(httpx.ConnectError("All connection attempts failed"), url=re_url("/refused"),
                             is_reusable=True)
    httpx_mock.add_exception(httpx.ReadTimeout("timed out"), url=re_url("/slow"), is_reusable=True)
    store = SQLiteStore(tmp_path / "state.db")

    async def body(hub: Integrations) -> list[Any]:
        results = []
        for path in ("/ok", "/bad", "/busy", "/refused", "/slow", "/down", "/down", "/ok"):
            results.append(await outcome(hub, "GET", path, query={"page": 1}))
        results.append(await hub.test("api"))
        return results

    cfg = config(auth=CANARY_AUTHS[auth], circuit_breaker={"fail_max": 7, "reset_timeout": "30s"},
                 health={"path": "/bad", "conditions": ["status == 200"]})
    results = run(cfg, body, store=store)
    kinds = [r.kind for r in results if isinstance(r, StepError)]
    assert {"API_ERROR", "RATE_LIMITED", "NETWORK_ERROR", "TIMEOUT", "CIRCUIT_BREAKER_OPEN"} <= set(kinds)
    for result in results:
        if isinstance(result, StepError):
            assert CANARY not in result.message
            assert CANARY not in repr(result.details) and CANARY not in repr(result.as_dict())
        else:
            assert CANARY not in repr(result)
    events = asyncio.run(store.list_events(limit=10_000))
    assert events and all(CANARY not in repr(e.cloudevent()) for e in events)
    asyncio.run(store.close())
    assert CANARY not in dump_store(tmp_path / "state.db")
    assert any(CANARY in on_the_wire(r) for r in httpx_mock.get_requests())  # it was used, though


def on_the_wire(request: httpx.Request) -> str:
    """A request's URL, header values (Basic credentials decoded) and body as one text."""
    values = [str(request.url), request.content.decode()]
    for name, value in request.headers.items():
        values.append(value)
        if name == "authorization" and value.startswith("Basic "):
            values.append(base64.b64decode(value.removeprefix("Basic ")).decode())
    return "\n".join(values)


def re_url(path: str) -> Any:
    import re

    return re.compile(re.escape(BASE + path) + r"(\?.*)?$")


@pytest.mark.parametrize("auth", ["bearer", "api_key_header"])
def test_secret_canary_echoed_by_the_server_is_redacted_in_the_error(auth: str, httpx_mock: HTTPXMock,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET", CANARY)

    def echo(request: httpx.Request) -> httpx.Response:
        sent = request.headers.get("Authorization") or request.headers.get("X-API-Key")
        return httpx.Response(401, text=f"invalid credentials: {sent}")

    httpx_mock.add_callback(echo, url=f"{BASE}/items")
    exc = error(run(config(auth=CANARY_AUTHS[auth]), lambda hub: outcome(hub)))
    assert exc.kind == "API_ERROR" and exc.details["status"] == 401
    assert "invalid credentials" in str(exc.details["body"])
    assert CANARY not in repr(exc.as_dict())


# --- config blocks that are switched off ------------------------------------------------------------------
@pytest.mark.parametrize("block", ["retry", "circuit_breaker"])
def test_null_blocks_are_honoured(block: str, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/items", status_code=500, is_reusable=True)

    async def body(hub: Integrations) -> list[StepError]:
        return [error(await outcome(hub)) for _ in range(6)]

    over: dict[str, Any] = {"retry": None} if block == "retry" else {
        "circuit_breaker": None, "retry": once()}
    errors = run(config(**over), body)
    assert {e.kind for e in errors} == {"API_ERROR"}  # no breaker: never CIRCUIT_BREAKER_OPEN
    assert len(httpx_mock.get_requests()) == 6  # no retry: one request per call


def test_a_cancelled_half_open_trial_leaves_the_breaker_open(httpx_mock: HTTPXMock) -> None:
    """Found in review: pybreaker counts a cancellation (Ctrl-C, a step timeout) as a success, which closed
    a half-open breaker although the server never answered."""
    httpx_mock.add_response(url=f"{BASE}/items", status_code=500)
    hang = asyncio.Event()

    async def never(request: httpx.Request) -> httpx.Response:
        await hang.wait()
        return httpx.Response(200)

    httpx_mock.add_callback(never, url=f"{BASE}/slow")

    async def body(hub: Integrations) -> str:
        assert error(await outcome(hub)).kind == "API_ERROR"  # fail_max 1: open
        breaker = (await hub.http("api")).breaker
        breaker.storage._opened_at -= datetime.timedelta(seconds=31)  # reset timeout passed
        task = asyncio.ensure_future(hub.api_call("api", "GET", "/slow"))
        await asyncio.sleep(0.1)  # the trial is in flight
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return breaker.state

    state = run(config(circuit_breaker={"fail_max": 1, "reset_timeout": "30s"}, retry=once()), body)
    assert state == "open"
