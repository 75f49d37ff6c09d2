"""Typed workflow inputs: coercion of ``-i key=value`` strings and validation before a run."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from progressive_cli.errors import InputError


def _number(name: str, value: Any, integer: bool) -> int | float:
    what = "a whole number" if integer else "a number"
    if isinstance(value, bool):
        raise InputError(f"input '{name}': expected {what}, got a boolean")
    if isinstance(value, str):
        try:
            value = int(value) if integer and value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            raise InputError(f"input '{name}': expected {what}, got '{value}'") from None
    if not isinstance(value, int | float) or (isinstance(value, float) and not math.isfinite(value)):
        raise InputError(f"input '{name}': expected {what}, got {value!r}")
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise InputError(f"input '{name}': expected a whole number, got {value}")
            value = int(value)
        return value
    return value


def coerce(name: str, spec: Any, value: Any) -> Any:
    """Check one value against its declared input spec; strings from the command line are parsed."""
    kind = spec.type
    if kind == "string":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InputError(f"input '{name}': expected a string, got {type(value).__name__}")
        result: Any = str(value)
    elif kind in ("number", "integer"):
        result = _number(name, value, kind == "integer")
        if spec.minimum is not None and result < spec.minimum:
            raise InputError(f"input '{name}': {result} is below the minimum {spec.minimum:g}")
        if spec.maximum is not None and result > spec.maximum:
            raise InputError(f"input '{name}': {result} is above the maximum {spec.maximum:g}")
    elif kind == "boolean":
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                raise InputError(f"input '{name}': expected true or false, got '{value}'")
            result = lowered in ("true", "yes", "1", "on")
        elif isinstance(value, bool):
            result = value
        else:
            raise InputError(f"input '{name}': expected true or false, got {value!r}")
    else:  # object | list
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise InputError(f"input '{name}': expected JSON {kind}, got '{value[:40]}'") from None
        expected = dict if kind == "object" else list
        if not isinstance(value, expected):
            raise InputError(f"input '{name}': expected {'an object' if kind == 'object' else 'a list'}")
        result = value
    if spec.enum is not None and result not in spec.enum:
        allowed = ", ".join(str(v) for v in spec.enum)
        raise InputError(f"input '{name}': '{result}' is not one of: {allowed}")
    return result


def resolve_inputs(specs: Mapping[str, Any], given: Mapping[str, Any], workflow: str) -> dict[str, Any]:
    """Apply defaults and types; every problem is an InputError naming the input."""
    unknown = sorted(set(given) - set(specs))
    if unknown:
        known = ", ".join(sorted(specs)) or "none"
        raise InputError(f"workflow '{workflow}' has no input '{unknown[0]}' (inputs: {known})")
    resolved: dict[str, Any] = {}
    for name, spec in specs.items():
        if name in given:
            resolved[name] = coerce(name, spec, given[name])
        elif spec.default is not None:
            resolved[name] = coerce(name, spec, spec.default)
        elif spec.required:
            raise InputError(f"workflow '{workflow}' needs input '{name}' ({spec.type}); pass -i {name}=VALUE")
        else:
            resolved[name] = None
    return resolved
