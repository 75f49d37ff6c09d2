"""``${env:NAME}`` references: checked when config loads, resolved late, redacted everywhere.

Config models keep the reference text (``${env:STRIPE_SECRET_KEY}``), never the value.
A value is read from the environment only by :func:`resolve`, at the moment a connector
needs it, and every value read that way is registered with the process-wide
:data:`REDACTOR`, which every output path (CLI rendering, logs, store writes, events,
error messages) runs text through.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#\s@]*:)(?P<pw>[^@/?#\s]+)(?=@)")
MIN_SECRET_LEN = 4  # shorter values would mask ordinary text such as "1" or "true"


class MissingSecretError(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"environment variable {name} is not set")
        self.name = name


def env_refs(value: Any) -> list[str]:
    """Names of every environment variable referenced anywhere inside ``value``."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)  # exact types first: config dumps are dicts, lists and scalars (no ABC checks)
        if kind is str:
            if "${" in item:
                found.extend(ENV_REF.findall(item))
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is int or kind is float or kind is bool or item is None:
            continue
        elif isinstance(item, str):
            found.extend(ENV_REF.findall(item))
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, Iterable) and not isinstance(item, bytes):
            stack.extend(item)
    return found


class Redactor:
    """Remembers every secret value this process has resolved and masks it in text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def register(self, value: str) -> None:
        if len(value) < MIN_SECRET_LEN or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def redact(self, text: str) -> str:
        """Mask every registered secret and the password of any URL (``scheme://user:***@host``)."""
        if not text:
            return text
        if "://" in text:
            text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern is not None else text

    def redact_data(self, data: Any) -> Any:
        """Redact every string inside JSON-like data, keys included."""
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, Mapping):
            return {self.redact_data(k): self.redact_data(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.redact_data(v) for v in data]
        return data

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None


REDACTOR = Redactor()


def resolve(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace each ``${env:NAME}`` in ``text`` with its value and register that value as secret."""
    env = os.environ if environ is None else environ

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise MissingSecretError(name)
        value = env[name]
        REDACTOR.register(value)
        return value

    return ENV_REF.sub(sub, text)


def missing(names: Iterable[str], environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return sorted({n for n in names if n not in env})
