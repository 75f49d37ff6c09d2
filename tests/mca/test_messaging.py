"""Agent messaging on a real SQLite store: direct, broadcast, queue, restart, retries, retention, events."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from progressive_cli.config.agents import PythonAgent
from progressive_cli.config.secrets import REDACTOR
from progressive_cli.errors import NotFoundError, StepError, UsageError
from progressive_cli.mca.messaging import CHANNELS, Messenger
from progressive_cli.store.base import Message, new_id
from progressive_cli.store.sqlite import SQLiteStore

run = asyncio.run


def agent(agent_id: str, **extra: Any) -> PythonAgent:
    return PythonAgent(id=agent_id, kind="python", entrypoint="agents:handle", **extra)


AGENTS = [agent("npa"), agent("wpa", channels=["coordination"]), agent("bma", channels=[]),
          agent("ema", channels=["system-alerts"]), agent("off", enabled=False)]


class Network:
    """The agents' side: who is online, what each received, and failures to inject."""

    def __init__(self, online: set[str] | None = None) -> None:
        self.online = set(online or ())
        self.received: list[Message] = []
        self.failures: dict[str, StepError] = {}

    async def deliver(self, message: Message) -> Any:
        if message.recipient in self.failures:
            raise self.failures[message.recipient]
        if message.recipient not in self.online:
            raise StepError("NETWORK_ERROR", f"agent '{message.recipient}': connection refused")
        self.received.append(message)
        return {"received": message.id}

    async def status(self, agent_id: str) -> str:
        return "online" if agent_id in self.online else "offline"


def messenger(path: Path, net: Network, **options: Any) -> tuple[SQLiteStore, Messenger]:
    store = SQLiteStore(path)
    return store, Messenger(store, AGENTS, net.deliver, net.status, **options)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


def test_direct_message_to_an_online_agent_is_delivered(db: Path) -> None:
    net = Network({"npa"})
    store, m = messenger(db, net)
    sent = run(m.send("operator", "npa", {"hello": 1}))
    assert sent.status == "delivered" and sent.attempts == 1 and sent.reply == {"received": sent.id}
    assert sent.delivered_at is not None and sent.error is None and sent.channel is None
    assert [r.body for r in net.received] == [{"hello": 1}]
    shown = sent.as_dict()
    assert shown["from"] == "operator" and shown["to"] == "npa" and shown["status"] == "delivered"
    run(store.close())


def test_send_checks_recipient_and_sender(db: Path) -> None:
    store, m = messenger(db, Network({"npa"}))
    with pytest.raises(NotFoundError, match="no agent 'npx' \\(did you mean 'npa'\\?\\)"):
        run(m.send("operator", "npx", {}))
    with pytest.raises(UsageError, match="agent 'off' is disabled"):
        run(m.send("operator", "off", {}))
    with pytest.raises(UsageError, match="sender"):
        run(m.send("", "npa", {}))
    with pytest.raises(UsageError, match="unknown channel 'alerts'"):
        run(m.broadcast("operator", "alerts", {}))
    assert run(store.list_messages()) == []
    run(store.close())


def test_broadcast_reaches_subscribers_only_and_not_the_sender(db: Path) -> None:
    net = Network({"npa", "wpa", "bma", "ema"})
    store, m = messenger(db, net)
    coordination = run(m.broadcast("npa", "coordination", {"task": "t1"}))
    # npa sends (and subscribes to all three), wpa subscribes to coordination, bma to none, ema to alerts
    assert [x.recipient for x in coordination] == ["wpa"]
    alerts = run(m.broadcast("operator", "system-alerts", {"level": "critical"}))
    assert sorted(x.recipient for x in alerts) == ["ema", "npa"]
    assert {x.status for x in alerts} == {"delivered"} and {x.channel for x in alerts} == {"system-alerts"}
    assert len({x.id for x in alerts}) == 2  # one message per recipient
    assert [x.recipient for x in run(m.broadcast("operator", "health-checks", {}))] == ["npa"]
    assert sorted(r.recipient for r in net.received) == ["ema", "npa", "npa", "wpa"]
    assert CHANNELS == ("system-alerts", "coordination", "health-checks")
    run(store.close())


