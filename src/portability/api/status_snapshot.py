"""What the operator status page shows at one moment, and its ``/status.json`` shape.

:class:`StatusSnapshot` and its rows (groups, apps, failing endpoints, problems) are plain
frozen values: :class:`~portability.api.operator_status.OperatorStatus` gathers them from the
API process's sources, :mod:`portability.api.status_page` renders them as HTML, and ``as_dict``
writes them as JSON for scripts, so the page and the JSON always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from portability.ops.dead_letters.counts import DeadLetterSummary
from portability.ops.lag_sampler import LagPoint, LagView
from portability.ops.store_counts import StoreCounts

__all__ = [
    "AppHealth",
    "EndpointProblem",
    "GroupHealth",
    "Health",
    "Problem",
    "Severity",
    "StatusSnapshot",
]

Severity = Literal["critical", "warning"]
Health = Literal["ok", "warning", "critical", "unknown"]


@dataclass(frozen=True, slots=True)
class Problem:
    severity: Severity
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "message": self.message}


@dataclass(frozen=True, slots=True)
class GroupHealth:
    """A consumer group now, and its lag over the chart's window."""

    group: str
    status: str
    reason: str
    members: int | None
    lag: int | None  # PARKED partitions left out: see parked
    lag_seconds: float | None
    history: tuple[LagPoint, ...]
    parked: int = 0  # records on PARKED partitions (retries waiting on purpose)
    next_retry_at: float | None = None  # the first of their retries due, if known

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "status": self.status,
            "reason": self.reason,
            "members": self.members,
            "lag": self.lag,
            "lag_seconds": _rounded(self.lag_seconds),
            "parked": self.parked,
            "next_retry_at": None if self.next_retry_at is None else _iso(self.next_retry_at),
            "history": [
                {
                    "at": _iso(point.at),
                    "lag": point.lag,
                    "lag_seconds": _rounded(point.lag_seconds),
                    "status": point.status,
                }
                for point in self.history
            ],
        }


@dataclass(frozen=True, slots=True)
class AppHealth:
    """Delivery to one app, over the consents the delivery status board knows."""

    app_id: str
    name: str
    webhook_url: str | None
    enabled: bool | None  # None: not in the store (known from delivery status only)
    active_consents: int
    consents_delivered_to: int  # consents with a delivery status
    delivered: int  # deltas delivered: each consent's last delivered sequence, summed
    dead_letters: int  # delivery-stage letters of this app
    failing_consents: int  # failing now, endpoint not disabled
    disabled_consents: int  # held because the endpoint is disabled
    last_delivered_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None

    @property
    def success_ratio(self) -> float | None:
        """Delivered over delivered plus dead-lettered; None before either happened."""
        finished = self.delivered + self.dead_letters
        return None if finished == 0 else self.delivered / finished

    @property
    def state(self) -> str:
        if self.disabled_consents:
            return "disabled"
        if self.failing_consents:
            return "failing"
        if self.enabled is False:
            return "app disabled"
        return "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "name": self.name,
            "webhook_url": self.webhook_url,
            "enabled": self.enabled,
            "state": self.state,
            "active_consents": self.active_consents,
            "consents_delivered_to": self.consents_delivered_to,
            "delivered": self.delivered,
            "dead_letters": self.dead_letters,
            "success_ratio": None if self.success_ratio is None else round(self.success_ratio, 4),
            "failing_consents": self.failing_consents,
            "disabled_consents": self.disabled_consents,
            "last_delivered_at": _iso_datetime(self.last_delivered_at),
            "last_error": self.last_error,
            "last_error_at": _iso_datetime(self.last_error_at),
        }


@dataclass(frozen=True, slots=True)
class EndpointProblem:
    """An app's endpoint that fails or is disabled, with its latest error."""

    app_id: str
    webhook_url: str | None
    state: Literal["disabled", "failing"]
    consents: int  # consents whose delivery waits on it
    last_error: str | None
    last_status: int | None
    last_response: str | None
    updated_at: datetime  # of the latest failure

    def as_dict(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "webhook_url": self.webhook_url,
            "state": self.state,
            "consents": self.consents,
            "last_error": self.last_error,
            "last_status": self.last_status,
            "last_response": self.last_response,
            "updated_at": _iso_datetime(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """Everything the status page shows at one moment."""

    at: float
    health: Health
    problems: tuple[Problem, ...]
    kafka: str | None  # the bootstrap servers; None: no Kafka configured
    lag: LagView
    history_s: float
    groups: tuple[GroupHealth, ...]
    apps: tuple[AppHealth, ...]
    apps_left_out: int
    endpoints: tuple[EndpointProblem, ...]
    dead_letters: DeadLetterSummary
    store: StoreCounts | None  # None: the store could not be read
    delivery_status_available: bool

    @property
    def kafka_reachable(self) -> bool | None:
        """False while the latest attempt to sample lag failed (the broker down, or not
        answering); None with no Kafka configured or before the first attempt."""
        if self.kafka is None or (self.lag.latest is None and self.lag.error is None):
            return None
        return self.lag.error is None

    def as_dict(self) -> dict[str, Any]:
        """The ``/status.json`` document (its shape is in docs/operations.md)."""
        letters = self.dead_letters
        return {
            "at": _iso(self.at),
            "health": self.health,
            "problems": [problem.as_dict() for problem in self.problems],
            "kafka": {
                "bootstrap": self.kafka,
                "reachable": self.kafka_reachable,
                "lag_sampled_at": None if self.lag.latest is None else _iso(self.lag.latest.at),
                "lag_error": self.lag.error,
                "delivery_status": self.delivery_status_available,
            },
            "history_seconds": self.history_s,
            "groups": [group.as_dict() for group in self.groups],
            "apps": [app.as_dict() for app in self.apps],
            "apps_left_out": self.apps_left_out,
            "endpoints": [endpoint.as_dict() for endpoint in self.endpoints],
            "dead_letters": {
                "following": letters.following,
                "total": letters.letters,
                "replayed": letters.redeliveries,
                "by_stage": letters.by_stage(),
                "by_app": letters.by_app(),
                "by_reason": dict(letters.by_reason),
                "latest": [brief.as_dict() for brief in reversed(letters.latest)],
                "error": letters.error,
            },
            "consents": None if self.store is None else self.store.by_status(),
            "outbox_pending": None if self.store is None else self.store.outbox_pending,
        }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="milliseconds")


def _iso_datetime(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="milliseconds")
