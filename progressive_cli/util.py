"""Small helpers with no better home."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_async(main: Awaitable[T]) -> T:
    """``asyncio.run(main)``, its result kept out of the task. On the main thread asyncio.run's SIGINT
    handling formats the repr of its finished task twice (Python 3.11: ``signal.getsignal`` builds an
    error message with it), and that repr holds the task's result: ~5 ms each time for a snapshot of
    1,000 agents, more for a large command result."""
    import asyncio

    results: list[T] = []

    async def wrapper() -> None:
        results.append(await main)

    asyncio.run(wrapper())
    return results[0]


def is_iso_time(text: str) -> bool:
    """True for an ISO-8601 date or time such as ``2026-12-01T09:00:00Z``."""
    from datetime import datetime

    try:
        datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def is_zombie(pid: int) -> bool:
    """Whether process ``pid`` has exited but is not yet reaped by its parent: ``kill(pid, 0)`` still
    succeeds, yet it runs nothing (Linux ``/proc``; False where that cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def log_line(fmt: str, component: str, message: str, *, level: str = "info", **fields: object) -> str:
    """One structured log line, as ``logging.format`` asks: ``text`` (``TIME [LEVEL ]COMPONENT: message``,
    the level shown when it is not info) or ``json`` (one object a line: time, level, component, pid,
    message and ``fields``). Secrets are redacted and newlines folded either way."""
    import json
    from datetime import UTC, datetime

    from progressive_cli.config.secrets import REDACTOR
    from progressive_cli.errors import one_line

    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if fmt == "json":
        record = {"time": stamp, "level": level, "component": component, "pid": os.getpid(),
                  "message": message, **{k: v for k, v in fields.items() if v is not None}}
        return json.dumps(REDACTOR.redact_data(record), default=str, separators=(",", ":"))
    mark = "" if level == "info" else f"{level.upper()} "
    return one_line(REDACTOR.redact(f"{stamp} {mark}{component}: {message}"))


class Periodic:
    """Await ``tick()`` every ``every`` seconds until :meth:`cancel` or until it returns False, with no task
    in between: a timer until the first tick is due. A lease keeper whose run ends sooner (most runs)
    costs one timer instead of a task."""

    def __init__(self, every: float, tick: Callable[[], Awaitable[bool]]) -> None:
        import asyncio

        self._loop = asyncio.get_running_loop()
        self._every = every
        self._tick = tick
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(every, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._task = self._loop.create_task(self._run())

    async def _run(self) -> None:
        if await self._tick() and self._task is not None:
            self._timer = self._loop.call_later(self._every, self._fire)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
