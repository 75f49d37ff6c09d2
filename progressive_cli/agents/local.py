"""Calling agents in-process: `python` agents (a `module:callable` or class entry point).

This is the engine's agent runtime until the MCA lands. A python agent is called as
``agent(method, params, context)``; it may be sync (run in a worker thread so timeouts
work) or async, and may return either its output or ``{"output": ..., "confidence": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import sys
import threading
from typing import Any

from progressive_cli.engine.executor import AgentRequest
from progressive_cli.errors import StepError


class LocalAgents:
    def __init__(self, agents: list[Any], root: Any = None) -> None:
        from progressive_cli.mca.router import Router

        self.router = Router(agents)
        self.root = str(root) if root is not None else None
        self._instances: dict[str, Any] = {}

    def _callable(self, agent: Any) -> Any:
        if agent.id in self._instances:
            return self._instances[agent.id]
        if agent.kind == "builtin":
            table = {p.agent.id: list(p.agent.capabilities) for p in self.router.pools.values()}
            self._instances[agent.id] = _Builtin(agent.id, agent.implementation, {"agents": table})
            return self._instances[agent.id]
        if agent.kind != "python":
            raise StepError(
                "AGENT_ERROR",
                f"agent '{agent.id}' is a {agent.kind} agent; this release runs built-in and python agents "
                "in-process (http and command agents arrive with the MCA)",
            )
        module_name, _, attr = agent.entrypoint.partition(":")
        if self.root and self.root not in sys.path:
            sys.path.append(self.root)  # entry points may live in the project directory, like a local plugin
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
        agent = self.router.agent_for(request.agent, request.capability)
        fn = self._callable(agent)
        with self.router.using(self.router.pick(agent.id)):
            return await self._call(agent, fn, request)

    async def _call(self, agent: Any, fn: Any, request: AgentRequest) -> Any:
        timeout = request.timeout or agent.timeout
        try:
            async with asyncio.timeout(timeout):
                if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
                    result = await fn(request.method, request.params, {**request.context,
                                                                       "idempotency_key": request.idempotency_key})
                else:
                    result = await _in_daemon_thread(fn, request.method, request.params,
                                                     {**request.context, "idempotency_key": request.idempotency_key})
        except TimeoutError:
            raise StepError("TIMEOUT", f"agent '{agent.id}' did not answer within {timeout:g}s") from None
        except StepError:
            raise
        except Exception as exc:  # the agent's own failure, reported as a typed error
            raise StepError("AGENT_ERROR", f"agent '{agent.id}' failed: {type(exc).__name__}: {exc}") from None
        if request.envelope:
            return result if isinstance(result, dict) and "output" in result else {"output": result}
        if isinstance(result, dict) and "output" in result:
            return result["output"]
        return result

    def capability_providers(self) -> dict[str, list[str]]:
        """capability -> the enabled agents that offer it, in declaration order (for consensus steps)."""
        providers: dict[str, list[str]] = {}
        for pool in self.router.pools.values():
            for capability in pool.agent.capabilities:
                providers.setdefault(capability, []).append(pool.agent.id)
        return providers


def _in_daemon_thread(fn: Any, *args: Any) -> asyncio.Future[Any]:
    """Run a sync agent in a daemon thread: a timeout abandons it instead of keeping the process alive
    (``asyncio.to_thread`` would make ``asyncio.run`` wait for it at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def work() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (fn(*args), None)
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop is gone: the call timed out, nobody waits for it
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name="progressive-agent", daemon=True).start()
    return future


class _Builtin:
    """A built-in agent (``progressive_cli.agents.builtin``) called in-process: its methods are pure and quick."""

    def __init__(self, agent_id: str, implementation: str, extra_context: dict[str, Any]) -> None:
        from progressive_cli.agents.builtin import methods

        self.agent_id = agent_id
        self.extra_context = extra_context
        try:
            self.methods = methods(implementation)
        except (LookupError, ImportError) as exc:
            raise StepError("AGENT_ERROR", f"agent '{agent_id}': {exc}") from None

    async def __call__(self, method: str, params: Any, context: Any) -> Any:
        from progressive_cli.agents.builtin import AgentInputError

        fn = self.methods.get(method)
        if fn is None:
            raise StepError("AGENT_ERROR", f"agent '{self.agent_id}' has no method '{method}'; it has: "
                            f"{', '.join(sorted(self.methods))}")
        if not isinstance(params, dict):
            raise StepError("AGENT_ERROR", f"agent '{self.agent_id}'.{method}: params must be a mapping")
        try:
            return fn(params, {**context, **self.extra_context})
        except AgentInputError as exc:
            raise StepError("AGENT_ERROR", f"agent '{self.agent_id}'.{method}: {exc}",
                            {"reason": "invalid_input"}) from None
