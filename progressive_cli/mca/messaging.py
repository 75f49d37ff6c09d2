"""Agent messaging (the seed's Inter-Agent Communication Framework): direct messages and broadcasts.

A message goes to one agent (direct) or to every agent subscribed to a channel (``channels:`` in
agents.yaml; a broadcast is one message per recipient, each delivered or queued on its own, and
never to its sender). Every message is written to the state store before anything is sent, so a
message to an agent that is offline waits there, in any process's view, until someone calls
:meth:`Messenger.deliver_pending` once the agent is back (the daemon's heartbeat job, or
``progressive agents deliver``).

Delivery is at least once: a message is claimed (``delivering``) by one process at a time, and
one whose deliverer died is given back when the claim lapses; the agent receives
``idempotency_key = "msg:<id>"`` to recognise a repeat. Messages to one recipient are delivered
oldest first, and a retryable failure stops that recipient's delivery until the next try, so a
later message never overtakes an earlier one.

The module is pure: the store, the agent call and the agent's status are handed in.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any, get_args

from progressive_cli.config.agents import Channel
from progressive_cli.config.secrets import REDACTOR
from progressive_cli.errors import NotFoundError, StepError, UsageError, one_line
from progressive_cli.store.base import MESSAGE_STATUSES, Event, Message, StateStore, new_id, now

CHANNELS: tuple[str, ...] = get_args(Channel)
"""``system-alerts``, ``coordination``, ``health-checks`` (the seed's broadcast channels)."""

RETRYABLE = frozenset({"NETWORK_ERROR", "TIMEOUT", "AGENT_UNAVAILABLE", "CIRCUIT_BREAKER_OPEN", "RATE_LIMITED"})
"""Error kinds that say the recipient could not be reached: the message stays queued."""

REACHABLE = frozenset({"online", "degraded", "unknown"})
"""Statuses in which delivery is tried now; ``offline`` queues the message."""

CLAIM_MARGIN = 60.0
"""Seconds a delivery claim outlives the agent's timeout before another process may take it over."""

SOURCE = "progressive/messages"
SENDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")

Deliver = Callable[[Message], Awaitable[Any]]
"""Sends one message to its recipient; returns the agent's reply or raises StepError."""
Status = Callable[[str], Awaitable[str]]
"""An agent's status: online, degraded, offline or unknown."""


def enabled_agent(agents: Iterable[Any], agent_id: str) -> Any:
    """The enabled agent ``agent_id``: NotFoundError (with the closest id) if it is not declared,
    UsageError if it is disabled."""
    declared = {a.id: a for a in agents}
    agent = declared.get(agent_id)
    if agent is not None and agent.enabled:
        return agent
    if agent is not None:
        raise UsageError(f"agent '{agent_id}' is disabled")
    import difflib

    close = difflib.get_close_matches(agent_id, list(declared), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f"; known: {', '.join(sorted(declared)) or 'none'}"
    raise NotFoundError(f"no agent '{agent_id}'{hint}")


def _one_of(what: str, value: str, allowed: tuple[str, ...], *, plural: str = "") -> str:
    if value not in allowed:
        raise UsageError(f"unknown {what} '{value}'; {plural or what + 's'}: {', '.join(allowed)}")
    return value


def retryable(error: StepError) -> bool:
    """A failure to reach the agent (worth trying again later), not a refusal of the message."""
    from progressive_cli.mca.router import NoInstanceAvailable

    return error.kind in RETRYABLE or isinstance(error, NoInstanceAvailable)


def error_text(error: StepError) -> str:
    """``KIND: message`` on one line, secrets masked: the only form an error is stored in."""
    return one_line(REDACTOR.redact(f"{error.kind}: {error.message}"))


class Messenger:
    """Sends, queues, delivers, lists and prunes agent messages on one state store."""

    def __init__(self, store: StateStore, agents: Iterable[Any], deliver: Deliver, status: Status, *,
                 retention: float = 604800.0, max_attempts: int = 10,
                 clock: Callable[[], float] = now) -> None:
        self.store = store
        declared = list(agents)
        self.declared = {a.id: a for a in declared}
        self.agents = {a.id: a for a in declared if a.enabled}
        self.deliver = deliver
        self.status = status
        self.retention = float(retention)
        self.max_attempts = max_attempts
        self.clock = clock

    # --- checks (their messages name what was wrong; the CLI adds the flag) -------------------------------
    def check_agent(self, agent_id: str) -> Any:
        return enabled_agent(self.declared.values(), agent_id)

    @staticmethod
    def check_channel(channel: str) -> str:
        return _one_of("channel", channel, CHANNELS)

    @staticmethod
    def check_sender(sender: str) -> str:
        if not SENDER.fullmatch(sender):
            raise UsageError(f"sender {sender!r}: expected 1-64 letters, digits and _ . : @ - (an agent id, "
                             "'operator', …)")
        return sender

    @staticmethod
    def check_status(status: str) -> str:
        return _one_of("status", status, MESSAGE_STATUSES, plural="statuses")

    # --- operations ------------------------------------------------------------------------------------
    async def send(self, sender: str, recipient: str, body: Any) -> Message:
        """A direct message: delivered now if the recipient is reachable, else queued. Returns it as it
        stands afterwards (``delivered``, ``queued`` or ``failed``)."""
        self.check_sender(sender)
        self.check_agent(recipient)
        state = await self.status(recipient)
        message = Message(id=new_id(), sender=sender, recipient=recipient, body=body, created_at=self.clock())
        await self._accept([message], {recipient: state})
        if state in REACHABLE:
            await self._drain(recipient)
        return await self.store.get_message(message.id) or message

    async def broadcast(self, sender: str, channel: str, body: Any) -> list[Message]:
        """One message per enabled agent subscribed to ``channel`` (not the sender), each delivered or
        queued on its own; [] when nobody subscribes."""
        self.check_sender(sender)
        self.check_channel(channel)
        recipients = [a.id for a in self.agents.values() if channel in a.channels and a.id != sender]
        states = dict(zip(recipients, await asyncio.gather(*(self.status(r) for r in recipients)), strict=True))
        created = self.clock()
        messages = [Message(id=new_id(), sender=sender, recipient=r, body=body, channel=channel, created_at=created)
                    for r in recipients]
        if not messages:
            return []
        await self._accept(messages, states)
        await asyncio.gather(*(self._drain(r) for r in recipients if states[r] in REACHABLE))
        return [await self.store.get_message(m.id) or m for m in messages]

    async def deliver_pending(self, agent_id: str | None = None, *, prune: bool = True) -> list[Message]:
        """Deliver what is queued (for ``agent_id``, or everyone) to recipients that are reachable now,
        oldest first, after expiring what is past retention (unless ``prune`` is false). Returns each
        message attempted, as it stands afterwards. Messages to agents no longer enabled stay queued
        (until retention expires them)."""
        if agent_id is not None:
            self.check_agent(agent_id)
        if prune:
            await self.prune()
        recipients = list(dict.fromkeys(m.recipient for m in await self.store.pending_messages(agent_id, limit=10_000)
                                        if m.recipient in self.agents))
        states = await asyncio.gather(*(self.status(r) for r in recipients))
        done = await asyncio.gather(*(self._drain(r) for r, s in zip(recipients, states, strict=True)
                                      if s in REACHABLE))
        return [m for batch in done for m in batch]

    async def history(self, agent: str | None = None, *, channel: str | None = None, status: str | None = None,
                      sender: str | None = None, recipient: str | None = None, limit: int = 50) -> list[Message]:
        """Messages newest first; ``agent`` matches messages to or from it."""
        if channel is not None:
            self.check_channel(channel)
        if status is not None:
            self.check_status(status)
        return await self.store.list_messages(agent=agent, recipient=recipient, sender=sender, channel=channel,
                                              statuses=[status] if status else None, limit=limit)

    async def prune(self) -> int:
        """Delete messages older than the retention, whatever their status; one still waiting for delivery
        expires (a ``message.expired`` event records it). Returns how many were deleted."""
        return await self.store.prune_messages(
            self.clock() - self.retention,
            lambda m: [self._event("message.expired", m, retention_s=self.retention)])

    # --- delivery --------------------------------------------------------------------------------------
    async def _accept(self, messages: list[Message], states: dict[str, str]) -> None:
        events = []
        for message in messages:
            events.append(self._event("message.sent", message))
            state = states[message.recipient]
            if state not in REACHABLE:
                events.append(self._event("message.queued", message, reason=f"recipient is {state}"))
        await self.store.insert_messages(messages, events)

    async def _drain(self, recipient: str) -> list[Message]:
        """Deliver the recipient's pending messages, oldest first, until one has to wait."""
        done: list[Message] = []
        started = self.clock()
        lease = float(self.agents[recipient].timeout) + CLAIM_MARGIN
        while True:
            batch = [m for m in await self.store.pending_messages(recipient, limit=100) if m.created_at <= started]
            if not batch:
                return done
            for pending in batch:
                message = await self.store.claim_message(pending.id, self.clock() + lease)
                if message is None:  # another process took it
                    continue
                outcome = await self._attempt(message)
                done.append(outcome)
                if outcome.status == "queued":  # unreachable: keep the order, try again later
                    return done

    async def _attempt(self, message: Message) -> Message:
        attempts = message.attempts + 1
        try:
            reply = await self.deliver(message)
        except StepError as exc:
            error = error_text(exc)
            requeue = retryable(exc) and attempts < self.max_attempts
            status = "queued" if requeue else "failed"
            event = self._event(f"message.{status}", message, attempts=attempts, error=error)
            await self.store.mark_message_failed(message.id, error, requeue=requeue, events=[event])
            return replace(message, status=status, attempts=attempts, error=error, delivered_at=None)
        except BaseException:  # interrupted, or a bug in the caller's deliver: give the message back untouched
            await self.store.release_message(message.id)
            raise
        await self.store.mark_message_delivered(
            message.id, reply, [self._event("message.delivered", message, attempts=attempts)])
        return replace(message, status="delivered", attempts=attempts, error=None, reply=reply,
                       delivered_at=self.clock())

    def _event(self, type_: str, message: Message, **extra: Any) -> Event:
        """The event of a message's change: who, what channel and how it stands; never the body."""
        data = {"id": message.id, "from": message.sender, "to": message.recipient, "channel": message.channel,
                **extra}
        return Event(type_, data, source=SOURCE, subject=message.id, time=self.clock())


def via_runtime(call: Callable[[Any], Awaitable[Any]]) -> Deliver:
    """A :data:`Deliver` over an agent runtime (``AgentRuntime``): the agent method ``message``."""

    async def deliver(message: Message) -> Any:
        from progressive_cli.engine.executor import AgentRequest

        request = AgentRequest(
            agent=message.recipient, capability=None, method="message",
            params={"id": message.id, "from": message.sender, "channel": message.channel, "body": message.body},
            idempotency_key=f"msg:{message.id}", timeout=None, context={"source": "messages"})
        return await call(request)

    return deliver


def probing_status(runtime: Any) -> Status:
    """A :data:`Status` over an agent runtime for a process without a daemon: an agent that does not look
    online (its heartbeat may just be old, as nobody refreshes it) is probed first and the probe recorded."""

    async def status(agent_id: str) -> str:
        current = str(await runtime.status(agent_id))
        if current != "online":
            await runtime.check([agent_id])
            current = str(await runtime.status(agent_id))
        return current

    return status
