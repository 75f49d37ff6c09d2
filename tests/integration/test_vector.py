"""VectorConnector against Chroma: embedded (PersistentClient) and a real ``chroma run`` server (HttpClient).

No test lets Chroma embed anything itself: every add, update and search passes embeddings or goes
through a fake async embedder (Chroma's default embedding function would download a model).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from connectors import closed_port, fails, go

# imports chromadb (slow: once per session)
from progressive_cli.config.integrations import VectorIntegration
from progressive_cli.integrations.vector import VectorConnector

ID = "vec-test"

ITEMS = {
    "ids": ["apple", "banana", "carrot", "durian"],
    "embeddings": [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    "documents": ["an apple", "a banana", "a carrot", "a durian"],
    "metadatas": [{"kind": "fruit", "n": 1}, {"kind": "fruit", "n": 2}, {"kind": "veg", "n": 3},
                  {"kind": "fruit", "n": 4}],
}


@pytest.fixture(autouse=True)
def chroma_never_embeds(monkeypatch):
    """Fails a test in which Chroma tried its default embedding function (a model download)."""
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

    attempts: list[str] = []

    def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append("default embedding function called")
        raise RuntimeError("test: Chroma must not embed by itself")

    monkeypatch.setattr(ONNXMiniLM_L6_V2, "__call__", refuse)
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "_download_model_if_not_exists", refuse)
    yield
    assert attempts == []


def vector_config(*, path: str | None = None, server: tuple[str, int] | None = None,
                  collection: str | None = None) -> VectorIntegration:
    where: dict[str, Any] = {"path": path} if path is not None else {"host": server[0], "port": server[1]}
    return VectorIntegration.model_validate({
        "id": ID, "type": "vector", **where, "collection": collection or f"c-{uuid.uuid4().hex[:12]}",
    })


@pytest.fixture(params=["persistent", "http"])
def make(request) -> Callable[..., VectorConnector]:
    """A connector factory for an embedded store (fresh directory) or the session's chroma server
    (fresh collection name)."""
    if request.param == "persistent":
        path = request.getfixturevalue("chroma_path")
        return lambda embed=None, **kw: VectorConnector(vector_config(path=path, **kw), embed=embed)
    server = request.getfixturevalue("chroma_server")
    return lambda embed=None, **kw: VectorConnector(vector_config(server=server, **kw), embed=embed)


class FakeEmbedder:
    """An async embedder: a text's vector counts the vowels a, e, i, o (never the network)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        await asyncio.sleep(0)
        return [[float(t.count(v)) + 0.01 for v in "aeio"] for t in texts]


