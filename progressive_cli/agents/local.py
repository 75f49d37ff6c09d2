"""In-process agents: ``builtin`` (the seed's five agents and the MCA) and ``python`` (a
``module:callable`` or class entry point, which may live in the project directory).

A python agent is called as ``agent(method, params, context)``; it may be sync (run in a daemon
thread, so a timeout abandons it instead of blocking the event loop) or async, and may return its
output or ``{"output": ..., "confidence": ..., "metadata": ...}``. The MCA runtime
(:mod:`progressive_cli.mca.runtime`) routes, times out and measures every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import sys
import threading
from typing import Any

from progressive_cli.errors import StepError


class InProcessAgent:
    """One loaded in-process agent, called like the remote kinds: ``await agent(method, params, context)``."""

    def __init__(self, agent: Any, root: str | None, extra_context: dict[str, Any]) -> None:
        self.agent_id: str = agent.id
        self.target: Any = _Builtin(agent.id, agent.implementation, extra_context) if agent.kind == "builtin" \
            else _load_python(agent, root)
        fn = self.target
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)

    async def __call__(self, method: str, params: Any, context: dict[str, Any], *,
                       instance: str | None = None) -> Any:
        try:
            if self.is_async:
                return await self.target(method, params, context)
            return await _in_daemon_thread(self.target, method, params, context)
        except StepError:
            raise
        except Exception as exc:  # the agent's own failure, reported as a typed error
            raise StepError("AGENT_ERROR", f"agent '{self.agent_id}' failed: {type(exc).__name__}: {exc}",
                            {"reason": "agent_error"}) from None

    async def health(self, instance: str | None = None) -> tuple[bool, str]:
        """Loaded is alive; an object with a ``health()`` method is asked as well."""
        probe = getattr(self.target, "health", None)
        if not callable(probe):
            return True, "loaded in process"
        try:
            answer = probe()
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as exc:
            return False, f"health() raised {type(exc).__name__}: {exc}"
        return (True, "health() ok") if answer is not False else (False, "health() returned false")

    async def aclose(self) -> None:
        return None


def _load_python(agent: Any, root: str | None) -> Any:
    module_name, _, attr = agent.entrypoint.partition(":")
    if root and root not in sys.path:
        sys.path.append(root)  # entry points may live in the project directory, like a local plugin
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise StepError("AGENT_ERROR", f"agent '{agent.id}': cannot load {agent.entrypoint}: {exc}",
                        {"reason": "cannot_start"}) from None
    return target() if inspect.isclass(target) else target


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
            raise StepError("AGENT_ERROR", f"agent '{agent_id}': {exc}", {"reason": "cannot_start"}) from None

    async def __call__(self, method: str, params: Any, context: Any) -> Any:
        from progressive_cli.agents.builtin import AgentInputError, acknowledge

        fn = self.methods.get(method)
        if fn is None and method == "message":
            fn = acknowledge  # every agent takes messages; those with nothing to do with them acknowledge
        if fn is None:
            raise StepError("AGENT_ERROR", f"agent '{self.agent_id}' has no method '{method}'; it has: "
                            f"{', '.join(sorted(self.methods))}", {"reason": "no_such_method"})
        if not isinstance(params, dict):
            raise StepError("AGENT_ERROR", f"agent '{self.agent_id}'.{method}: params must be a mapping",
                            {"reason": "invalid_input"})
        try:
            return fn(params, {**context, **self.extra_context})
        except AgentInputError as exc:
            raise StepError("AGENT_ERROR", f"agent '{self.agent_id}'.{method}: {exc}",
                            {"reason": "invalid_input"}) from None
