"""What every database connector is, and the helpers they share.

A connector wraps one database integration from integrations.yaml. Its driver is imported by its
own module (``postgres.py``, ``redis.py``, ``mongo.py``, ``vector.py``), which the hub imports only
when that integration is first used, so ``progressive --help`` and runs that touch no database
never load psycopg, redis, pymongo or chromadb.

Contract:

- ``run(operation, params, read_only=...)`` performs one operation with *params* (a mapping that
  came from a workflow step or the CLI, already rendered) and returns a JSON-able value. Values in
  params are always sent as data (SQL parameters, Redis arguments, BSON values); nothing in them is
  ever spliced into a statement.
- Failures raise :class:`StepError` with a kind from :data:`DB_ERROR_KINDS`:
  ``NETWORK_ERROR`` (cannot connect, connection lost), ``TIMEOUT``, ``DATABASE_ERROR`` (the server
  refused the operation), ``STEP_ERROR`` (params of the wrong shape; ``bad_params`` builds it).
- ``ping()`` is the health check (``SELECT 1``, ``PING``, ``ping``, heartbeat); it returns a short
  detail such as the server version and raises like ``run``.
- ``close()`` releases pools and clients; it is safe to call twice.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import math
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from progressive_cli.errors import StepError

DB_ERROR_KINDS = ("NETWORK_ERROR", "TIMEOUT", "DATABASE_ERROR", "STEP_ERROR")

Embed = Callable[[list[str]], Awaitable[list[list[float]]]]
"""Turns texts into embeddings through the vector integration's configured embedding API."""


class Connector(ABC):
    """One database integration."""

    type: ClassVar[str]
    operations: ClassVar[tuple[str, ...]]
    writes: ClassVar[frozenset[str]]
    """Operations that change data. ``progressive db`` refuses them without ``--write``."""

    def __init__(self, config: Any, *, embed: Embed | None = None) -> None:
        self.config = config
        self.embed = embed

    @property
    def name(self) -> str:
        return str(self.config.id)

    @abstractmethod
    async def run(self, operation: str, params: Mapping[str, Any], *, read_only: bool = False) -> Any:
        """Perform ``operation``. With ``read_only`` the connector must make writes impossible where
        the database can enforce it (PostgreSQL: a READ ONLY transaction)."""

    @abstractmethod
    async def ping(self) -> str: ...

    @abstractmethod
    async def close(self) -> None: ...


def bad_params(integration: str, operation: str, message: str) -> StepError:
    return StepError("STEP_ERROR", f"{integration}.{operation}: {message}",
                     {"integration": integration, "operation": operation})


def require(params: Mapping[str, Any], key: str, kind: type | tuple[type, ...], integration: str,
            operation: str) -> Any:
    """``params[key]``, which must be present and of ``kind``."""
    if key not in params:
        raise bad_params(integration, operation, f"missing parameter '{key}'")
    value = params[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        names = " or ".join(t.__name__ for t in _as_tuple(kind))
        raise bad_params(integration, operation, f"parameter '{key}' must be {names}, got {type(value).__name__}")
    return value


def unknown_params(params: Mapping[str, Any], allowed: set[str], integration: str, operation: str) -> None:
    extra = sorted(set(params) - allowed)
    if extra:
        raise bad_params(integration, operation, f"unknown parameter(s) {', '.join(extra)}; "
                                                 f"expected {', '.join(sorted(allowed))}")


def check_run(connector: Connector, operation: str, params: Any, read_only: bool, *,
              scrub: Callable[[str], str] | None = None) -> None:
    """The checks a ``run`` starts with: a known operation and params that are a mapping (else
    STEP_ERROR), and no write in a read-only run (else DATABASE_ERROR with reason ``read_only``;
    *scrub*, if given, cleans that error's message)."""
    name = connector.name
    if operation not in connector.operations:
        raise bad_params(name, operation, f"unknown operation; expected one of {', '.join(connector.operations)}")
    if not isinstance(params, Mapping):
        raise bad_params(name, operation, f"params must be a mapping, got {type(params).__name__}")
    if read_only and operation in connector.writes:
        message = (f"{name}.{operation}: refused: '{operation}' writes and this run is read-only; "
                   "pass --write to allow it")
        raise StepError("DATABASE_ERROR", message if scrub is None else scrub(message),
                        {"integration": name, "operation": operation, "reason": "read_only"})


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


_PLAIN = frozenset({str, int, bool, type(None)})


def _float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _decimal(value: decimal.Decimal) -> int | float | None:
    if not value.is_finite():
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def _b64(value: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(bytes(value)).decode()


def _iso(value: _dt.date | _dt.time) -> str:
    return value.isoformat()


_CONVERT: dict[type, Callable[[Any], Any]] = {
    float: _float, decimal.Decimal: _decimal, _dt.datetime: _iso, _dt.date: _iso, _dt.time: _iso,
    _dt.timedelta: lambda v: v.total_seconds(), bytes: _b64, bytearray: _b64, memoryview: _b64, uuid.UUID: str,
}


def jsonable(value: Any) -> Any:
    """Database values as JSON: Decimal -> int or float, dates -> ISO 8601, bytes -> base64, UUID and
    ObjectId (anything else) -> str. NaN and infinities become None (JSON has no such numbers).
    Exact types are looked up first: a query's rows go through here, and its cost is measured."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    convert = _CONVERT.get(kind)
    if convert is not None:
        return convert(value)
    if kind is dict:
        return {k if type(k) is str else str(k): v if type(v) in _PLAIN else jsonable(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _PLAIN else jsonable(v) for v in value]
    # subclasses and other containers
    if isinstance(value, bool | int | str):
        return value
    for base, convert in _CONVERT.items():
        if isinstance(value, base):
            return convert(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars (chromadb)
        return jsonable(value.tolist())
    return str(value)


__all__ = ["DB_ERROR_KINDS", "Connector", "Embed", "bad_params", "check_run", "jsonable", "require",
           "unknown_params"]
