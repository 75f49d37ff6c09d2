"""Redis (and Valkey) integrations through redis-py's asyncio client.

Operations (``params`` as rendered by a workflow step or the CLI):

- ``get`` ``{key}`` -> the string value or None;
- ``set`` ``{key, value, ttl?}`` -> True; ``ttl`` in seconds (a number > 0);
- ``delete`` ``{key}`` or ``{keys: [...]}`` -> how many keys were deleted;
- ``mget`` ``{keys: [...]}`` -> one value (or None) per key;
- ``hget`` ``{key, field}`` -> the field's value or None;
- ``hset`` ``{key, mapping: {field: value}}`` -> how many fields were new;
- ``publish`` ``{stream, fields: {...}, maxlen?}`` -> the new entry's id (``XADD``, a stream publish;
  ``maxlen`` trims the stream to that many entries).

A value that is not a string is stored as JSON. Keys, fields and values travel as command arguments
only (RESP bulk strings, so a key such as ``"a\\r\\nFLUSHALL\\r\\n"`` is just a key); no command is
built from a string and nothing is ever evaluated (no EVAL). ``connect_timeout`` bounds connecting
and each reply; a connection that broke (server restarted) is re-made once, at once.

The client is made on first use in the running event loop and should be closed (``close()``) in it;
if it is not, a guard task closes its connections when ``asyncio.run()`` cancels the loop's remaining
tasks. A connector used again in another loop makes a new client there. The url (and its password)
never appears in an error message or repr of this module.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from progressive_cli.errors import StepError, one_line
from progressive_cli.integrations.base import Connector, Embed, bad_params, require, unknown_params


class RedisConnector(Connector):
    """One ``type: redis`` integration."""

    type = "redis"
    operations = ("get", "set", "delete", "mget", "hget", "hset", "publish")
    writes = frozenset({"set", "delete", "hset", "publish"})

    def __init__(self, config: Any, *, embed: Embed | None = None) -> None:
        super().__init__(config, embed=embed)
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard: asyncio.Task[None] | None = None
        url = str(config.url)
        self._secrets = [url]
        try:
            parts = urlsplit(url)
            passwords = [parts.password or "", *parse_qs(parts.query).get("password", [])]
        except ValueError:
            passwords = []
        self._secrets += [p for password in passwords if password for p in (password, unquote(password))]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.name!r})"

    # --- operations ---------------------------------------------------------------------------------
    async def run(self, operation: str, params: Mapping[str, Any], *, read_only: bool = False) -> Any:
        name = self.name
        if operation not in self.operations:
            raise bad_params(name, operation, f"unknown operation; expected one of {', '.join(self.operations)}")
        if not isinstance(params, Mapping):
            raise bad_params(name, operation, f"parameters must be a mapping, got {type(params).__name__}")
        call = self._command(operation, params)
        if read_only and operation in self.writes:
            raise StepError("DATABASE_ERROR", f"redis '{name}': {operation} writes, and the operation was read-only "
                                              "(pass --write to allow writes)",
                            {"integration": name, "operation": operation})
        client = self._get_client(operation)
        try:
            return await call(client)
        except (rx.RedisError, UnicodeError) as exc:
            raise self._error(exc, operation) from None

    async def ping(self) -> str:
        """``PING``; returns e.g. ``valkey 8.1.8`` or ``redis 7.2.4`` (from ``INFO server``)."""
        client = self._get_client("ping")
        try:
            await client.ping()
            info = await client.info("server")
        except (rx.RedisError, UnicodeError) as exc:
            raise self._error(exc, "ping") from None
        server = str(info.get("server_name") or "redis")
        version = info.get(f"{server}_version") or info.get("redis_version") or ""
        return f"{server} {version}".strip()

    async def close(self) -> None:
        client, self._client = self._client, None
        guard, self._guard = self._guard, None
        if client is not None and self._loop is _running_loop():
            await client.aclose(close_connection_pool=True)
        if guard is not None:
            guard.cancel()

    # --- parameters ---------------------------------------------------------------------------------
    def _command(self, operation: str, params: Mapping[str, Any]) -> Any:
        """Checks *params* and returns ``async (client) -> result`` for the operation."""
        name = self.name

        def req(key: str, kind: type | tuple[type, ...]) -> Any:
            return require(params, key, kind, name, operation)

        def keys(key: str) -> list[str]:
            values = req(key, list)
            if not values:
                raise bad_params(name, operation, f"parameter '{key}' must list at least one key")
            for i, value in enumerate(values):
                if not isinstance(value, str):
                    raise bad_params(name, operation, f"{key}[{i}] must be str, got {type(value).__name__}")
            return values

        def fields(key: str) -> dict[str, str]:
            mapping = req(key, dict)
            if not mapping:
                raise bad_params(name, operation, f"parameter '{key}' must not be empty")
            out = {}
            for field, value in mapping.items():
                if not isinstance(field, str):
                    raise bad_params(name, operation, f"{key}: field names must be str, got {type(field).__name__}")
                out[field] = self._encode(value, f"{key}.{field}", operation)
            return out

        if operation == "get":
            unknown_params(params, {"key"}, name, operation)
            key = req("key", str)
            return lambda c: c.get(key)
        if operation == "set":
            unknown_params(params, {"key", "value", "ttl"}, name, operation)
            key = req("key", str)
            if "value" not in params:
                raise bad_params(name, operation, "missing parameter 'value'")
            value = self._encode(params["value"], "value", operation)
            ttl = params.get("ttl")
            if ttl is None:
                return lambda c: c.set(key, value)
            ttl = req("ttl", (int, float))
            if not math.isfinite(ttl) or ttl <= 0:
                raise bad_params(name, operation, f"parameter 'ttl' must be a number of seconds > 0, got {ttl}")
            if isinstance(ttl, int) or ttl.is_integer():
                seconds = int(ttl)
                return lambda c: c.set(key, value, ex=seconds)
            millis = max(1, round(ttl * 1000))
            return lambda c: c.set(key, value, px=millis)
        if operation == "delete":
            unknown_params(params, {"key", "keys"}, name, operation)
            if ("key" in params) == ("keys" in params):
                raise bad_params(name, operation, "give either 'key' or 'keys'")
            names = [req("key", str)] if "key" in params else keys("keys")
            return lambda c: c.delete(*names)
        if operation == "mget":
            unknown_params(params, {"keys"}, name, operation)
            names = keys("keys")
            return lambda c: c.mget(names)
        if operation == "hget":
            unknown_params(params, {"key", "field"}, name, operation)
            key, field = req("key", str), req("field", str)
            return lambda c: c.hget(key, field)
        if operation == "hset":
            unknown_params(params, {"key", "mapping"}, name, operation)
            key = req("key", str)
            mapping = fields("mapping")
            return lambda c: c.hset(key, mapping=mapping)
        # publish
        unknown_params(params, {"stream", "fields", "maxlen"}, name, operation)
        stream = req("stream", str)
        entry = fields("fields")
        maxlen = params.get("maxlen")
        if maxlen is not None:
            maxlen = req("maxlen", int)
            if maxlen < 1:
                raise bad_params(name, operation, f"parameter 'maxlen' must be at least 1, got {maxlen}")
        return lambda c: c.xadd(stream, entry, maxlen=maxlen, approximate=False)

    def _encode(self, value: Any, where: str, operation: str) -> str:
        """A str as is; anything else as JSON."""
        if isinstance(value, str):
            return value
        try:
            return json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise bad_params(self.name, operation, f"{where} cannot be stored as JSON: {exc}") from None

    # --- client and errors --------------------------------------------------------------------------
    def _get_client(self, operation: str) -> Redis:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        # A client's connections belong to the loop they were made in; one from a finished loop is dropped.
        timeout = float(self.config.connect_timeout)
        try:
            client = Redis.from_url(
                str(self.config.url), decode_responses=True, socket_connect_timeout=timeout, socket_timeout=timeout,
                # One immediate retry on a broken connection (say, after a server restart), none on a timeout.
                retry=Retry(NoBackoff(), 1, supported_errors=(rx.ConnectionError,)),
            )
        except (ValueError, TypeError, rx.RedisError):  # its message may quote the url
            raise StepError("NETWORK_ERROR", f"redis '{self.name}': cannot connect: the url is not a valid "
                                             "redis:// URL (not shown: it may hold a password)",
                            {"integration": self.name, "operation": operation}) from None
        self._client, self._loop = client, loop
        self._guard = loop.create_task(_close_on_cancel(client), name=f"progressive-{self.name}-client-guard")
        return client

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return one_line(" ".join(text.split()))

    def _error(self, exc: BaseException, operation: str) -> StepError:
        details: dict[str, object] = {"integration": self.name, "operation": operation}
        prefix = f"redis '{self.name}'"
        text = str(exc) or type(exc).__name__
        if isinstance(exc, UnicodeEncodeError):
            return bad_params(self.name, operation, "keys and values must be valid Unicode text")
        if isinstance(exc, UnicodeDecodeError):
            return StepError("DATABASE_ERROR", f"{prefix}: the stored value is not UTF-8 text", details)
        if isinstance(exc, rx.TimeoutError) and "connecting" not in text:
            return StepError("TIMEOUT", self._scrub(f"{prefix}: no reply within "
                                                    f"{float(self.config.connect_timeout):g} s: {text}"), details)
        if isinstance(exc, rx.ConnectionError | rx.TimeoutError):
            what = "cannot connect" if "connecting" in text else "connection lost"
            return StepError("NETWORK_ERROR", self._scrub(f"{prefix}: {what}: {text}"), details)
        code = text.split(" ", 1)[0]
        if code.isupper() and code.isalpha():
            details["code"] = code  # WRONGTYPE, ERR, NOPERM, ...
        return StepError("DATABASE_ERROR", self._scrub(f"{prefix}: {text}"), details)


async def _close_on_cancel(client: Redis) -> None:
    """Waits forever; when cancelled (our close(), or asyncio.run() ending the loop) closes *client*."""
    try:
        await asyncio.Event().wait()
    finally:
        await client.aclose(close_connection_pool=True)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


__all__ = ["RedisConnector"]
