"""Alerts on health checks: fire after ``alerts.failure_threshold`` unhealthy results in a row, resolve
after ``alerts.success_threshold`` good ones (no flapping), remind at most every
``alerts.reminder_interval`` while firing.

The state of each check's alert lives in the store (``alerts``), so `progressive health` from cron
and the daemon share it: an alert fires once, whoever ran the check. Every notice (firing,
reminder, resolved) is an ``integration.alert`` event (the seed's) written with the new state in one
transaction, and goes to the configured sinks: ``log`` (a line on stderr), ``event`` (that event, or
another type), ``webhook`` (Slack-compatible JSON), ``command`` (the notice as JSON on stdin).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from progressive_cli.config.secrets import REDACTOR, resolve
from progressive_cli.errors import one_line
from progressive_cli.store.base import Event
from progressive_cli.util import log_line

ALERT_EVENT = "integration.alert"


def evaluate(settings: Any, states: dict[str, dict[str, Any]], results: list[dict[str, Any]],
             now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """New alert states for ``results`` and the notices they call for (pure: no I/O)."""
    rows, notices = [], []
    for result in results:
        name = result["name"]
        row = dict(states.get(name) or {"check_name": name, "firing": 0, "failures": 0, "successes": 0,
                                         "fired_at": None, "notified_at": None, "resolved_at": None})
        row["status"], row["detail"] = result["status"], result["detail"]
        if result["status"] == "unhealthy":
            row["failures"], row["successes"] = row["failures"] + 1, 0
            if not row["firing"] and row["failures"] >= settings.failure_threshold:
                row["firing"], row["fired_at"], row["notified_at"] = 1, now, now
                notices.append(_notice("firing", row, result))
            elif row["firing"] and now - (row["notified_at"] or 0) >= float(settings.reminder_interval):
                row["notified_at"] = now
                notices.append(_notice("reminder", row, result))
        elif result["status"] in ("healthy", "degraded"):
            row["successes"], row["failures"] = row["successes"] + 1, 0
            if row["firing"] and row["successes"] >= settings.success_threshold:
                row["firing"], row["resolved_at"] = 0, now
                notices.append(_notice("resolved", row, result))
        rows.append(row)
    return rows, notices


def _notice(state: str, row: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    return {"check": row["check_name"], "state": state, "status": result["status"], "detail": result["detail"],
            "fired_at": row["fired_at"], "failures": row["failures"], "at": result["at"]}


async def process(project: Any, store: Any, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluate ``results`` against the stored alert states, save the new ones with their events, and send
    the notices to the sinks. Returns the notices."""
    settings = project.settings.alerts
    rows, notices = evaluate(settings, await store.load_alerts(), results, time.time())
    event_types = [s.event for s in settings.sinks if s.type == "event"]
    events = [Event(t, n, source="progressive/health", subject=n["check"]) for n in notices for t in event_types]
    await store.save_alerts(rows, events)
    for notice in notices:
        await asyncio.gather(*(_send(sink, notice, project.settings.logging.format)
                               for sink in settings.sinks if sink.type != "event"))
    return notices


def _text(notice: dict[str, Any]) -> str:
    mark = {"firing": "ALERT", "reminder": "STILL FAILING", "resolved": "RESOLVED"}[notice["state"]]
    return one_line(REDACTOR.redact(f"[{mark}] {notice['check']}: {notice['status']}: {notice['detail']}"))


async def _send(sink: Any, notice: dict[str, Any], log_format: str = "text") -> None:
    """One sink; a sink that fails is logged, never raised (the next sink and the next check go on). The
    ``log`` sink writes the notice's text, or with ``logging.format: json`` a JSON line with its fields."""
    try:
        if sink.type == "log":
            if log_format == "json":
                level = "info" if notice["state"] == "resolved" else "error"
                sys.stderr.write(log_line("json", "alert", _text(notice), level=level, **notice) + "\n")
            else:
                sys.stderr.write(_text(notice) + "\n")
        elif sink.type == "webhook":
            import httpx

            async with httpx.AsyncClient(timeout=float(sink.timeout)) as client:
                response = await client.post(resolve(sink.url), json={"text": _text(notice), "alert": notice})
                response.raise_for_status()
        elif sink.type == "command":
            argv = [resolve(part) for part in sink.command]
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                        stdout=asyncio.subprocess.DEVNULL,
                                                        stderr=asyncio.subprocess.DEVNULL)
            try:
                async with asyncio.timeout(float(sink.timeout)):
                    await proc.communicate(json.dumps(notice).encode())
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise
    except Exception as exc:
        message = f"alert sink {sink.type} failed: {type(exc).__name__}: {exc}"
        sys.stderr.write((log_line("json", "alert", message, level="error", sink=sink.type, check=notice["check"])
                          if log_format == "json" else one_line(REDACTOR.redact(message))) + "\n")


__all__ = ["ALERT_EVENT", "evaluate", "process"]
