"""Call metrics per agent instance: counts, latency sum and a log-bucketed latency histogram.

The MCA records every call in memory (a few dict updates: the routed-call budget is 20 µs) and
flushes the deltas to the state store about once a second and when it closes. The store merges
the deltas of every process, so the CLI and the dashboard see the totals of all of them.

Latencies go in geometric buckets growing by 10% from 10 µs, so a percentile read back from the
histogram is within 5% of the true value (the bucket's geometric midpoint is reported), however
many calls were made. Average latency is exact (sum / count).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_BASE_MS = 0.01
_GROWTH = 1.1
_LOG_GROWTH = math.log(_GROWTH)


def bucket_of(latency_ms: float) -> int:
    if latency_ms <= _BASE_MS:
        return 0
    return int(math.log(latency_ms / _BASE_MS) / _LOG_GROWTH) + 1


def bucket_value(index: int) -> float:
    """A latency representative of bucket ``index``: the geometric midpoint of its bounds."""
    if index == 0:
        return _BASE_MS
    return _BASE_MS * _GROWTH ** (index - 0.5)


def percentile(buckets: Mapping[int | str, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram, or None when it is empty."""
    counts = sorted((int(k), v) for k, v in buckets.items() if v > 0)
    total = sum(v for _, v in counts)
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in counts:
        seen += count
        if seen >= rank:
            return round(bucket_value(index), 3)
    return round(bucket_value(counts[-1][0]), 3)  # pragma: no cover - the loop always returns


@dataclass
class Tally:
    total: int = 0
    success: int = 0
    failure: int = 0
    latency_sum_ms: float = 0.0
    buckets: dict[int, int] = field(default_factory=dict)
    last_error: str | None = None
    last_call_at: float | None = None

    def add(self, ok: bool, latency_ms: float, at: float, error: str | None) -> None:
        self.total += 1
        if ok:
            self.success += 1
        else:
            self.failure += 1
            self.last_error = error
        self.latency_sum_ms += latency_ms
        index = bucket_of(latency_ms)
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.last_call_at = at


class Metrics:
    """Deltas since the last flush, per (agent, instance)."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], Tally] = {}

    def record(self, agent: str, instance: str, ok: bool, latency_ms: float, at: float,
               error: str | None = None) -> None:
        tally = self.pending.get((agent, instance))
        if tally is None:
            tally = self.pending[(agent, instance)] = Tally()
        tally.add(ok, latency_ms, at, error)

    def take(self) -> dict[tuple[str, str], Tally]:
        pending, self.pending = self.pending, {}
        return pending


def summarise_cached(cache: dict[Any, tuple[Any, dict[str, Any]]], key: Any, row: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`summarise` for a caller that reports again and again (the dashboard): reused while the row's
    counters have not moved (they only grow: the same total, latency sum, calls in flight and last call
    mean the same histogram)."""
    signature = (row.get("total"), row.get("latency_sum_ms"), row.get("in_flight"), row.get("last_call_at"),
                 row.get("last_error"))
    hit = cache.get(key)
    if hit is None or hit[0] != signature:
        hit = cache[key] = (signature, summarise(row))
    return hit[1]


def summarise(row: Mapping[str, Any]) -> dict[str, Any]:
    """The figures an operator reads, from a stored metrics row (totals and histogram)."""
    total = int(row.get("total") or 0)
    buckets = row.get("buckets") or {}
    return {
        "calls": total,
        "success": int(row.get("success") or 0),
        "failure": int(row.get("failure") or 0),
        "success_rate": round(int(row.get("success") or 0) / total, 4) if total else None,
        "avg_ms": round(float(row.get("latency_sum_ms") or 0) / total, 3) if total else None,
        "p95_ms": percentile(buckets, 0.95),
        "in_flight": int(row.get("in_flight") or 0),
        "last_error": row.get("last_error"),
        "last_call_at": row.get("last_call_at"),
    }
