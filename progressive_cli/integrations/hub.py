"""The integrations of one project, for one process: clients and connectors made on first use,
metrics flushed to the store, health checks.

The engine's ``api_call`` and ``database_operation`` steps, ``progressive integrations call|test``
and ``progressive db`` all go through :class:`Integrations`. Importing this module imports no
driver: an http integration loads httpx, pybreaker and pyrate-limiter when first called, and each
database connector loads its own driver the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

from progressive_cli.config.integrations import HttpIntegration
from progressive_cli.config.secrets import REDACTOR
from progressive_cli.errors import NotFoundError, StepError, one_line
from progressive_cli.mca.metrics import Tally
from progressive_cli.store.base import StateStore

FLUSH_EVERY = 1.0
"""Seconds between flushes of metrics to the store (and at the end of every run, and at close)."""

CONNECTORS = {
    "postgres": ("progressive_cli.integrations.postgres", "PostgresConnector"),
    "redis": ("progressive_cli.integrations.redis", "RedisConnector"),
    "mongodb": ("progressive_cli.integrations.mongo", "MongoConnector"),
    "vector": ("progressive_cli.integrations.vector", "VectorConnector"),
}


class _Tally(Tally):
    """An agent call tally plus what only integrations count (the store's INTEGRATION_COUNTERS)."""

    def __init__(self) -> None:
        super().__init__()
        self.counters = {"rate_limited": 0, "breaker_opens": 0, "retries": 0, "rejected": 0}


EXTRAS = {"postgres": "postgres", "redis": "redis", "mongodb": "mongo", "vector": "vector"}
"""The pip extra that brings each database type's driver."""


@contextlib.contextmanager
def _extra_needed(name: str, extra: str) -> Iterator[None]:
    try:
        yield
    except ModuleNotFoundError as exc:
        raise StepError("STEP_ERROR", f"integration '{name}' needs the '{extra}' extra (no module {exc.name!r}): "
                        f"pip install 'progressive[{extra}]'", {"integration": name}) from None


def with_secrets(config: Any) -> Any:
    """A copy of an integration's config with every ``${env:NAME}`` replaced by its value (registered with
    the redactor, so it is masked wherever output is written)."""
    from progressive_cli.config.secrets import MissingSecretError, resolve

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return resolve(value)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    try:
        # exclude_unset, not exclude_none: an explicit `retry: null` must stay null, not become the default
        return type(config).model_validate(walk(config.model_dump(by_alias=True, exclude_unset=True)))
    except MissingSecretError as exc:
        raise StepError("STEP_ERROR", f"integration '{config.id}': {exc}; set it, or see "
                        "`progressive integrations list`", {"integration": config.id}) from None


class Integrations:
    """Every integration of a project, opened lazily."""

    def __init__(self, integrations: Iterable[Any], store: StateStore | None = None, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, rng: random.Random | None = None,
                 transport: Any = None) -> None:
        self.configs: dict[str, Any] = {i.id: i for i in integrations}
        self.store = store
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.transport = transport
        """An httpx transport for every http integration (tests: pytest-httpx, ASGI apps)."""
        self._ready: dict[str, Any] = {}
        self._clients: dict[str, Any] = {}
        self._connectors: dict[str, Any] = {}
        self._tallies: dict[str, _Tally] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._flushed_at = time.monotonic()

    # --- lookups -----------------------------------------------------------------------------------
    def config(self, name: str, *, http: bool | None = None, allow_disabled: bool = False) -> Any:
        """Integration ``name``'s config with its secrets resolved; a typed error if it cannot serve."""
        ready = self._ready.get(name)
        if ready is not None and (http is None or http == isinstance(ready, HttpIntegration)):
            return ready
        config = self.configs.get(name)
        if config is None:
            known = ", ".join(sorted(self.configs)) or "none"
            raise NotFoundError(f"unknown integration '{name}' (known: {known})")
        if http is True and not isinstance(config, HttpIntegration):
            raise StepError("STEP_ERROR", f"integration '{name}' is a {config.type} database, not an http API",
                            {"integration": name})
        if http is False and isinstance(config, HttpIntegration):
            raise StepError("STEP_ERROR", f"integration '{name}' is an http API, not a database",
                            {"integration": name})
        if not config.enabled and not allow_disabled:
            raise StepError("STEP_ERROR", f"integration '{name}' is disabled (enabled: false in integrations.yaml)",
                            {"integration": name})
        ready = self._ready[name] = with_secrets(config)
        return ready

    def _tally(self, name: str) -> _Tally:
        tally = self._tallies.get(name)
        if tally is None:
            tally = self._tallies[name] = _Tally()
        return tally

    def _recorder(self, name: str) -> Callable[[bool, float, str | None], None]:
        def record(ok: bool, latency_ms: float, error: str | None) -> None:
            self._tally(name).add(ok, latency_ms, time.time(), error)
        return record

    def _counter(self, name: str) -> Callable[[str], None]:
        def count(key: str) -> None:
            self._tally(name).counters[key] += 1
        return count

    async def http(self, name: str) -> Any:
        """The http client of integration ``name``, made (and its breaker loaded) on first use."""
        client = self._clients.get(name)
        if client is not None:
            return client
        config = self.config(name, http=True)
        async with self._opening.setdefault(name, asyncio.Lock()):
            if name in self._clients:
                return self._clients[name]
            with _extra_needed(name, "http"):
                from progressive_cli.integrations.breakers import IntegrationBreaker
                from progressive_cli.integrations.http import HttpClient

            count = self._counter(name)
            client = HttpClient(config, breaker=None, record=self._recorder(name), count=count,
                                sleep=self.sleep, rng=self.rng, transport=self.transport)
            if config.circuit_breaker is not None:
                client.breaker = IntegrationBreaker(name, config.circuit_breaker, self.store, client.counts,
                                                    on_open=lambda: count("breaker_opens"))
                with contextlib.suppress(Exception):  # an unreadable store must not stop the call
                    await client.breaker.load()
            self._clients[name] = client
            return client

    def connector(self, name: str) -> Any:
        connector = self._connectors.get(name)
        if connector is not None:
            return connector
        config = self.config(name, http=False)
        module, cls = CONNECTORS[config.type]
        embed = None
        embedding = getattr(config, "embedding", None)
        if embedding is not None:
            embed = self._embedder(embedding)
        with _extra_needed(name, EXTRAS[config.type]):
            connector_class = getattr(importlib.import_module(module), cls)
        connector = self._connectors[name] = connector_class(config, embed=embed)
        return connector

    def _embedder(self, embedding: Any) -> Callable[[list[str]], Awaitable[list[list[float]]]]:
        async def embed(texts: list[str]) -> list[list[float]]:
            body: dict[str, Any] = {"input": texts}
            if embedding.model:
                body["model"] = embedding.model
            answer = await self.api_call(embedding.integration, "POST", embedding.path, json_body=body,
                                         idempotent=True)
            try:
                rows = sorted(answer["body"]["data"], key=lambda row: row.get("index", 0))
                vectors = [[float(x) for x in row["embedding"]] for row in rows]
            except (KeyError, TypeError, ValueError, AttributeError):
                raise StepError("API_ERROR", f"integration '{embedding.integration}': {embedding.path} did not "
                                "answer {data: [{embedding: [...]}]}", {"integration": embedding.integration}) from None
            if len(vectors) != len(texts):
                raise StepError("API_ERROR", f"integration '{embedding.integration}' returned {len(vectors)} "
                                f"embedding(s) for {len(texts)} text(s)", {"integration": embedding.integration})
            return vectors
        return embed

    # --- calls -------------------------------------------------------------------------------------
    async def api_call(self, name: str, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                       headers: Mapping[str, str] | None = None, json_body: Any = None, data: Any = None,
                       idempotent: bool | None = None) -> dict[str, Any]:
        client = await self.http(name)
        try:
            response = await client.request(method, path, query=query, headers=headers, json_body=json_body,
                                            data=data, idempotent=idempotent)
            # a server may echo a key or token back (a query-string key in a "self" link): the response
            # becomes a step output, stored and printed, so known secrets are masked in it too
            return REDACTOR.redact_data(response)
        finally:
            if self._flush_due():
                await self.flush()

    async def db_call(self, name: str, operation: str, params: Mapping[str, Any], *,
                      read_only: bool = False) -> Any:
        connector = self._connectors.get(name) or self.connector(name)
        if operation not in connector.operations:
            raise StepError("STEP_ERROR", f"{connector.type} integration '{name}' has no operation '{operation}'; "
                            f"expected one of: {', '.join(connector.operations)}", {"integration": name})
        if read_only and operation in connector.writes:
            raise StepError("STEP_ERROR", f"{name}.{operation} writes; it needs --write", {"integration": name})
        started = time.perf_counter()
        try:
            result = await connector.run(operation, params, read_only=read_only)
        except StepError as exc:
            exc.details.setdefault("integration", name)
            self._tally(name).add(False, (time.perf_counter() - started) * 1000, time.time(),
                                  f"{exc.kind}: {exc.message}")
            raise
        finally:
            if self._flush_due():
                await self.flush()
        self._tally(name).add(True, (time.perf_counter() - started) * 1000, time.time(), None)
        return result

    async def test(self, name: str, *, allow_disabled: bool = False) -> dict[str, Any]:
        """Live connectivity: the http health request (with its conditions) or the database ping. With
        ``allow_disabled`` a disabled integration is checked too (an operator named it)."""
        config = self.configs[name] if name in self.configs else self.config(name)
        started = time.perf_counter()
        try:
            if allow_disabled:
                self.config(name, allow_disabled=True)  # cached ready: the calls below find it
            # made first (drivers imported) so that the latency is the server's, not the import's
            target = await self.http(name) if isinstance(config, HttpIntegration) else self.connector(name)
            started = time.perf_counter()
            detail = await target.ping()
            ok, error = True, None
        except StepError as exc:
            ok, detail, error = False, one_line(REDACTOR.redact(exc.message)), exc.kind
        except Exception as exc:  # a driver error the connector did not map: still one line, never a traceback
            ok, detail, error = False, one_line(REDACTOR.redact(f"{type(exc).__name__}: {exc}")), "NETWORK_ERROR"
        return {"integration": name, "type": config.type, "ok": ok, "error": error, "detail": detail,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3)}

    # --- metrics -----------------------------------------------------------------------------------
    def _flush_due(self) -> bool:
        return self.store is not None and time.monotonic() - self._flushed_at > FLUSH_EVERY

    async def flush(self) -> None:
        """Write metric deltas and breaker changes to the store."""
        self._flushed_at = time.monotonic()
        if self.store is None:
            return
        deltas = []
        for client in self._clients.values():
            if client.breaker is not None:
                await client.breaker.flush()
        tallies, self._tallies = self._tallies, {}
        for name, tally in tallies.items():
            deltas.append({"integration": name, "total": tally.total, "success": tally.success,
                           "failure": tally.failure, "latency_sum_ms": tally.latency_sum_ms,
                           "buckets": tally.buckets, "last_error": tally.last_error,
                           "last_call_at": tally.last_call_at, **tally.counters})
        if deltas:
            await self.store.merge_integration_metrics(deltas)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()
        clients, self._clients = self._clients, {}
        connectors, self._connectors = self._connectors, {}
        for client in clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        for connector in connectors.values():
            with contextlib.suppress(Exception):
                await connector.close()


__all__ = ["Integrations"]
