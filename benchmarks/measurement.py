"""One timed pass over the benchmark's changes, and the settings every benchmark runs with."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portability.settings import Settings

__all__ = ["InvalidRunError", "Measurement", "bench_settings"]


class InvalidRunError(Exception):
    """A measured path did not do the work it was given, so its rate means nothing."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """Changes handled by one path in one run; ``deltas`` where the path matches consents."""

    path: str
    run: int
    changes: int
    seconds: float
    decoded: int
    complete: bool = True  # False: the run timed out, and these are the figures so far
    seen: int | None = None  # the path's own count of changes, where it keeps one
    deltas: int | None = None
    start_s: float | None = None
    consents_s: float | None = None
    cpu_s: float | None = None  # the bench process's CPU over ``seconds``, where measured

    @property
    def rate(self) -> float:
        return self.changes / self.seconds if self.seconds > 0 else 0.0


def bench_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings on topics and groups of their own, six partitions, the usual Kafka timeouts.

    A fresh prefix per run keeps runs (and the baseline) from reading each other's data.
    """
    unique = uuid.uuid4().hex[:10]
    fields: dict[str, Any] = {
        "data_dir": data_dir,
        "topic_prefix": f"bench{unique}.",
        "partitions": 6,
        "matcher_group": f"bench-matcher-{unique}",
        "delivery_group": f"bench-delivery-{unique}",
        "kafka_session_timeout_ms": 6_000,
        "kafka_heartbeat_interval_ms": 1_000,
        "kafka_rebalance_timeout_ms": 5_000,
    }
    return Settings(**(fields | overrides))
