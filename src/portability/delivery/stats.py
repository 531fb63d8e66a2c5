"""Counters an operator (and the demo) reads off a running delivery worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeliveryStats"]


@dataclass(slots=True)
class DeliveryStats:
    requests: int = 0
    deltas_delivered: int = 0
    failures: int = 0
    retries: int = 0
    dead_lettered: int = 0
    dropped_stopped_consent: int = 0
    notifications_delivered: int = 0
    parked: int = 0  # records copied to the retry topic
    parked_loaded: int = 0  # parked records read back after a restart or rebalance
    endpoints_disabled: int = 0
    last_sequence: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "deltas_delivered": self.deltas_delivered,
            "failures": self.failures,
            "retries": self.retries,
            "dead_lettered": self.dead_lettered,
            "dropped_stopped_consent": self.dropped_stopped_consent,
            "notifications_delivered": self.notifications_delivered,
            "parked": self.parked,
            "parked_loaded": self.parked_loaded,
            "endpoints_disabled": self.endpoints_disabled,
            "consents_delivered_to": len(self.last_sequence),
        }
