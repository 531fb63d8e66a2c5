"""Counters an operator (and the demo) reads off a running delivery worker."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["LATENCY_BUCKETS_S", "DeliveryStats", "LatencyHistogram"]

# Upper bounds of the end-to-end latency buckets: sub-second when all is well, up to the
# retry schedule's hours when an endpoint was down (Prometheus adds +Inf).
LATENCY_BUCKETS_S = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 36000.0,
)  # fmt: skip


@dataclass(slots=True)
class LatencyHistogram:
    """Seconds from a change's ``occurred_at`` to its delta's delivery (the app's 2xx).

    Kept as bucket counts (not samples) so that a long-running worker holds a fixed amount of
    memory; the metrics endpoint exports it as a Prometheus histogram.
    """

    bounds: tuple[float, ...] = LATENCY_BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    total_s: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)  # clocks of platform and worker may disagree slightly
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total_s += seconds
        self.count += 1

    def observe_since(self, moments: Iterable[datetime], now: float) -> None:
        for moment in moments:
            self.observe(now - moment.timestamp())

    def observe_since_ms(self, moments_ms: Iterable[int], now: float) -> None:
        """:meth:`observe_since` of epoch milliseconds (as delivery heads carry them)."""
        # observe() inlined: the worker runs this for every delta it delivers.
        counts, bounds, where = self.counts, self.bounds, bisect.bisect_left
        total, count = 0.0, 0
        for moment_ms in moments_ms:
            seconds = now - moment_ms / 1000
            if seconds < 0.0:
                seconds = 0.0
            counts[where(bounds, seconds)] += 1
            total += seconds
            count += 1
        self.total_s += total
        self.count += count

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at or below it)``, ending with ``(inf, count)``."""
        running, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


@dataclass(slots=True)
class DeliveryStats:
    requests: int = 0
    deltas_delivered: int = 0
    failures: int = 0
    retries: int = 0
    dead_lettered: int = 0
    dropped_stopped_consent: int = 0
    notifications_delivered: int = 0
    snapshots_delivered: int = 0  # last pages delivered: hand-overs made
    dropped_in_snapshot: int = 0  # deltas a delivered snapshot already held
    parked: int = 0  # records copied to the retry topic
    parked_loaded: int = 0  # parked records read back after a restart or rebalance
    spilled: int = 0  # parked records let out of memory (spilled lanes)
    reloaded: int = 0  # spilled records read back from the retry topic
    endpoints_disabled: int = 0
    dropped_delivered: int = 0  # read again after a takeover, delivered before it (ledger)
    log_entries: int = 0  # attempts produced to the message log (delivery.log)
    log_entries_dropped: int = 0  # attempts not logged: too many waited for the broker
    ledger_heads_unreadable: int = 0  # recorded heads that did not decode (skipped)
    ledger_heads_read: int = 0  # delivery.ledger records read (loading partitions taken over)
    last_sequence: dict[str, int] = field(default_factory=dict)
    # (app_id, "delta" | "notification", "delivered" | "dead_lettered") -> records
    finished_by_app: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # (app_id, True for a 2xx) -> webhook requests
    requests_by_app: dict[tuple[str, bool], int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def finished(self, app_id: str, kind: str, outcome: str, count: int) -> None:
        key = (app_id, kind, outcome)
        self.finished_by_app[key] = self.finished_by_app.get(key, 0) + count

    def requested(self, app_id: str, ok: bool) -> None:
        self.requests_by_app[(app_id, ok)] = self.requests_by_app.get((app_id, ok), 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "deltas_delivered": self.deltas_delivered,
            "failures": self.failures,
            "retries": self.retries,
            "dead_lettered": self.dead_lettered,
            "dropped_stopped_consent": self.dropped_stopped_consent,
            "notifications_delivered": self.notifications_delivered,
            "snapshots_delivered": self.snapshots_delivered,
            "dropped_in_snapshot": self.dropped_in_snapshot,
            "parked": self.parked,
            "parked_loaded": self.parked_loaded,
            "spilled": self.spilled,
            "reloaded": self.reloaded,
            "endpoints_disabled": self.endpoints_disabled,
            "dropped_delivered": self.dropped_delivered,
            "log_entries": self.log_entries,
            "log_entries_dropped": self.log_entries_dropped,
            "ledger_heads_unreadable": self.ledger_heads_unreadable,
            "ledger_heads_read": self.ledger_heads_read,
            "consents_delivered_to": len(self.last_sequence),
        }
