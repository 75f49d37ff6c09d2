"""Calling agents in-process: `python` agents (a `module:callable` or class entry point).

This is the engine's agent runtime until the MCA lands. A python agent is called as
``agent(method, params, context)``; it may be sync (run in a worker thread so timeouts
work) or async, and may return either its output or ``{"output": ..., "confidence": ...}``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from typing import Any

from progressive_cli.engine.executor import AgentRequest
from progressive_cli.errors import StepError


class LocalAgents:
    def __init__(self, agents: list[Any]) -> None:
        self.agents = {a.id: a for a in agents if a.enabled}
        self._instances: dict[str, Any] = {}

    def _pick(self, request: AgentRequest) -> Any:
        if request.agent is not None:
            agent = self.agents.get(request.agent)
            if agent is None:
                raise StepError("AGENT_ERROR", f"agent '{request.agent}' is not configured or is disabled")
            return agent
        for agent in self.agents.values():
            if request.capability in agent.capabilities:
                return agent
        raise StepError("AGENT_ERROR", f"no enabled agent provides capability '{request.capability}'")

    def _callable(self, agent: Any) -> Any:
        if agent.id in self._instances:
            return self._instances[agent.id]
        if agent.kind != "python":
            raise StepError(
                "AGENT_ERROR",
                f"agent '{agent.id}' is a {agent.kind} agent; this release runs python agents in-process "
                "(built-in, http and command agents arrive with the MCA)",
            )
        module_name, _, attr = agent.entrypoint.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise StepError("AGENT_ERROR", f"agent '{agent.id}': cannot load {agent.entrypoint}: {exc}") from None
        instance = target() if inspect.isclass(target) else target
        self._instances[agent.id] = instance
        return instance

    async def __call__(self, request: AgentRequest) -> Any:
        agent = self._pick(request)
        fn = self._callable(agent)
        timeout = request.timeout or agent.timeout
        try:
            async with asyncio.timeout(timeout):
                if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
                    result = await fn(request.method, request.params, {**request.context,
                                                                       "idempotency_key": request.idempotency_key})
                else:
                    result = await asyncio.to_thread(fn, request.method, request.params,
                                                     {**request.context, "idempotency_key": request.idempotency_key})
        except TimeoutError:
            raise StepError("TIMEOUT", f"agent '{agent.id}' did not answer within {timeout:g}s") from None
        except StepError:
            raise
        except Exception as exc:  # the agent's own failure, reported as a typed error
            raise StepError("AGENT_ERROR", f"agent '{agent.id}' failed: {type(exc).__name__}: {exc}") from None
        if isinstance(result, dict) and "output" in result:
            return result["output"]
        return result
