"""The built-in agents of Progressive-Framework-v5: pure functions over data shipped in the package.

Each agent module exposes ``METHODS``: method name -> ``fn(params, context) -> output`` (JSON-able).
A bad request raises :class:`AgentInputError` naming the parameter. Agents do real work offline;
where an integration could do better (USDA lookups for NPA), that path is optional.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

Method = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]

MODULES = {"mca": "mca", "npa": "nutrition", "wpa": "workout", "bma": "budget", "rpa": "report", "ema": "emergency"}


class AgentInputError(ValueError):
    """A request the agent cannot serve: the message names the parameter and what was expected."""


def methods(implementation: str) -> dict[str, Method]:
    """The methods of a built-in agent (``npa``...), importing its module on first use."""
    module_name = MODULES.get(implementation)
    if module_name is None:
        raise LookupError(f"no built-in agent '{implementation}'")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return dict(module.METHODS)


# --- parameter helpers shared by the agents -------------------------------------------------------------
def number(params: Mapping[str, Any], name: str, *, minimum: float | None = None, maximum: float | None = None,
           default: float | None = None) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AgentInputError(f"'{name}' must be a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise AgentInputError(f"'{name}' must be at least {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise AgentInputError(f"'{name}' must be at most {maximum:g}, got {value:g}")
    return float(value)


def choice(params: Mapping[str, Any], name: str, options: tuple[str, ...], *, default: str | None = None) -> str:
    value = params.get(name, default)
    if value not in options:
        raise AgentInputError(f"'{name}' must be one of {', '.join(options)}; got {value!r}")
    return str(value)


def items(params: Mapping[str, Any], name: str, *, default: list[Any] | None = None) -> list[Any]:
    value = params.get(name, default)
    if not isinstance(value, list):
        raise AgentInputError(f"'{name}' must be a list, got {type(value).__name__}")
    return value


def acknowledge(params: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The ``message`` method of agents that have nothing to do with messages: the receipt."""
    return {"received": params.get("id"), "channel": params.get("channel")}
