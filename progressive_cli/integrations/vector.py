"""Vector database connector: Chroma, embedded (``PersistentClient``) or a server (``HttpClient``).

chromadb is synchronous, so every call runs in a worker thread. Chroma never embeds anything by
itself here (its default embedding function downloads a model, which fails offline, and a
collection's schema may name that default even when it was created without one): embeddings are
either passed in params or made by the integration's ``embedding:`` API through ``self.embed``; a
call that would leave Chroma to embed documents is refused.

Only ``add`` creates the collection; ``search``, ``update`` and ``delete`` on a collection that does
not exist fail with DATABASE_ERROR. Counts are exact: ``add`` skips (and reports) ids that already
exist, as Chroma would silently, ``update`` reports ids it did not find, and ``delete`` deletes
exactly the records that matched.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import chromadb
import chromadb.errors
import httpx
from chromadb.config import Settings

from progressive_cli.config.secrets import REDACTOR
from progressive_cli.errors import StepError, one_line
from progressive_cli.integrations.base import Connector, Embed, bad_params, check_run, jsonable, require, unknown_params

DEFAULT_K = 5
MAX_K = 10_000
HTTP_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
"""chromadb's HttpClient waits forever by default; its session gets these limits instead."""

_MAX_MESSAGE = 500
T = TypeVar("T")