def test_broadcast_queues_offline_subscribers_independently(db: Path) -> None:
    net = Network({"npa"})
    store, m = messenger(db, net)
    out = {x.recipient: x.status for x in run(m.broadcast("operator", "coordination", {"n": 1}))}
    assert out == {"npa": "delivered", "wpa": "queued"}
    run(store.close())


def test_offline_recipient_is_queued_and_delivered_after_a_restart_exactly_once(db: Path) -> None:
    net = Network()
    store, m = messenger(db, net)
    first = run(m.send("operator", "npa", {"n": 1}))
    second = run(m.send("operator", "npa", {"n": 2}))
    assert first.status == second.status == "queued" and first.attempts == 0
    assert net.received == []
    assert run(m.deliver_pending()) == []  # still offline: nothing is tried
    run(store.close())

    # the restart: a new process opens the same file; the agent is back
    net.online.add("npa")
    store, m = messenger(db, net)
    delivered = run(m.deliver_pending("npa"))
    assert [(x.id, x.status, x.attempts) for x in delivered] == [(first.id, "delivered", 1),
                                                                 (second.id, "delivered", 1)]
    assert [r.body for r in net.received] == [{"n": 1}, {"n": 2}]  # oldest first
    assert run(m.deliver_pending()) == [] and len(net.received) == 2  # exactly once
    run(store.close())
    store, m = messenger(db, net)
    assert run(m.deliver_pending()) == [] and len(net.received) == 2
    assert [x.status for x in run(m.history("npa"))] == ["delivered", "delivered"]
    run(store.close())


def test_direct_send_does_not_overtake_queued_messages(db: Path) -> None:
    net = Network()
    store, m = messenger(db, net)
    run(m.send("operator", "npa", "first"))
    net.online.add("npa")
    assert run(m.send("operator", "npa", "second")).status == "delivered"
    assert [r.body for r in net.received] == ["first", "second"]
    run(store.close())


def test_retryable_failures_count_attempts_then_fail(db: Path) -> None:
    net = Network()
    net.failures["npa"] = StepError("TIMEOUT", "agent 'npa' did not answer within 1s")
    store, m = messenger(db, net, max_attempts=3)
    sent = run(m.send("operator", "npa", {}))  # status says offline: queued without an attempt
    assert (sent.status, sent.attempts) == ("queued", 0)
    net.online.add("npa")
    for attempt in (1, 2):
        [tried] = run(m.deliver_pending())
        assert (tried.status, tried.attempts, tried.error) == ("queued", attempt,
                                                               "TIMEOUT: agent 'npa' did not answer within 1s")
    [tried] = run(m.deliver_pending())
    assert (tried.status, tried.attempts) == ("failed", 3)
    assert run(m.deliver_pending()) == []
    stored = run(store.get_message(sent.id))
    assert stored is not None and (stored.status, stored.attempts, stored.delivered_at) == ("failed", 3, None)
    run(store.close())


def test_a_refused_message_fails_at_once_and_does_not_block_the_next(db: Path) -> None:
    net = Network()
    store, m = messenger(db, net)
    run(m.send("operator", "npa", "bad"))
    run(m.send("operator", "npa", "good"))
    net.online.add("npa")
    net.failures["npa"] = StepError("AGENT_ERROR", "agent 'npa' has no method 'message'")
    out = run(m.deliver_pending())
    assert [(x.body, x.status, x.attempts) for x in out] == [("bad", "failed", 1), ("good", "failed", 1)]
    run(store.close())


def test_unreachable_recipient_keeps_its_order(db: Path) -> None:
    net = Network()
    store, m = messenger(db, net)
    a = run(m.send("operator", "npa", "a"))
    run(m.send("operator", "npa", "b"))
    net.online.add("npa")
    net.failures["npa"] = StepError("NETWORK_ERROR", "connection refused")
    out = run(m.deliver_pending())
    assert [(x.id, x.status) for x in out] == [(a.id, "queued")]  # "b" waits behind "a"
    del net.failures["npa"]
    assert [x.body for x in run(m.deliver_pending())] == ["a", "b"]
    run(store.close())


