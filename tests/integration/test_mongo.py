"""MongoConnector against a real MongoDB-wire server (secantusdb, see servers_mongo_chroma.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import re
import uuid
from typing import Any

import pytest
from connectors import closed_port, fails, go

from progressive_cli.config.integrations import MongoIntegration
from progressive_cli.errors import StepError
from progressive_cli.integrations.mongo import MongoConnector

ID = "mongo-test"
HEX24 = re.compile(r"^[0-9a-f]{24}$")


def make(uri: str, *, database: str | None = None, timeout: float = 2.0) -> MongoConnector:
    config = MongoIntegration.model_validate({
        "id": ID, "type": "mongodb", "uri": uri, "connect_timeout": timeout,
        "database": database or f"t_{uuid.uuid4().hex[:16]}",
    })
    return MongoConnector(config)


PEOPLE = [
    {"name": "ada", "age": 36, "team": "a"},
    {"name": "bob", "age": 25, "team": "b"},
    {"name": "cy", "age": 41, "team": "a"},
    {"name": "di", "age": 30, "team": "b"},
]


def test_every_operation_and_its_result_shape(mongo_uri):
    async def body(c: MongoConnector) -> None:
        one = await c.run("insert_one", {"collection": "people", "document": dict(PEOPLE[0])})
        assert set(one) == {"inserted_id"} and HEX24.match(one["inserted_id"])
        many = await c.run("insert_many", {"collection": "people", "documents": PEOPLE[1:]})
        assert set(many) == {"inserted_ids"} and len(many["inserted_ids"]) == 3
        assert all(HEX24.match(i) for i in many["inserted_ids"])

        found = await c.run("find", {"collection": "people", "filter": {"age": {"$gte": 30}},
                                     "projection": {"_id": 0, "name": 1}, "sort": [["age", -1]]})
        assert found == [{"name": "cy"}, {"name": "ada"}, {"name": "di"}]
        page = await c.run("find", {"collection": "people", "projection": ["name"], "sort": {"name": 1},
                                    "skip": 1, "limit": 2})
        assert [d["name"] for d in page] == ["bob", "cy"] and all(HEX24.match(d["_id"]) for d in page)
        everyone = await c.run("find", {"collection": "people"})
        assert len(everyone) == 4 and {d["_id"] for d in everyone} == {one["inserted_id"], *many["inserted_ids"]}

        doc = await c.run("find_one", {"collection": "people", "filter": {"name": "bob"}, "projection": {"_id": 0}})
        assert doc == {"name": "bob", "age": 25, "team": "b"}
        assert await c.run("find_one", {"collection": "people", "filter": {"name": "nobody"}}) is None
        assert (await c.run("find_one", {"collection": "people", "filter": {"_id": "not-an-object-id"}})) is None

        upd = await c.run("update_one", {"collection": "people", "filter": {"name": "bob"},
                                         "update": {"$inc": {"age": 1}}})
        assert upd == {"matched": 1, "modified": 1, "upserted_id": None}
        upd = await c.run("update_many", {"collection": "people", "filter": {"team": "a"},
                                          "update": {"$set": {"lead": True}}})
        assert upd == {"matched": 2, "modified": 2, "upserted_id": None}
        ups = await c.run("update_one", {"collection": "people", "filter": {"name": "eve"},
                                         "update": {"$set": {"age": 50, "team": "c"}}, "upsert": True})
        assert ups["matched"] == 0 and ups["modified"] == 0 and HEX24.match(ups["upserted_id"])
        piped = await c.run("update_many", {"collection": "people", "filter": {"team": "b"},
                                            "update": [{"$set": {"age2": {"$multiply": ["$age", 2]}}}]})
        assert piped["matched"] == 2
        assert (await c.run("find_one", {"collection": "people", "filter": {"name": "bob"}}))["age2"] == 52

        groups = await c.run("aggregate", {"collection": "people", "pipeline": [
            {"$group": {"_id": "$team", "n": {"$sum": 1}, "oldest": {"$max": "$age"}}},
            {"$sort": {"_id": 1}},
        ]})
        assert groups == [{"_id": "a", "n": 2, "oldest": 41}, {"_id": "b", "n": 2, "oldest": 30},
                          {"_id": "c", "n": 1, "oldest": 50}]

        assert await c.run("delete_one", {"collection": "people", "filter": {"team": "a"}}) == {"deleted": 1}
        assert await c.run("delete_many", {"collection": "people", "filter": {"team": "b"}}) == {"deleted": 2}
        assert await c.run("delete_one", {"collection": "people", "filter": {"name": "nobody"}}) == {"deleted": 0}
        assert [d["name"] for d in await c.run("find", {"collection": "people", "sort": [["name", 1]]})] in (
            ["cy", "eve"], ["ada", "eve"])

    go(make(mongo_uri), body)


def test_values_come_back_as_json(mongo_uri):
    async def body(c: MongoConnector) -> None:
        when = dt.datetime(2024, 5, 6, 7, 8, 9)
        await c.run("insert_one", {"collection": "j", "document": {"when": when, "n": 1.5, "tags": ["x"],
                                                                    "nested": {"k": None}}})
        doc = await c.run("find_one", {"collection": "j", "projection": {"_id": 0}})
        assert doc == {"when": "2024-05-06T07:08:09", "n": 1.5, "tags": ["x"], "nested": {"k": None}}

    go(make(mongo_uri), body)


def test_find_limit_default_and_bounds(mongo_uri):
    async def body(c: MongoConnector) -> None:
        await c.run("insert_many", {"collection": "many", "documents": [{"i": i} for i in range(120)]})
        assert len(await c.run("find", {"collection": "many"})) == 100
        assert len(await c.run("find", {"collection": "many", "limit": 10000})) == 120
        for limit in (0, 10001, -1):
            await fails(c.run("find", {"collection": "many", "limit": limit}), "STEP_ERROR")

    go(make(mongo_uri), body)


BAD_PARAMS = [
    ("find", {}, "missing parameter 'collection'"),
    ("find", {"collection": 3}, "'collection' must be str"),
    ("find", {"collection": ""}, "invalid collection name"),
    ("find", {"collection": "c", "filtr": {}}, "unknown parameter(s) filtr"),
    ("find", {"collection": "c", "filter": "{'a': 1}"}, "'filter' must be Mapping"),
    ("find", {"collection": "c", "sort": [["a", 2]]}, "'sort' entries"),
    ("find", {"collection": "c", "sort": "a"}, "'sort' must be"),
    ("find", {"collection": "c", "skip": -1}, "'skip'"),
    ("find", {"collection": "c", "limit": "10"}, "'limit' must be int"),
    ("find", {"collection": "c", "limit": True}, "'limit' must be int"),
    ("find", {"collection": "c", "projection": [1]}, "'projection'"),
    ("find_one", {"collection": "c", "filter": [1]}, "'filter' must be Mapping"),
    ("insert_one", {"collection": "c"}, "missing parameter 'document'"),
    ("insert_one", {"collection": "c", "document": ["a"]}, "'document' must be Mapping"),
    ("insert_one", {"collection": "c", "document": {"big": 2**70}}, "not storable as BSON"),
    ("insert_one", {"collection": "c", "document": {"s": {1, 2}}}, "not storable as BSON"),
    ("insert_many", {"collection": "c", "documents": []}, "must not be empty"),
    ("insert_many", {"collection": "c", "documents": [{"a": 1}, 2]}, "list of mappings"),
    ("insert_many", {"collection": "c", "documents": {"a": 1}}, "'documents' must be list"),
    ("update_one", {"collection": "c", "update": {"$set": {"a": 1}}}, "missing parameter 'filter'"),
    ("update_one", {"collection": "c", "filter": {}}, "missing parameter 'update'"),
    ("update_one", {"collection": "c", "filter": {}, "update": {"a": 1}}, "update operators"),
    ("update_many", {"collection": "c", "filter": {}, "update": {}}, "update operators"),
    ("update_many", {"collection": "c", "filter": {}, "update": []}, "non-empty list"),
    ("update_many", {"collection": "c", "filter": {}, "update": "$set"}, "must be a mapping or a list"),
    ("update_one", {"collection": "c", "filter": {}, "update": {"$set": {"a": 1}}, "upsert": "yes"},
     "'upsert' must be bool"),
    ("delete_one", {"collection": "c"}, "missing parameter 'filter'"),
    ("delete_many", {"collection": "c", "filter": {}, "all": "true"}, "'all' must be bool"),
    ("aggregate", {"collection": "c"}, "missing parameter 'pipeline'"),
    ("aggregate", {"collection": "c", "pipeline": {"$match": {}}}, "'pipeline' must be list"),
    ("aggregate", {"collection": "c", "pipeline": ["$match"]}, "list of stages"),
    ("drop", {"collection": "c"}, "unknown operation"),
]


@pytest.mark.parametrize(("operation", "params", "expected"), BAD_PARAMS,
                         ids=[f"{op}-{i}" for i, (op, _, _) in enumerate(BAD_PARAMS)])
def test_bad_params_are_step_errors(mongo_uri, operation, params, expected):
    async def body(c: MongoConnector) -> None:
        error = await fails(c.run(operation, params), "STEP_ERROR")
        assert error.message.startswith(f"{ID}.{operation}: ")
        assert expected in error.message
        assert error.details["integration"] == ID

    go(make(mongo_uri), body)


def test_deep_nesting_refused_before_the_driver(mongo_uri):
    deep: dict[str, Any] = {"a": 1}
    for _ in range(150):
        deep = {"x": deep}

    async def body(c: MongoConnector) -> None:
        error = await fails(c.run("find", {"collection": "c", "filter": deep}), "STEP_ERROR")
        assert "nested deeper" in error.message

    go(make(mongo_uri), body)


def test_delete_many_with_an_empty_filter_needs_all_true(mongo_uri):
    async def body(c: MongoConnector) -> None:
        await c.run("insert_many", {"collection": "d", "documents": [{"i": i} for i in range(3)]})
        for params in ({"collection": "d", "filter": {}}, {"collection": "d", "filter": {}, "all": False}):
            error = await fails(c.run("delete_many", params), "STEP_ERROR")
            assert "all: true" in error.message
        assert len(await c.run("find", {"collection": "d"})) == 3
        assert await c.run("delete_many", {"collection": "d", "filter": {}, "all": True}) == {"deleted": 3}
        assert await c.run("find", {"collection": "d"}) == []

    go(make(mongo_uri), body)


WRITES = [
    ("insert_one", {"collection": "ro", "document": {"a": 2}}),
    ("insert_many", {"collection": "ro", "documents": [{"a": 2}]}),
    ("update_one", {"collection": "ro", "filter": {}, "update": {"$set": {"a": 3}}}),
    ("update_many", {"collection": "ro", "filter": {}, "update": {"$set": {"a": 3}}}),
    ("delete_one", {"collection": "ro", "filter": {}}),
    ("delete_many", {"collection": "ro", "filter": {}, "all": True}),
    ("aggregate", {"collection": "ro", "pipeline": [{"$match": {}}, {"$out": "copy"}]}),
    ("aggregate", {"collection": "ro", "pipeline": [{"$match": {}}, {"$merge": {"into": "copy"}}]}),
    ("aggregate", {"collection": "ro", "pipeline": [{"$facet": {"x": [{"$match": {}}]}}, {"$out": "copy"}]}),
]


def test_read_only_refuses_every_write(mongo_uri):
    async def body(c: MongoConnector) -> None:
        await c.run("insert_one", {"collection": "ro", "document": {"a": 1}})
        assert MongoConnector.writes == {"insert_one", "insert_many", "update_one", "update_many", "delete_one",
                                         "delete_many"}
        for operation, params in WRITES:
            error = await fails(c.run(operation, params, read_only=True), "DATABASE_ERROR")
            assert "--write" in error.message and error.message.startswith(f"{ID}.{operation}: refused")
        assert await c.run("find", {"collection": "ro", "projection": {"_id": 0}}, read_only=True) == [{"a": 1}]
        assert await c.run("aggregate", {"collection": "ro", "pipeline": [{"$count": "n"}]}, read_only=True) == [
            {"n": 1}]
        assert await c.run("find", {"collection": "copy"}) == []
        # without read_only, $out writes
        await c.run("aggregate", {"collection": "ro", "pipeline": [{"$project": {"_id": 0, "a": 1}},
                                                                  {"$out": "copy"}]})
        assert await c.run("find", {"collection": "copy", "projection": {"_id": 0}}) == [{"a": 1}]

    go(make(mongo_uri), body)


CODE = [
    ("find", {"filter": {"$where": "this.a == 1"}}),
    ("find", {"filter": {"$or": [{"a": 1}, {"$where": "sleep(1000) || true"}]}}),
    ("find", {"filter": {"$expr": {"$function": {"body": "function() { return true }", "args": [], "lang": "js"}}}}),
    ("find", {"filter": {"a": {"$elemMatch": {"$and": [{"$where": "1"}]}}}}),
    ("find", {"filter": {}, "projection": {"x": {"$function": {"body": "f", "args": [], "lang": "js"}}}}),
    ("find_one", {"filter": {"$where": "true"}}),
    ("update_one", {"filter": {"$where": "true"}, "update": {"$set": {"a": 2}}}),
    ("update_many", {"filter": {}, "update": [{"$set": {"a": {"$function": {"body": "f", "args": [],
                                                                              "lang": "js"}}}}]}),
    ("delete_one", {"filter": {"$where": "true"}}),
    ("delete_many", {"filter": {"x": {"$not": {"$where": "true"}}}}),
    ("aggregate", {"pipeline": [{"$group": {"_id": None, "x": {"$accumulator": {
        "init": "function() {}", "accumulate": "f", "accumulateArgs": [], "merge": "f", "lang": "js"}}}}]}),
    ("aggregate", {"pipeline": [{"$lookup": {"from": "c", "as": "y", "pipeline": [
        {"$match": {"$expr": {"$function": {"body": "f", "args": [], "lang": "js"}}}}]}}]}),
    ("aggregate", {"pipeline": [{"$match": {"$where": "true"}}]}),
]


@pytest.mark.parametrize(("operation", "params"), CODE, ids=[f"{op}-{i}" for i, (op, _) in enumerate(CODE)])
def test_javascript_operators_are_refused_at_any_depth(mongo_uri, operation, params):
    async def body(c: MongoConnector) -> None:
        await c.run("insert_one", {"collection": "js", "document": {"a": 1}})
        error = await fails(c.run(operation, {"collection": "js", **params}), "STEP_ERROR")
        assert "runs JavaScript" in error.message
        assert await c.run("find", {"collection": "js", "projection": {"_id": 0}}) == [{"a": 1}]

    go(make(mongo_uri), body)


HOSTILE = [
    "{'$gt': ''}",
    '{"$ne": null}',
    "'; db.dropDatabase(); '",
    "\"; db.people.deleteMany({}); //",
    "$where",
    "this.a == 1 || true",
    "function() { return true; }",
    "a\x00b",
    "robert'); DROP TABLE students;--",
]


def test_hostile_values_are_only_strings(mongo_uri):
    async def body(c: MongoConnector) -> None:
        await c.run("insert_many", {"collection": "people", "documents": [dict(p) for p in PEOPLE]})
        ids = (await c.run("insert_many", {"collection": "people", "documents": [
            {"name": value, "note": value, "tags": [value], "nested": {"v": value}} for value in HOSTILE
        ]}))["inserted_ids"]
        for value, inserted in zip(HOSTILE, ids, strict=True):
            for filter_ in ({"name": value}, {"name": {"$eq": value}}, {"nested.v": value}, {"tags": value},
                            {"name": {"$in": [value]}}):
                found = await c.run("find", {"collection": "people", "filter": filter_})
                assert [d["_id"] for d in found] == [inserted], (value, filter_)
                assert found[0]["name"] == value and found[0]["nested"] == {"v": value}
            assert (await c.run("find_one", {"collection": "people", "filter": {"note": value}}))["_id"] == inserted
            upd = await c.run("update_one", {"collection": "people", "filter": {"name": value},
                                             "update": {"$set": {"seen": value}}})
            assert upd["matched"] == 1
        # a hostile _id string is a string, not an ObjectId or an operator
        await c.run("insert_one", {"collection": "people", "document": {"_id": "{'$gt': ''}", "name": "odd"}})
        assert (await c.run("find_one", {"collection": "people", "filter": {"_id": "{'$gt': ''}"}}))["name"] == "odd"
        assert await c.run("delete_one", {"collection": "people", "filter": {"name": "{'$gt': ''}"}}) == {"deleted": 1}
        # nothing else changed: the ordinary documents are all there, untouched
        rest = await c.run("find", {"collection": "people", "filter": {"name": {"$in": [p["name"] for p in PEOPLE]}},
                                    "projection": {"_id": 0}, "sort": [["name", 1]]})
        assert rest == sorted(PEOPLE, key=lambda p: p["name"])
        assert len(await c.run("find", {"collection": "people", "limit": 1000})) == len(PEOPLE) + len(HOSTILE)
        # and the strings came back byte for byte
        seen = await c.run("find", {"collection": "people", "filter": {"seen": {"$exists": True}},
                                    "projection": {"_id": 0, "seen": 1}, "limit": 1000})
        assert sorted(d["seen"] for d in seen) == sorted(v for v in HOSTILE if v != "{'$gt': ''}")

    go(make(mongo_uri), body)


def test_a_hostile_collection_name_is_just_a_name(mongo_uri):
    async def body(c: MongoConnector) -> None:
        await c.run("insert_one", {"collection": "keep", "document": {"a": 1}})
        weird = "x'); db.dropDatabase(); ('"
        await c.run("insert_one", {"collection": weird, "document": {"b": 2}})
        assert await c.run("find", {"collection": weird, "projection": {"_id": 0}}) == [{"b": 2}]
        assert await c.run("find", {"collection": "keep", "projection": {"_id": 0}}) == [{"a": 1}]

    go(make(mongo_uri), body)


def test_server_errors_are_database_errors(mongo_uri):
    async def body(c: MongoConnector) -> None:
        error = await fails(c.run("find", {"collection": "c", "filter": {"a": {"$nosuchop": 1}}}), "DATABASE_ERROR")
        assert error.message.startswith(f"{ID}.find: ") and "$nosuchop" in error.message
        await c.run("insert_one", {"collection": "c", "document": {"_id": "k"}})
        error = await fails(c.run("insert_one", {"collection": "c", "document": {"_id": "k"}}), "DATABASE_ERROR")
        assert error.details.get("code") == 11000

    go(make(mongo_uri), body)


def test_ping(mongo_uri):
    detail = go(make(mongo_uri), lambda c: c.ping())
    assert detail.startswith("MongoDB ") and re.search(r"\d+\.\d+", detail)


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # the first loop's client is dropped, as designed
def test_close_is_idempotent_and_a_connector_survives_event_loops(mongo_uri):
    conn = make(mongo_uri)
    asyncio.run(conn.close())  # never used
    assert asyncio.run(conn.run("insert_one", {"collection": "l", "document": {"a": 1}}))["inserted_id"]

    async def again() -> int:
        # another asyncio.run is another event loop: the connector makes a new client for it
        found = await conn.run("find", {"collection": "l"})
        await conn.close()
        await conn.close()
        return len(found)

    assert asyncio.run(again()) == 1
    asyncio.run(conn.close())
    gc.collect()  # the dropped client's sockets warn here, under this test's filter


def test_server_stopped_then_restarted(mongo_server):
    conn = make(mongo_server.uri, timeout=1.0)

    async def body(c: MongoConnector) -> None:
        assert (await c.ping()).startswith("MongoDB")
        await c.run("insert_one", {"collection": "survivor", "document": {"a": 1}})
        mongo_server.stop()
        try:
            for call in (c.ping, lambda: c.run("find", {"collection": "survivor"}),
                         lambda: c.run("insert_one", {"collection": "survivor", "document": {"a": 2}})):
                error = await fails(call(), "NETWORK_ERROR")
                assert error.message.startswith(f"{ID}")
                assert mongo_server.uri not in error.message
        finally:
            mongo_server.start()  # blocks this loop for a moment: fine here
        assert (await c.ping()).startswith("MongoDB")
        assert await c.run("find", {"collection": "survivor", "projection": {"_id": 0}}) == [{"a": 1}]

    try:
        go(conn, body)
    finally:
        mongo_server.start()  # no-op when it runs


def test_canary_password_never_appears(monkeypatch):
    port = closed_port()
    monkeypatch.setenv("PROGRESSIVE_TEST_MONGO_PW", "CANARY-env-s3cret")
    uris = [f"mongodb://u:CANARY-s3cret@127.0.0.1:{port}",
            f"mongodb://u:CANARY-s3cret@127.0.0.1:{port}/admin?authSource=admin",
            f"mongodb://u:${{env:PROGRESSIVE_TEST_MONGO_PW}}@127.0.0.1:{port}"]

    async def body(c: MongoConnector) -> list[StepError]:
        errors = [await fails(c.ping(), "NETWORK_ERROR"),
                  await fails(c.run("find", {"collection": "c"}), "NETWORK_ERROR")]
        errors.append(await fails(c.run("find", {"collection": "c", "filter": {"$where": "1"}}), "STEP_ERROR"))
        return errors

    for uri in uris:
        conn = make(uri, timeout=0.3)
        for error in go(conn, body):
            text = " ".join([error.message, str(error), repr(error), repr(error.as_dict())])
            assert "CANARY" not in text and "s3cret" not in text
            assert ID in error.message
        assert "CANARY" not in repr(conn) and ID in repr(conn)


def test_bad_uri_is_reported_without_the_uri():
    conn = make("mongodb://u:CANARY-s3cret@127.0.0.1:notaport", timeout=0.3)

    async def body(c: MongoConnector) -> StepError:
        return await fails(c.run("find", {"collection": "c"}), "DATABASE_ERROR")

    error = go(conn, body)
    assert "CANARY" not in error.message and "s3cret" not in error.message and ID in error.message


def test_missing_secret_names_the_variable(monkeypatch):
    monkeypatch.delenv("PROGRESSIVE_TEST_UNSET_PW", raising=False)
    conn = make("mongodb://u:${env:PROGRESSIVE_TEST_UNSET_PW}@127.0.0.1:1")

    async def body(c: MongoConnector) -> StepError:
        return await fails(c.ping(), "DATABASE_ERROR")

    error = go(conn, body)
    assert "PROGRESSIVE_TEST_UNSET_PW" in error.message and ID in error.message
