"""gatus-style health conditions on an HTTP answer: ``status == 200``, ``response_time < 500``,
``body.status == "UP"``. They are expressions of the workflow language (safe, no eval) over three
names: ``status`` (int), ``response_time`` (milliseconds) and ``body`` (parsed JSON, or text)."""

from __future__ import annotations

from functools import cache
from typing import Any

from progressive_cli.engine.expressions import Expression, ExpressionError, compile_condition

ROOTS = frozenset({"status", "response_time", "body"})


@cache
def compiled(source: str) -> Expression:
    return compile_condition(source, ROOTS)


def check(conditions: list[str], **answer: Any) -> list[str]:
    """The conditions that do not hold, each as ``condition (status=503, response_time=12ms)``."""
    failed = []
    for source in conditions:
        try:
            ok = bool(compiled(source)(answer))
        except ExpressionError as exc:
            ok, source = False, f"{source}: {exc.message}"
        if not ok:
            failed.append(f"{source} (status={answer.get('status')}, "
                          f"response_time={answer.get('response_time', 0):.0f}ms)")
    return failed