def test_add_search_update_delete(make):
    async def body(c: VectorConnector) -> None:
        assert await c.run("add", ITEMS) == {"added": 4}

        hits = await c.run("search", {"embedding": [1.0, 0.05, 0.0], "k": 3})
        assert [h["id"] for h in hits] == ["apple", "banana", "carrot"]
        assert all(set(h) == {"id", "distance", "document", "metadata"} for h in hits)
        assert hits[0]["document"] == "an apple" and hits[0]["metadata"] == {"kind": "fruit", "n": 1}
        distances = [h["distance"] for h in hits]
        assert distances == sorted(distances) and all(isinstance(d, float) for d in distances)
        assert len(await c.run("search", {"embedding": [1.0, 0.0, 0.0]})) == 4  # default k=5, 4 records
        assert len(await c.run("search", {"embedding": [1.0, 0.0, 0.0], "k": 1})) == 1

        veg = await c.run("search", {"embedding": [1.0, 0.0, 0.0], "k": 3, "where": {"kind": "veg"}})
        assert [h["id"] for h in veg] == ["carrot"]
        late = await c.run("search", {"embedding": [1.0, 0.0, 0.0], "where": {"n": {"$gte": 3}}})
        assert [h["id"] for h in late] == ["carrot", "durian"] or [h["id"] for h in late] == ["durian", "carrot"]
        bare = await c.run("search", {"embedding": [0.0, 0.0, 1.0], "k": 1, "include_documents": False})
        assert bare == [{"id": "durian", "distance": bare[0]["distance"], "document": None,
                         "metadata": {"kind": "fruit", "n": 4}}]

        # adding an existing id changes nothing and says so
        again = await c.run("add", {"ids": ["apple", "elder"], "embeddings": [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]})
        assert again == {"added": 1, "existing": ["apple"]}
        assert (await c.run("search", {"embedding": [1.0, 0.0, 0.0], "k": 1}))[0]["id"] == "apple"

        upd = await c.run("update", {"ids": ["carrot"], "metadatas": [{"kind": "fruit", "n": 3}]})
        assert upd == {"updated": 1}
        assert await c.run("search", {"embedding": [1.0, 0.0, 0.0], "where": {"kind": "veg"}}) == []
        upd = await c.run("update", {"ids": ["durian", "ghost"], "embeddings": [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
                                     "documents": ["a ripe durian", "boo"]})
        assert upd == {"updated": 1, "missing": ["ghost"]}
        top = (await c.run("search", {"embedding": [1.0, 0.0, 0.0], "k": 2}))
        assert {h["id"] for h in top} == {"apple", "durian"}
        assert next(h for h in top if h["id"] == "durian")["document"] == "a ripe durian"

        assert await c.run("delete", {"ids": ["apple", "ghost"]}) == {"deleted": 1}
        assert await c.run("delete", {"where": {"n": {"$gte": 3}}}) == {"deleted": 2}
        assert await c.run("delete", {"where": {"kind": "nothing"}}) == {"deleted": 0}
        left = await c.run("search", {"embedding": [1.0, 0.0, 0.0], "k": 10})
        assert sorted(h["id"] for h in left) == ["banana", "elder"]
        assert await c.run("delete", {"ids": ["banana", "elder"], "where": {"kind": "fruit"}}) == {"deleted": 1}

    go(make(), body)


def test_embedder_is_used_for_documents_and_text(make):
    async def body(c: VectorConnector) -> None:
        embed = c.embed
        assert isinstance(embed, FakeEmbedder)
        docs = ["aaaa", "eeee", "iiii", "oooo"]
        assert await c.run("add", {"ids": ["a", "e", "i", "o"], "documents": docs}) == {"added": 4}
        assert embed.calls == [docs]
        hits = await c.run("search", {"text": "aaa", "k": 2})
        assert hits[0]["id"] == "a" and hits[0]["document"] == "aaaa"
        assert embed.calls[-1] == ["aaa"]
        # new documents get new embeddings from the embedder
        assert await c.run("update", {"ids": ["o"], "documents": ["aaaaa"]}) == {"updated": 1}
        assert embed.calls[-1] == ["aaaaa"]
        assert [h["id"] for h in await c.run("search", {"text": "aaaaa", "k": 1})] == ["o"]
        # explicit embeddings win over the embedder
        calls = len(embed.calls)
        await c.run("add", {"ids": ["x"], "documents": ["xxxx"], "embeddings": [[9.0, 9.0, 9.0, 9.0]]})
        assert len(embed.calls) == calls

    go(make(embed=FakeEmbedder()), body)


def test_a_bad_embedder_answer_is_a_database_error(chroma_path):
    async def short(texts: list[str]) -> list[list[float]]:
        return [[1.0]]

    async def body(c: VectorConnector) -> None:
        error = await fails(c.run("add", {"ids": ["a", "b"], "documents": ["x", "y"]}), "DATABASE_ERROR")
        assert "embedding integration returned 1 embeddings for 2 texts" in error.message

    go(VectorConnector(vector_config(path=chroma_path), embed=short), body)


def test_without_an_embedder_embeddings_are_required(chroma_path):
    async def body(c: VectorConnector) -> None:
        for operation, params in (
            ("add", {"ids": ["a"], "documents": ["text"]}),
            ("add", {"ids": ["a"], "metadatas": [{"k": 1}]}),
            ("search", {"text": "text"}),
            ("update", {"ids": ["a"], "documents": ["new text"]}),
        ):
            error = await fails(c.run(operation, params), "STEP_ERROR")
            assert "embeddings" in error.message and "embedding:" in error.message, error.message
        await c.run("add", {"ids": ["a"], "embeddings": [[1.0, 2.0]], "documents": ["text"]})
        assert await c.run("update", {"ids": ["a"], "metadatas": [{"k": 2}]}) == {"updated": 1}
        hit = (await c.run("search", {"embedding": [1.0, 2.0]}))[0]
        assert hit["document"] == "text" and hit["metadata"] == {"k": 2}

    go(VectorConnector(vector_config(path=chroma_path)), body)


BAD = [
    ("add", {"embeddings": [[1.0]]}, "missing parameter 'ids'"),
    ("add", {"ids": "a", "embeddings": [[1.0]]}, "'ids' must be list"),
    ("add", {"ids": [], "embeddings": []}, "must not be empty"),
    ("add", {"ids": [1], "embeddings": [[1.0]]}, "non-empty strings"),
    ("add", {"ids": ["a", "a"], "embeddings": [[1.0], [1.0]]}, "duplicates: a"),
    ("add", {"ids": ["a", "b"], "embeddings": [[1.0]]}, "1 entries for 2 ids"),
    ("add", {"ids": ["a", "b"], "embeddings": [[1.0], [1.0, 2.0]]}, "same length"),
    ("add", {"ids": ["a"], "embeddings": [["1"]]}, "finite numbers"),
    ("add", {"ids": ["a"], "embeddings": [[True]]}, "finite numbers"),
    ("add", {"ids": ["a"], "embeddings": [[math.nan]]}, "finite numbers"),
    ("add", {"ids": ["a"], "embeddings": [[]]}, "non-empty list"),
    ("add", {"ids": ["a"], "embeddings": [1.0]}, "non-empty list"),
    ("add", {"ids": ["a"], "embeddings": [[1.0]], "documents": ["x", "y"]}, "'documents' has 2 entries"),
    ("add", {"ids": ["a"], "embeddings": [[1.0]], "documents": [3]}, "list of strings"),
    ("add", {"ids": ["a"], "embeddings": [[1.0]], "metadatas": ["k=v"]}, "list of mappings"),
    ("add", {"ids": ["a"], "embeddings": [[1.0]], "metadata": [{}]}, "unknown parameter(s) metadata"),
    ("add", {"ids": ["a"], "embeddings": [[1.0]], "collection": ""}, "must not be empty"),
    ("search", {}, "exactly one of 'embedding' or 'text'"),
    ("search", {"embedding": [1.0], "text": "x"}, "exactly one of 'embedding' or 'text'"),
    ("search", {"embedding": [1.0], "k": 0}, "'k' must be between"),
    ("search", {"embedding": [1.0], "k": "5"}, "'k' must be int"),
    ("search", {"embedding": [1.0], "where": "kind = 'veg'"}, "'where' must be Mapping"),
    ("search", {"embedding": [1.0], "include_documents": "no"}, "must be bool"),
    ("search", {"embedding": "[1.0]"}, "'embedding' must be a non-empty list"),
    ("update", {"ids": ["a"]}, "at least one of"),
    ("delete", {}, "pass 'ids' or a non-empty 'where'"),
    ("delete", {"where": {}}, "pass 'ids' or a non-empty 'where'"),
    ("upsert", {"ids": ["a"]}, "unknown operation"),
]


@pytest.mark.parametrize(("operation", "params", "expected"), BAD,
                         ids=[f"{op}-{i}" for i, (op, _, _) in enumerate(BAD)])
def test_bad_params_are_step_errors(chroma_path, operation, params, expected):
    async def body(c: VectorConnector) -> None:
        error = await fails(c.run(operation, params), "STEP_ERROR")
        assert error.message.startswith(f"{ID}.{operation}: ") and expected in error.message, error.message

    go(VectorConnector(vector_config(path=chroma_path)), body)


def test_read_only_refuses_writes(make):
    async def body(c: VectorConnector) -> None:
        await c.run("add", ITEMS)
        for operation, params in (("add", {"ids": ["z"], "embeddings": [[1.0, 1.0, 1.0]]}),
                                  ("update", {"ids": ["apple"], "metadatas": [{"kind": "x"}]}),
                                  ("delete", {"ids": ["apple"]})):
            error = await fails(c.run(operation, params, read_only=True), "DATABASE_ERROR")
            assert "--write" in error.message
        assert VectorConnector.writes == {"add", "update", "delete"}
        hits = await c.run("search", {"embedding": [1.0, 0.0, 0.0], "k": 10}, read_only=True)
        assert len(hits) == 4 and hits[0]["metadata"] == {"kind": "fruit", "n": 1}

    go(make(), body)


def test_chroma_errors_are_database_errors(make):
    async def body(c: VectorConnector) -> None:
        missing = await fails(c.run("search", {"embedding": [1.0], "collection": "nowhere-to-be-found"}),
                              "DATABASE_ERROR")
        assert "collection 'nowhere-to-be-found' does not exist" in missing.message
        await fails(c.run("delete", {"ids": ["a"], "collection": "nowhere-to-be-found"}), "DATABASE_ERROR")
        await c.run("add", ITEMS)
        dims = await fails(c.run("add", {"ids": ["z"], "embeddings": [[1.0, 2.0]]}), "DATABASE_ERROR")
        assert dims.message.startswith(f"{ID}.add: ") and "dimension" in dims.message
        await fails(c.run("search", {"embedding": [1.0, 0.0, 0.0], "where": {"$nope": 1}}), "DATABASE_ERROR")
        bad_name = await fails(c.run("add", {"ids": ["z"], "embeddings": [[1.0]], "collection": "x"}),
                               "DATABASE_ERROR")
        assert bad_name.details == {"integration": ID, "operation": "add"}

    go(make(), body)


def test_the_collection_param_overrides_the_configured_one(make):
    async def body(c: VectorConnector) -> None:
        await c.run("add", ITEMS)
        await c.run("add", {"ids": ["other"], "embeddings": [[1.0, 0.0, 0.0]], "collection": "second-collection"})
        second = await c.run("search", {"embedding": [1.0, 0.0, 0.0], "collection": "second-collection"})
        assert [h["id"] for h in second] == ["other"]
        assert "other" not in [h["id"] for h in await c.run("search", {"embedding": [1.0, 0.0, 0.0], "k": 10})]
        await c.run("delete", {"ids": ["other"], "collection": "second-collection"})

    go(make(), body)


def test_ping_and_close(make):
    conn = make()
    asyncio.run(conn.close())  # before any use

    async def body(c: VectorConnector) -> str:
        assert (await c.ping()).endswith("heartbeat ok")
        await c.close()
        await c.close()
        return await c.ping()  # a closed connector opens a new client

    detail = go(conn, body)
    assert detail.startswith("chroma ") and detail.endswith("heartbeat ok")
    assert ID in repr(conn)


def test_http_sessions_get_timeouts(chroma_server):
    """chromadb's HttpClient would wait forever on a hung server; the connector bounds its sessions."""
    conn = VectorConnector(vector_config(server=chroma_server))

    async def body(c: VectorConnector) -> None:
        await c.ping()
        assert c._sessions, "chromadb's HttpClient internals changed: no httpx session found to bound"
        assert all(s.timeout.read == 60.0 and s.timeout.connect == 5.0 for s in c._sessions)

    go(conn, body)
    assert conn._sessions == []


def test_http_server_stopped_then_restarted(chroma_http_server):
    conn = VectorConnector(vector_config(server=(chroma_http_server.host, chroma_http_server.port)))

    async def body(c: VectorConnector) -> None:
        assert (await c.ping()).endswith("heartbeat ok")
        await c.run("add", ITEMS)
        chroma_http_server.stop()  # blocks this loop for a moment: fine here
        try:
            for call in (c.ping, lambda: c.run("search", {"embedding": [1.0, 0.0, 0.0]}),
                         lambda: c.run("add", {"ids": ["z"], "embeddings": [[1.0, 1.0, 1.0]]})):
                error = await fails(call(), "NETWORK_ERROR")
                assert error.message.startswith(ID)
        finally:
            chroma_http_server.start()
        assert (await c.ping()).endswith("heartbeat ok")
        hits = await c.run("search", {"embedding": [1.0, 0.0, 0.0], "k": 10})
        assert sorted(h["id"] for h in hits) == sorted(ITEMS["ids"])

    try:
        go(conn, body)
    finally:
        chroma_http_server.start()  # no-op when it runs


def test_http_server_that_never_answered():
    conn = VectorConnector(vector_config(server=("127.0.0.1", closed_port())))

    async def body(c: VectorConnector) -> None:
        await fails(c.ping(), "NETWORK_ERROR")
        await fails(c.run("search", {"embedding": [1.0]}), "NETWORK_ERROR")

    go(conn, body)