def test_a_lapsed_claim_is_delivered_by_another_process(db: Path) -> None:
    net = Network({"npa"})
    store, m = messenger(db, net)
    message = Message(id=new_id(), sender="operator", recipient="npa", body="x")
    run(store.insert_messages([message]))
    assert run(store.claim_message(message.id, claim_until=0.0)) is not None  # claimed, then its process died
    assert run(store.claim_message(message.id, claim_until=10**10)) is not None  # lapsed: taken over
    assert run(store.claim_message(message.id, claim_until=10**10)) is None  # live claim: nobody else
    assert run(store.pending_messages()) == []
    run(store.release_message(message.id))
    assert [x.status for x in run(m.deliver_pending())] == ["delivered"]
    run(store.close())


def test_interrupted_delivery_gives_the_message_back(db: Path) -> None:
    net = Network({"npa"})

    async def hang(message: Message) -> Any:
        await asyncio.sleep(3600)

    store = SQLiteStore(db)
    m = Messenger(store, AGENTS, hang, net.status)

    async def go() -> None:
        task = asyncio.ensure_future(m.send("operator", "npa", "x"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(go())
    [message] = run(store.list_messages())
    assert (message.status, message.attempts) == ("queued", 0)
    run(store.close())


def test_history_filters_newest_first(db: Path) -> None:
    net = Network({"npa", "wpa"})
    store, m = messenger(db, net)
    t = [1000.0]

    def clock() -> float:
        t[0] += 1
        return t[0]

    m.clock = clock
    run(m.send("operator", "npa", 1))
    run(m.send("npa", "wpa", 2))
    run(m.broadcast("operator", "coordination", 3))
    net.failures["wpa"] = StepError("AGENT_ERROR", "refused")
    run(m.send("operator", "wpa", 4))
    bodies = lambda ms: [x.body for x in ms]  # noqa: E731
    assert bodies(run(m.history())) == [4, 3, 3, 2, 1]
    assert bodies(run(m.history("npa"))) == [3, 2, 1]  # to or from npa
    assert bodies(run(m.history(recipient="wpa"))) == [4, 3, 2]
    assert bodies(run(m.history(sender="npa"))) == [2]
    assert bodies(run(m.history(channel="coordination"))) == [3, 3]
    assert bodies(run(m.history(status="failed"))) == [4]
    assert bodies(run(m.history(limit=2))) == [4, 3]
    with pytest.raises(UsageError, match="unknown status 'sent'"):
        run(m.history(status="sent"))
    run(store.close())


def test_retention_prunes_old_messages_and_expires_queued_ones(db: Path) -> None:
    net = Network({"npa"})
    store, m = messenger(db, net, retention=3600)
    now = 1_800_000_000.0
    m.clock = lambda: now
    old = now - 7200
    rows = [Message(id=f"old-{s}", sender="operator", recipient="npa", body=s, status=s, created_at=old)
            for s in ("delivered", "failed", "queued")]
    rows.append(Message(id="old-live", sender="operator", recipient="npa", body="live", status="delivering",
                        created_at=old, delivered_at=10**11))  # being delivered right now: kept
    rows.append(Message(id="new", sender="operator", recipient="wpa", body="new", created_at=now - 60))
    run(store.insert_messages(rows))
    assert run(m.prune()) == 3
    assert sorted(x.id for x in run(store.list_messages())) == ["new", "old-live"]
    expired = run(store.list_events(type_prefix="message.expired"))
    assert [e.subject for e in expired] == ["old-queued"] and expired[0].data["retention_s"] == 3600
    run(store.close())


def test_every_change_writes_an_event(db: Path) -> None:
    net = Network()
    store, m = messenger(db, net, max_attempts=2)
    queued = run(m.send("operator", "npa", {"secret": "body is not in events"}))
    net.online.add("npa")
    run(m.deliver_pending())
    net.failures["wpa"] = StepError("TIMEOUT", "slow")
    net.online.add("wpa")
    failed = run(m.send("operator", "wpa", {}))
    run(m.deliver_pending())
    events = run(store.list_events(type_prefix="message."))
    assert [(e.type, e.subject) for e in events] == [
        ("message.sent", queued.id), ("message.queued", queued.id), ("message.delivered", queued.id),
        ("message.sent", failed.id), ("message.queued", failed.id), ("message.failed", failed.id),
    ]
    assert events[1].data["reason"] == "recipient is offline"
    assert events[5].data == {"id": failed.id, "from": "operator", "to": "wpa", "channel": None, "attempts": 2,
                              "error": "TIMEOUT: slow"}
    assert all("body" not in e.data for e in events) and {e.source for e in events} == {"progressive/messages"}
    run(store.close())


def test_a_secret_in_an_agent_error_is_never_stored(db: Path) -> None:
    canary = "canary-" + new_id()
    REDACTOR.register(canary)
    try:
        net = Network({"npa"})
        net.failures["npa"] = StepError("NETWORK_ERROR", f"POST https://u:{canary}@agent/ failed with token {canary}")
        store, m = messenger(db, net, max_attempts=1)
        sent = run(m.send("operator", "npa", {}))
        assert sent.status == "failed" and canary not in (sent.error or "") and "***" in (sent.error or "")
        stored = b"".join(p.read_bytes() for p in db.parent.glob("state.db*"))
        assert b"token ***" in stored and canary.encode() not in stored
        run(store.close())
    finally:
        REDACTOR.clear()


# --- through the MCA runtime, with a real http agent -------------------------------------------------------
HTTP_AGENT = Path(__file__).with_name("http_agent.py")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_http_agent(port: int, log: Path) -> Any:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, str(HTTP_AGENT), str(port), str(log)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_http_agent_down_then_up_gets_its_message_after_a_restart_once(tmp_path: Path) -> None:
    from progressive_cli.config.agents import HttpAgent
    from progressive_cli.mca.messaging import probing_status, via_runtime
    from progressive_cli.mca.runtime import AgentRuntime

    port, log, db = free_port(), tmp_path / "received.jsonl", tmp_path / "state.db"
    agents = [HttpAgent(id="remote", kind="http", endpoints=[{"url": f"http://127.0.0.1:{port}"}], timeout=5)]

    async def session(use: Any) -> Any:  # one process's life: its own store connection and runtime
        store = SQLiteStore(db)
        runtime = AgentRuntime(agents, store=store)
        try:
            return await use(Messenger(store, agents, via_runtime(runtime), probing_status(runtime)))
        finally:
            await runtime.aclose()
            await store.close()

    sent = run(session(lambda m: m.send("operator", "remote", {"n": 1})))
    assert (sent.status, sent.attempts) == ("queued", 0)  # the probe failed: not even tried
    assert run(session(lambda m: m.deliver_pending())) == []
    proc = start_http_agent(port, log)
    try:
        [delivered] = run(session(lambda m: m.deliver_pending()))
        assert (delivered.id, delivered.status, delivered.attempts) == (sent.id, "delivered", 1)
        assert run(session(lambda m: m.deliver_pending())) == []
    finally:
        proc.terminate()
        proc.wait()
    [request] = [json.loads(line) for line in log.read_text().splitlines()]  # exactly once
    assert request["method"] == "message" and request["header_key"] == f"msg:{sent.id}"
    assert request["params"] == {"id": sent.id, "from": "operator", "channel": None, "body": {"n": 1}}
    [stored] = run(session(lambda m: m.history("remote")))
    assert stored.reply == {"ack": sent.id}


# --- configuration -------------------------------------------------------------------------------------------
def test_channels_and_message_settings_are_validated(cli: Any, make_project: Any) -> None:
    root = make_project({"agents.yaml": """
        agents:
          - id: npa
            kind: builtin
            channels: [coordination, alerts]
    """})
    r = cli("-p", str(root), "validate")
    assert r.exit_code == 2 and "agents.yaml:4:" in r.stderr and "alerts" in r.stderr
    root = make_project({"agents.yaml": "agents: [{id: npa, kind: builtin}]\n",
                         "progressive.yaml": "messages: {retention: 2h}\n"})
    r = cli("-p", str(root), "--set", "messages.max_attempts=3", "config", "show", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["messages"] == {"retention": 7200.0, "max_attempts": 3}
    r = cli("-p", str(root), "agents", "show", "npa", "-o", "json")
    assert json.loads(r.stdout)["channels"] == list(CHANNELS)