class VectorConnector(Connector):
    """One ``type: vector`` integration: a Chroma collection (``config.collection``, or ``collection`` in params)."""

    type: ClassVar[str] = "vector"
    operations: ClassVar[tuple[str, ...]] = ("add", "search", "update", "delete")
    writes: ClassVar[frozenset[str]] = frozenset({"add", "update", "delete"})

    def __init__(self, config: Any, *, embed: Embed | None = None) -> None:
        super().__init__(config, embed=embed)
        self._client: Any = None
        self._sessions: list[httpx.Client] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = f"path={self.config.path!r}" if self.config.path is not None else \
            f"host={self.config.host!r}, port={self.config.port!r}"
        return f"VectorConnector(id={self.name!r}, {where}, collection={self.config.collection!r})"

    # ------------------------------------------------------------------------- client (in threads)
    def _client_sync(self) -> Any:
        with self._lock:
            if self._client is None:
                settings = Settings(anonymized_telemetry=False)
                if self.config.path is not None:
                    path = Path(self.config.path).expanduser()
                    self._client = chromadb.PersistentClient(path=str(path), settings=settings)
                else:
                    client = chromadb.HttpClient(host=self.config.host, port=self.config.port, settings=settings)
                    self._sessions = _http_sessions(client)
                    for session in self._sessions:
                        session.timeout = HTTP_TIMEOUT
                    self._client = client
            return self._client

    def _collection_sync(self, name: str, operation: str, *, create: bool) -> Any:
        client = self._client_sync()
        if create:
            return client.get_or_create_collection(name, embedding_function=None)
        try:
            return client.get_collection(name, embedding_function=None)
        except chromadb.errors.NotFoundError:
            raise StepError("DATABASE_ERROR", f"{self.name}.{operation}: collection '{name}' does not exist",
                            {"integration": self.name, "operation": operation, "collection": name,
                             "reason": "not_found"}) from None

    def _close_sync(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            sessions, self._sessions = self._sessions, []
        if client is not None:
            client.close()
        for session in sessions:  # chromadb's close() leaves its HTTP sessions (and their sockets) open
            session.close()

    async def _call(self, operation: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except StepError:
            raise
        except Exception as exc:  # chromadb raises ValueError, ChromaError subclasses and httpx errors
            raise self._chroma_error(operation, exc) from None

    def _chroma_error(self, operation: str, exc: Exception) -> StepError:
        where = f"{self.name}.{operation}"
        message = str(exc)
        if isinstance(exc, httpx.TimeoutException):
            return self._error("TIMEOUT", f"{where}: the Chroma server did not answer in time: {message}", operation)
        if isinstance(exc, httpx.TransportError) or (
                isinstance(exc, ValueError) and "Could not connect to a Chroma server" in message):
            return self._error("NETWORK_ERROR", f"{where}: cannot reach the Chroma server: {message}", operation)
        return self._error("DATABASE_ERROR", f"{where}: {message or type(exc).__name__}", operation)

    def _error(self, kind: str, message: str, operation: str) -> StepError:
        text = one_line(REDACTOR.redact(message))
        if len(text) > _MAX_MESSAGE:
            text = text[:_MAX_MESSAGE] + "…"
        return StepError(kind, text, {"integration": self.name, "operation": operation})

    # ---------------------------------------------------------------------------------- contract
    async def run(self, operation: str, params: Mapping[str, Any], *, read_only: bool = False) -> Any:
        check_run(self, operation, params, read_only)
        if operation == "add":
            return await self._add(params)
        if operation == "search":
            return await self._search(params)
        if operation == "update":
            return await self._update(params)
        return await self._delete(params)

    async def ping(self) -> str:
        def work() -> str:
            client = self._client_sync()
            client.heartbeat()
            return str(client.get_version())

        version = await self._call("ping", work)
        return f"chroma {version}: heartbeat ok"

    async def close(self) -> None:
        await asyncio.to_thread(self._close_sync)

    # ---------------------------------------------------------------------------------- params
    def _collection_name(self, params: Mapping[str, Any], op: str) -> str:
        if params.get("collection") is None:
            return str(self.config.collection)
        name = require(params, "collection", str, self.name, op)
        if not name:
            raise bad_params(self.name, op, "'collection' must not be empty")
        return str(name)

    def _ids(self, params: Mapping[str, Any], op: str) -> list[str]:
        ids = require(params, "ids", list, self.name, op)
        if not ids:
            raise bad_params(self.name, op, "'ids' must not be empty")
        if not all(isinstance(i, str) and i for i in ids):
            raise bad_params(self.name, op, "'ids' must be a list of non-empty strings")
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise bad_params(self.name, op, f"'ids' has duplicates: {', '.join(dupes)}")
        return list(ids)

    def _vector(self, value: Any, what: str, op: str) -> list[float]:
        if not isinstance(value, list | tuple) or not value:
            raise bad_params(self.name, op, f"{what} must be a non-empty list of numbers")
        for x in value:
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
                raise bad_params(self.name, op, f"{what} must contain only finite numbers, got {x!r}")
        return [float(x) for x in value]

    def _embeddings(self, params: Mapping[str, Any], op: str, count: int) -> list[list[float]] | None:
        if params.get("embeddings") is None:
            return None
        value = require(params, "embeddings", list, self.name, op)
        vectors = [self._vector(v, f"embeddings[{n}]", op) for n, v in enumerate(value)]
        self._same_shape(vectors, count, op)
        return vectors

    def _same_shape(self, vectors: list[list[float]], count: int, op: str) -> None:
        if len(vectors) != count:
            raise bad_params(self.name, op, f"'embeddings' has {len(vectors)} entries for {count} ids")
        dims = {len(v) for v in vectors}
        if len(dims) > 1:
            raise bad_params(self.name, op, f"'embeddings' must all have the same length, got {sorted(dims)}")

    def _texts(self, params: Mapping[str, Any], op: str, count: int) -> list[str] | None:
        if params.get("documents") is None:
            return None
        docs = require(params, "documents", list, self.name, op)
        if not all(isinstance(d, str) for d in docs):
            raise bad_params(self.name, op, "'documents' must be a list of strings")
        if len(docs) != count:
            raise bad_params(self.name, op, f"'documents' has {len(docs)} entries for {count} ids")
        return list(docs)

    def _metadatas(self, params: Mapping[str, Any], op: str, count: int) -> list[dict[str, Any]] | None:
        if params.get("metadatas") is None:
            return None
        metas = require(params, "metadatas", list, self.name, op)
        if not all(isinstance(m, Mapping) and all(isinstance(k, str) for k in m) for m in metas):
            raise bad_params(self.name, op, "'metadatas' must be a list of mappings with string keys")
        if len(metas) != count:
            raise bad_params(self.name, op, f"'metadatas' has {len(metas)} entries for {count} ids")
        return [dict(m) for m in metas]

    def _records(self, params: Mapping[str, Any], op: str) -> tuple[
            str, list[str], list[list[float]] | None, list[str] | None, list[dict[str, Any]] | None]:
        """The params of ``add`` and ``update``: the collection's name, the ids, and their embeddings,
        documents and metadatas (each None when not given)."""
        unknown_params(params, {"collection", "ids", "embeddings", "documents", "metadatas"}, self.name, op)
        name = self._collection_name(params, op)
        ids = self._ids(params, op)
        return (name, ids, self._embeddings(params, op, len(ids)), self._texts(params, op, len(ids)),
                self._metadatas(params, op, len(ids)))

    def _where(self, params: Mapping[str, Any], op: str) -> dict[str, Any] | None:
        if params.get("where") is None:
            return None
        where = require(params, "where", Mapping, self.name, op)
        return dict(where) or None

    async def _embed_texts(self, texts: list[str], op: str) -> list[list[float]]:
        if self.embed is None:
            raise bad_params(self.name, op, "embeddings are required: pass 'embeddings', or configure 'embedding:' "
                             "on the integration (Chroma's own embedding function is never used)")
        vectors = await self.embed(texts)
        problem = None
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            problem = f"{len(vectors) if isinstance(vectors, list) else type(vectors).__name__} embeddings for " \
                      f"{len(texts)} texts"
        else:
            try:
                vectors = [self._vector(v, "an embedding", op) for v in vectors]
            except StepError as exc:
                problem = exc.message
            else:
                if len({len(v) for v in vectors}) > 1:
                    problem = "embeddings of different lengths"
        if problem is not None:
            raise StepError("DATABASE_ERROR", f"{self.name}.{op}: the embedding integration returned {problem}",
                            {"integration": self.name, "operation": op, "reason": "bad_embeddings"})
        return vectors

    # -------------------------------------------------------------------------------- operations
    async def _add(self, params: Mapping[str, Any]) -> dict[str, Any]:
        op = "add"
        name, ids, embeddings, documents, metadatas = self._records(params, op)
        if embeddings is None:
            if documents is None:
                raise bad_params(self.name, op, "embeddings are required: pass 'embeddings' (or 'documents' with "
                                 "'embedding:' configured on the integration)")
            embeddings = await self._embed_texts(documents, op)

        def work() -> dict[str, Any]:
            collection = self._collection_sync(name, op, create=True)
            existing = set(collection.get(ids=ids, include=[])["ids"])
            keep = [n for n, i in enumerate(ids) if i not in existing]
            if keep:
                collection.add(**_kept(keep, ids=ids, embeddings=embeddings, documents=documents,
                                       metadatas=metadatas))
            result: dict[str, Any] = {"added": len(keep)}
            if existing:
                result["existing"] = [i for i in ids if i in existing]
            return result

        return await self._call(op, work)

    async def _search(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        op = "search"
        unknown_params(params, {"collection", "embedding", "text", "k", "where", "include_documents"}, self.name, op)
        name = self._collection_name(params, op)
        has_embedding = params.get("embedding") is not None
        has_text = params.get("text") is not None
        if has_embedding == has_text:
            raise bad_params(self.name, op, "pass exactly one of 'embedding' or 'text'")
        k = DEFAULT_K
        if params.get("k") is not None:
            k = require(params, "k", int, self.name, op)
            if not 1 <= k <= MAX_K:
                raise bad_params(self.name, op, f"'k' must be between 1 and {MAX_K}, got {k}")
        where = self._where(params, op)
        include_documents = True
        if params.get("include_documents") is not None:
            include_documents = require(params, "include_documents", bool, self.name, op)
        if has_embedding:
            vector = self._vector(params["embedding"], "'embedding'", op)
        else:
            text = require(params, "text", str, self.name, op)
            vector = (await self._embed_texts([text], op))[0]
        include = ["metadatas", "distances", *(["documents"] if include_documents else [])]

        def work() -> Any:
            collection = self._collection_sync(name, op, create=False)
            return collection.query(query_embeddings=[vector], n_results=k, where=where, include=include)

        result = await self._call(op, work)
        ids = result["ids"][0] if result.get("ids") else []
        distances = (result.get("distances") or [[None] * len(ids)])[0]
        metadatas = (result.get("metadatas") or [[None] * len(ids)])[0]
        documents = (result.get("documents") or [[None] * len(ids)])[0] if include_documents else [None] * len(ids)
        hits = [
            {"id": str(i), "distance": jsonable(d), "document": doc if include_documents else None,
             "metadata": jsonable(m)}
            for i, d, doc, m in zip(ids, distances, documents, metadatas, strict=False)
        ]
        hits.sort(key=lambda h: math.inf if h["distance"] is None else h["distance"])
        return hits

    async def _update(self, params: Mapping[str, Any]) -> dict[str, Any]:
        op = "update"
        name, ids, embeddings, documents, metadatas = self._records(params, op)
        if embeddings is None and documents is None and metadatas is None:
            raise bad_params(self.name, op, "pass at least one of 'embeddings', 'documents' or 'metadatas'")
        if embeddings is None and documents is not None:
            if self.embed is None:
                raise bad_params(self.name, op, "new 'documents' need their 'embeddings': pass them, or configure "
                                 "'embedding:' on the integration (Chroma's own embedding function is never used)")
            embeddings = await self._embed_texts(documents, op)

        def work() -> dict[str, Any]:
            collection = self._collection_sync(name, op, create=False)
            found = set(collection.get(ids=ids, include=[])["ids"])
            keep = [n for n, i in enumerate(ids) if i in found]
            if keep:
                collection.update(**_kept(keep, ids=ids, embeddings=embeddings, documents=documents,
                                          metadatas=metadatas))
            result: dict[str, Any] = {"updated": len(keep)}
            if len(keep) < len(ids):
                result["missing"] = [i for i in ids if i not in found]
            return result

        return await self._call(op, work)

    async def _delete(self, params: Mapping[str, Any]) -> dict[str, Any]:
        op = "delete"
        unknown_params(params, {"collection", "ids", "where"}, self.name, op)
        name = self._collection_name(params, op)
        ids = self._ids(params, op) if params.get("ids") is not None else None
        where = self._where(params, op)
        if ids is None and where is None:
            raise bad_params(self.name, op, "pass 'ids' or a non-empty 'where' (or both)")

        def work() -> dict[str, Any]:
            collection = self._collection_sync(name, op, create=False)
            matched = list(collection.get(ids=ids, where=where, include=[])["ids"])
            if matched:
                collection.delete(ids=matched)
            return {"deleted": len(matched)}

        return await self._call(op, work)


def _kept(keep: list[int], **columns: list[Any] | None) -> dict[str, list[Any] | None]:
    """Each column's entries at the indexes in *keep*, as keyword arguments of a Chroma ``add`` or
    ``update`` (a column that is None stays None: not given)."""
    return {key: None if values is None else [values[n] for n in keep] for key, values in columns.items()}


def _http_sessions(client: Any) -> list[httpx.Client]:
    """The httpx clients inside a chromadb HttpClient: its own and its admin client's (each has a
    System of its own). Private attributes, looked up defensively: none found just means none tuned."""
    found: list[httpx.Client] = []
    for owner in (client, getattr(client, "_admin_client", None)):
        session = getattr(getattr(owner, "_server", None), "_session", None)
        if isinstance(session, httpx.Client) and all(session is not s for s in found):
            found.append(session)
    return found


__all__ = ["VectorConnector"]
