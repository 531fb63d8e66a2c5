"""Counters an operator (and the demo) reads off a running matcher."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["MatcherStats"]


@dataclass(slots=True)
class MatcherStats:
    changes_seen: int = 0
    changes_decoded: int = 0
    changes_matched: int = 0
    deltas_emitted: int = 0
    consent_updates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    last_batch_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
