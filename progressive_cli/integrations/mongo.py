"""MongoDB connector: pymongo's ``AsyncMongoClient``.

Params are data. Filters, updates, projections and pipelines are BSON documents handed to the
driver as they are (a string is a string, never parsed as a query), and the three operators that
run JavaScript on the server (``$where``, ``$function``, ``$accumulator``) are refused at any depth.
``read_only`` refuses the write operations and the pipeline stages that write (``$out``, ``$merge``).

The URI may carry a password: it is resolved (``${env:...}``) only when the client is made, and no
message, repr or log line this module produces contains the URI or the password; errors name the
integration id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import unquote

import bson.errors
import pymongo.errors
from pymongo import AsyncMongoClient

from progressive_cli.config.secrets import REDACTOR, MissingSecretError, resolve
from progressive_cli.errors import StepError, one_line
from progressive_cli.integrations.base import Connector, Embed, bad_params, check_run, jsonable, require, unknown_params

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_DEPTH = 100
"""MongoDB refuses documents nested deeper than this, so params nested deeper are refused up front."""

CODE_OPERATORS = frozenset({"$where", "$function", "$accumulator"})
"""Operators whose argument is JavaScript that the server runs."""
WRITING_STAGES = frozenset({"$out", "$merge"})
"""Aggregation stages that write to a collection."""

_MAX_MESSAGE = 500


class MongoConnector(Connector):
    """One ``type: mongodb`` integration; the database is ``config.database``."""

    type: ClassVar[str] = "mongodb"
    operations: ClassVar[tuple[str, ...]] = (
        "find", "find_one", "insert_one", "insert_many", "update_one", "update_many",
        "delete_one", "delete_many", "aggregate",
    )
    writes: ClassVar[frozenset[str]] = frozenset(
        {"insert_one", "insert_many", "update_one", "update_many", "delete_one", "delete_many"}
    )

    def __init__(self, config: Any, *, embed: Embed | None = None) -> None:
        super().__init__(config, embed=embed)
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._secrets: list[str] = []

    def __repr__(self) -> str:
        return f"MongoConnector(id={self.name!r}, database={self.config.database!r})"

    # ------------------------------------------------------------------------------------ client
    def _database(self) -> Any:
        """The configured database on this event loop's client (an async client belongs to one loop;
        a call from another loop makes a new one)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = self._make_client()
            self._loop = loop
        return self._client[self.config.database]

    def _make_client(self) -> AsyncMongoClient[dict[str, Any]]:
        try:
            uri = resolve(self.config.uri)
        except MissingSecretError as exc:
            raise self._error("DATABASE_ERROR", f"{self.name}: {exc}", reason="missing_secret") from None
        self._remember_secrets(uri)
        timeout_ms = max(1, int(float(self.config.connect_timeout) * 1000))
        try:
            return AsyncMongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
                                    appname="progressive")
        except pymongo.errors.PyMongoError as exc:
            raise self._error("DATABASE_ERROR", f"{self.name}: invalid MongoDB URI or options: "
                              f"{self._scrub(str(exc))}", reason="invalid_uri") from None
        except (TypeError, ValueError):
            raise self._error("DATABASE_ERROR", f"{self.name}: invalid MongoDB URI or options",
                              reason="invalid_uri") from None

    def _remember_secrets(self, uri: str) -> None:
        """The URI and its password, to be masked in every message (the password also process-wide)."""
        secrets = [uri]
        _, sep, rest = uri.partition("://")
        if sep:
            userinfo, at, _ = rest.partition("/")[0].rpartition("@")
            if at:
                secrets.append(userinfo)
                _, colon, password = userinfo.partition(":")
                if colon and password:
                    secrets.extend({password, unquote(password)})
                    for value in {password, unquote(password)}:
                        REDACTOR.register(value)
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = one_line(REDACTOR.redact(text))
        return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"

    def _error(self, kind: str, message: str, **details: Any) -> StepError:
        return StepError(kind, self._scrub(message), {"integration": self.name, **details})

    # ---------------------------------------------------------------------------------- contract
    async def run(self, operation: str, params: Mapping[str, Any], *, read_only: bool = False) -> Any:
        check_run(self, operation, params, read_only, scrub=self._scrub)
        handler = getattr(self, f"_op_{operation}")
        try:
            return await handler(params, read_only)
        except StepError:
            raise
        except pymongo.errors.InvalidName as exc:
            raise bad_params(self.name, operation, self._scrub(str(exc))) from None
        except (bson.errors.InvalidDocument, bson.errors.InvalidBSON, OverflowError) as exc:
            raise bad_params(self.name, operation, f"not storable as BSON: {self._scrub(str(exc))}") from None
        except pymongo.errors.PyMongoError as exc:
            raise self._driver_error(operation, exc) from None

    def _driver_error(self, operation: str, exc: pymongo.errors.PyMongoError) -> StepError:
        where = f"{self.name}.{operation}"
        if isinstance(exc, pymongo.errors.ServerSelectionTimeoutError):
            return self._error("NETWORK_ERROR", f"{where}: cannot reach the MongoDB server: {_first_part(exc)}",
                               operation=operation)
        if isinstance(exc, pymongo.errors.ExecutionTimeout | pymongo.errors.NetworkTimeout
                      | pymongo.errors.WTimeoutError):
            return self._error("TIMEOUT", f"{where}: timed out: {_first_part(exc)}", operation=operation)
        if isinstance(exc, pymongo.errors.ConnectionFailure):
            return self._error("NETWORK_ERROR", f"{where}: connection failed: {_first_part(exc)}",
                               operation=operation)
        details: dict[str, Any] = {"operation": operation}
        message = str(exc)
        if isinstance(exc, pymongo.errors.OperationFailure):
            details["code"] = exc.code
            info = exc.details or {}
            if not isinstance(exc, pymongo.errors.BulkWriteError) and isinstance(info.get("errmsg"), str):
                message = info["errmsg"]
        return self._error("DATABASE_ERROR", f"{where}: {message}", **details)

    async def ping(self) -> str:
        try:
            admin = self._database().client.admin
            await admin.command("ping")
            try:
                info = await admin.command("buildInfo")
            except pymongo.errors.OperationFailure:
                return "ok"
            version = info.get("version")
            return f"MongoDB {version}" if isinstance(version, str) and version else "ok"
        except StepError:
            raise
        except pymongo.errors.PyMongoError as exc:
            raise self._driver_error("ping", exc) from None

    async def close(self) -> None:
        client, self._client = self._client, None
        loop, self._loop = self._loop, None
        if client is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is running:  # a client of a finished loop is just dropped
            await client.close()

    # -------------------------------------------------------------------------------- operations
    def _collection(self, params: Mapping[str, Any], operation: str) -> Any:
        name = require(params, "collection", str, self.name, operation)
        if not name or "\x00" in name or name.startswith("$"):
            raise bad_params(self.name, operation, f"invalid collection name {name!r}")
        return self._database()[name]

    def _document(self, params: Mapping[str, Any], key: str, operation: str, *, required: bool = False,
                  check_code: bool = True) -> dict[str, Any]:
        if key not in params or params[key] is None:
            if required:
                raise bad_params(self.name, operation, f"missing parameter '{key}'")
            return {}
        value = require(params, key, Mapping, self.name, operation)
        self._check(value, key, operation, check_code=check_code)
        return _plain(value)

    def _check(self, value: Any, key: str, operation: str, *, check_code: bool = True,
               read_only: bool = False) -> None:
        """Refuse JavaScript operators (and, read-only, writing stages) anywhere inside ``value``."""
        stack: list[tuple[Any, int]] = [(value, 0)]
        while stack:
            item, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise bad_params(self.name, operation, f"'{key}' is nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, Mapping):
                for k, v in item.items():
                    if isinstance(k, str):
                        if check_code and k in CODE_OPERATORS:
                            raise bad_params(self.name, operation, f"'{key}' uses {k}, which runs JavaScript on the "
                                             "server; it is not allowed")
                        if read_only and k in WRITING_STAGES:
                            raise self._error("DATABASE_ERROR", f"{self.name}.{operation}: refused: the {k} stage "
                                              "writes and this run is read-only; pass --write to allow it",
                                              operation=operation, reason="read_only")
                    stack.append((v, depth + 1))
            elif isinstance(item, list | tuple):
                stack.extend((v, depth + 1) for v in item)

    def _limit(self, params: Mapping[str, Any], operation: str) -> int:
        if params.get("limit") is None:
            return DEFAULT_LIMIT
        limit = require(params, "limit", int, self.name, operation)
        if not 1 <= limit <= MAX_LIMIT:
            raise bad_params(self.name, operation, f"'limit' must be between 1 and {MAX_LIMIT}, got {limit}")
        return int(limit)

    def _skip(self, params: Mapping[str, Any], operation: str) -> int:
        if params.get("skip") is None:
            return 0
        skip = require(params, "skip", int, self.name, operation)
        if skip < 0:
            raise bad_params(self.name, operation, f"'skip' must be 0 or more, got {skip}")
        return int(skip)

    def _projection(self, params: Mapping[str, Any], operation: str) -> dict[str, Any] | list[str] | None:
        value = params.get("projection")
        if value is None:
            return None
        if isinstance(value, list | tuple):
            if not all(isinstance(f, str) and f for f in value):
                raise bad_params(self.name, operation, "'projection' must be a mapping or a list of field names")
            return list(value)
        return self._document(params, "projection", operation)

    def _sort(self, params: Mapping[str, Any], operation: str) -> list[tuple[str, int]] | None:
        value = params.get("sort")
        if value is None:
            return None
        pairs: list[Any]
        if isinstance(value, Mapping):
            pairs = list(value.items())
        elif isinstance(value, list | tuple):
            pairs = list(value)
        else:
            raise bad_params(self.name, operation, "'sort' must be a list of [field, 1|-1] or a mapping {field: 1|-1}")
        result: list[tuple[str, int]] = []
        for pair in pairs:
            if (not isinstance(pair, list | tuple) or len(pair) != 2 or not isinstance(pair[0], str) or not pair[0]
                    or isinstance(pair[1], bool) or pair[1] not in (1, -1)):
                raise bad_params(self.name, operation, f"'sort' entries must be [field, 1|-1], got {pair!r}")
            result.append((pair[0], int(pair[1])))
        return result or None

    def _update(self, params: Mapping[str, Any], operation: str) -> dict[str, Any] | list[dict[str, Any]]:
        if "update" not in params:
            raise bad_params(self.name, operation, "missing parameter 'update'")
        update = params["update"]
        if isinstance(update, list | tuple):  # an aggregation pipeline update
            if not update or not all(isinstance(stage, Mapping) for stage in update):
                raise bad_params(self.name, operation, "'update' as a pipeline must be a non-empty list of stages")
            self._check(update, "update", operation)
            return [_plain(stage) for stage in update]
        if not isinstance(update, Mapping):
            raise bad_params(self.name, operation, f"parameter 'update' must be a mapping or a list of stages, "
                             f"got {type(update).__name__}")
        if not update or not all(isinstance(k, str) and k.startswith("$") for k in update):
            raise bad_params(self.name, operation, "'update' must use update operators such as $set, $inc, $unset "
                             "(replacing a whole document is not supported)")
        self._check(update, "update", operation)
        return _plain(update)

    def _upsert(self, params: Mapping[str, Any], operation: str) -> bool:
        if params.get("upsert") is None:
            return False
        return bool(require(params, "upsert", bool, self.name, operation))

    async def _op_find(self, params: Mapping[str, Any], read_only: bool) -> list[Any]:
        op = "find"
        unknown_params(params, {"collection", "filter", "projection", "sort", "limit", "skip"}, self.name, op)
        collection = self._collection(params, op)
        filter_ = self._document(params, "filter", op)
        projection = self._projection(params, op)
        sort = self._sort(params, op)
        cursor = collection.find(filter_, projection, skip=self._skip(params, op), limit=self._limit(params, op),
                                 sort=sort)
        return [jsonable(doc) for doc in await cursor.to_list()]

    async def _op_find_one(self, params: Mapping[str, Any], read_only: bool) -> Any:
        op = "find_one"
        unknown_params(params, {"collection", "filter", "projection"}, self.name, op)
        collection = self._collection(params, op)
        doc = await collection.find_one(self._document(params, "filter", op), self._projection(params, op))
        return jsonable(doc)

    async def _op_insert_one(self, params: Mapping[str, Any], read_only: bool) -> dict[str, Any]:
        op = "insert_one"
        unknown_params(params, {"collection", "document"}, self.name, op)
        collection = self._collection(params, op)
        document = self._document(params, "document", op, required=True, check_code=False)
        result = await collection.insert_one(document)
        return {"inserted_id": jsonable(result.inserted_id)}

    async def _op_insert_many(self, params: Mapping[str, Any], read_only: bool) -> dict[str, Any]:
        op = "insert_many"
        unknown_params(params, {"collection", "documents"}, self.name, op)
        collection = self._collection(params, op)
        documents = require(params, "documents", (list, tuple), self.name, op)
        if not documents:
            raise bad_params(self.name, op, "'documents' must not be empty")
        if not all(isinstance(d, Mapping) for d in documents):
            raise bad_params(self.name, op, "'documents' must be a list of mappings")
        self._check(documents, "documents", op, check_code=False)
        result = await collection.insert_many([_plain(d) for d in documents])
        return {"inserted_ids": jsonable(list(result.inserted_ids))}

    async def _update_op(self, params: Mapping[str, Any], op: str) -> dict[str, Any]:
        unknown_params(params, {"collection", "filter", "update", "upsert"}, self.name, op)
        collection = self._collection(params, op)
        filter_ = self._document(params, "filter", op, required=True)
        update = self._update(params, op)
        upsert = self._upsert(params, op)
        method = collection.update_one if op == "update_one" else collection.update_many
        result = await method(filter_, update, upsert=upsert)
        return {"matched": result.matched_count, "modified": result.modified_count,
                "upserted_id": jsonable(result.upserted_id)}

    async def _op_update_one(self, params: Mapping[str, Any], read_only: bool) -> dict[str, Any]:
        return await self._update_op(params, "update_one")

    async def _op_update_many(self, params: Mapping[str, Any], read_only: bool) -> dict[str, Any]:
        return await self._update_op(params, "update_many")

    async def _op_delete_one(self, params: Mapping[str, Any], read_only: bool) -> dict[str, Any]:
        op = "delete_one"
        unknown_params(params, {"collection", "filter"}, self.name, op)
        collection = self._collection(params, op)
        result = await collection.delete_one(self._document(params, "filter", op, required=True))
        return {"deleted": result.deleted_count}

    async def _op_delete_many(self, params: Mapping[str, Any], read_only: bool) -> dict[str, Any]:
        op = "delete_many"
        unknown_params(params, {"collection", "filter", "all"}, self.name, op)
        collection = self._collection(params, op)
        filter_ = self._document(params, "filter", op, required=True)
        everything = params.get("all") is not None and require(params, "all", bool, self.name, op)
        if not filter_ and not everything:
            raise bad_params(self.name, op, "an empty filter would delete every document; pass all: true to mean it")
        result = await collection.delete_many(filter_)
        return {"deleted": result.deleted_count}

    async def _op_aggregate(self, params: Mapping[str, Any], read_only: bool) -> list[Any]:
        op = "aggregate"
        unknown_params(params, {"collection", "pipeline"}, self.name, op)
        collection = self._collection(params, op)
        pipeline = require(params, "pipeline", (list, tuple), self.name, op)
        if not all(isinstance(stage, Mapping) for stage in pipeline):
            raise bad_params(self.name, op, "'pipeline' must be a list of stages (mappings)")
        self._check(pipeline, "pipeline", op, read_only=read_only)
        cursor = await collection.aggregate([_plain(stage) for stage in pipeline])
        return [jsonable(doc) for doc in await cursor.to_list()]


def _plain(value: Any) -> Any:
    """A copy made of dicts and lists (the driver adds ``_id`` to inserted dicts; params stay as given)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _first_part(exc: BaseException) -> str:
    """The head of a driver message, without the topology description that follows it."""
    text = str(exc)
    for marker in (", Timeout:", ", Topology Description:"):
        text = text.split(marker, 1)[0]
    return text


__all__ = ["CODE_OPERATORS", "WRITING_STAGES", "MongoConnector"]
