"""`events tail|publish|status` and `dlq list|show|replay|purge` as an operator types them."""

from __future__ import annotations

import asyncio
import json
import random

from progressive_cli.errors import StepError
from progressive_cli.events.bus import Bus, Subscription
from progressive_cli.store.base import Event
from progressive_cli.store.sqlite import SQLiteStore


def test_publish_tail_and_status(cli, make_project) -> None:
    p = str(make_project({}))
    r = cli("-p", p, "events", "publish", "order.created", "--data", '{"id": 7}', "--subject", "order:7")
    assert r.exit_code == 0 and "published order.created (seq 1" in r.stderr and r.stdout == ""
    r = cli("-p", p, "events", "publish", "order.paid", "-d", '{"id": 7}', "-o", "json")
    assert json.loads(r.stdout)["type"] == "order.paid" and json.loads(r.stdout)["source"] == "progressive/cli"
    cli("-p", p, "events", "publish", "user.login", "-d", '{"user": "ada"}')
    r = cli("-p", p, "events", "tail", "--type", "order.*", "-o", "json")
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["type"] for e in lines] == ["order.created", "order.paid"] and lines[0]["subject"] == "order:7"
    r = cli("-p", p, "events", "tail", "-n", "1")
    assert "user.login" in r.stdout and "order.paid" not in r.stdout and r.stdout.startswith("SEQ")
    assert cli("-p", p, "events", "publish", "bad type!", "-d", "{}").exit_code == 2
    assert cli("-p", p, "events", "publish", "x", "-d", "[1]").exit_code == 2
    assert cli("-p", p, "events", "status", "-o", "json").stdout.strip() == "[]"


def test_dlq_list_show_replay_purge(cli, make_project) -> None:
    root = make_project({})
    p = str(root)
    cli("-p", p, "validate")  # creates nothing; the store appears with the first command that opens it
    path = root / ".progressive" / "state.db"
    store = SQLiteStore(path)

    async def fill() -> None:
        bus = Bus(store, rng=random.Random(1))

        async def broken(event: Event) -> None:
            raise StepError("API_ERROR", f"422 for {event.data['n']}", {"status": 422})

        bus.subscribe(Subscription("mailer", ("mail.*",), broken, from_start=True))
        await store.publish([Event("mail.send", {"n": n}) for n in range(3)])
        await bus.pump("mailer")
        await store.close()

    asyncio.run(fill())
    rows = json.loads(cli("-p", p, "dlq", "list", "-o", "json").stdout)
    assert len(rows) == 3 and {r["error"] for r in rows} == {f"API_ERROR: 422 for {n}" for n in range(3)}
    assert all(r["attempts"] == 1 and r["subscription"] == "mailer" for r in rows)
    one = rows[0]["id"]
    r = cli("-p", p, "dlq", "show", one[:10], "-o", "json")
    assert json.loads(r.stdout)["data"] == rows[0]["data"]
    assert cli("-p", p, "dlq", "show", "zzzz").exit_code == 4
    r = cli("-p", p, "dlq", "replay", one[:10])
    assert r.exit_code == 0 and "replayed 1 dead letter(s)" in r.stderr
    status = {s["subscription"]: s for s in json.loads(cli("-p", p, "events", "status", "-o", "json").stdout)}
    assert status["mailer"]["retry_queue"] == 1 and status["mailer"]["dead_letters"] == 2
    assert cli("-p", p, "dlq", "replay", "--all", one).exit_code == 2
    assert cli("-p", p, "dlq", "purge").exit_code == 2  # not a terminal, no --yes: refuses
    assert json.loads(cli("-p", p, "dlq", "purge", "--older-than", "1h", "--yes", "-o", "json").stdout) == {"purged": 0}
    assert json.loads(cli("-p", p, "dlq", "purge", "--yes", "-o", "json").stdout) == {"purged": 2}
    assert cli("-p", p, "dlq", "purge", "--older-than", "soon", "--yes").exit_code == 2
