"""Health history read back: per-check trends and the sparklines that draw them (pure: no I/O, no CLI)."""

from __future__ import annotations

from typing import Any

SPARKS = "▁▂▃▄▅▆▇█"


def trends(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Availability (healthy or degraded), average and worst response time, and the series, per check."""
    by: dict[str, list[dict[str, Any]]] = {}
    for row in history:
        by.setdefault(row["name"], []).append(row)
    out = []
    for name in sorted(by):
        runs = by[name]
        up = sum(1 for r in runs if r["status"] in ("healthy", "degraded"))
        times = [float(r["response_ms"] or 0.0) for r in runs]
        out.append({"name": name, "runs": len(runs), "availability_pct": round(100 * up / len(runs), 2),
                    "avg_ms": round(sum(times) / len(times), 3), "max_ms": round(max(times), 3),
                    "last": runs[-1]["status"], "response_series": times})
    return out


def sparkline(values: list[float], width: int = 40) -> str:
    """``values`` as bars ``▁`` to ``█`` scaled between their min and max; at most ``width`` (slice means)."""
    if not values:
        return ""
    if len(values) > width:  # the mean of each of `width` slices
        step = len(values) / width
        values = [sum(s) / len(s) for s in (values[int(i * step):max(int(i * step) + 1, int((i + 1) * step))]
                                            for i in range(width))]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - low) / span * (len(SPARKS) - 1)))] for v in values)
