"""Per-endpoint protection: concurrency and rate limits, a circuit breaker, and disabling.

Each app's webhook endpoint gets its own state, so one that fails or stalls holds back only
its own consents. After ``delivery_circuit_failures`` consecutive failures the circuit opens:
no request goes to the endpoint until ``delivery_circuit_open_s`` passed, then a single probe
decides (success closes it; failure opens it again for twice as long, at most ten times the
setting). An endpoint that answers 410 Gone, whose URL the egress rules refuse as written, or
that fails without a success for ``delivery_disable_after_s``, is disabled until its app
changes its webhook URL.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from portability.delivery.sender import Outcome
from portability.settings import Settings

__all__ = ["CircuitState", "Endpoint", "Endpoints"]

log = logging.getLogger(__name__)

_MAX_OPEN_FACTOR = 10


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class Endpoint:
    """What the worker knows of one app's endpoint."""

    app_id: str
    url: str
    slots: asyncio.Semaphore
    state: CircuitState = CircuitState.CLOSED
    consecutive_failures: int = 0
    failing_since: float | None = None  # monotonic time of the first failure of the streak
    opened_at: float = 0.0
    open_for_s: float = 0.0
    probing: bool = False
    disabled_reason: str | None = None
    last_error: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    tokens: float = 0.0  # rate limit: requests that may start now
    refilled_at: float = 0.0

    @property
    def disabled(self) -> bool:
        return self.disabled_reason is not None


class Endpoints:
    """The endpoint state of every app this worker delivers to."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._by_app: dict[str, Endpoint] = {}
        self.on_disabled: list[Callable[[Endpoint], None]] = []

    def get(self, app_id: str, url: str) -> Endpoint:
        """The endpoint of ``app_id`` at ``url``; a new URL starts afresh (and re-enables)."""
        endpoint = self._by_app.get(app_id)
        if endpoint is None or endpoint.url != url:
            if endpoint is not None:
                endpoint.changed.set()  # wake lanes waiting on the old endpoint
            endpoint = Endpoint(
                app_id, url, asyncio.Semaphore(self._settings.delivery_endpoint_concurrency)
            )
            self._by_app[app_id] = endpoint
        return endpoint

    @property
    def paced(self) -> bool:
        """Whether requests wait for a rate limit (:meth:`pace` returns at once when not)."""
        return self._settings.delivery_endpoint_rate_per_s > 0

    def all(self) -> list[Endpoint]:
        return list(self._by_app.values())

    async def pace(self, endpoint: Endpoint) -> None:
        """Wait for the endpoint's rate limit (a token bucket holding one second's worth)."""
        rate = self._settings.delivery_endpoint_rate_per_s
        if rate <= 0:
            return
        while True:
            now = self._clock()
            elapsed = now - endpoint.refilled_at if endpoint.refilled_at else rate
            endpoint.tokens = min(rate, endpoint.tokens + elapsed * rate)
            endpoint.refilled_at = now
            if endpoint.tokens >= 1:
                endpoint.tokens -= 1
                return
            await asyncio.sleep((1 - endpoint.tokens) / rate)

    def wait_s(self, endpoint: Endpoint) -> float:
        """Seconds before a request may go to ``endpoint`` (0: now); inf when disabled."""
        if endpoint.disabled:
            return float("inf")
        if endpoint.state is CircuitState.CLOSED:
            return 0.0
        remaining = self._open_for_s(endpoint)
        if endpoint.state is CircuitState.OPEN and remaining <= 0:
            endpoint.state = CircuitState.HALF_OPEN
        if endpoint.state is CircuitState.HALF_OPEN and not endpoint.probing:
            endpoint.probing = True  # this caller is the probe
            return 0.0
        # Others wait for the probe's verdict (or the rest of the open period).
        return max(remaining, self._settings.delivery_circuit_open_s / 10)

    def refusing(self, endpoint: Endpoint) -> bool:
        """Whether no request may go to ``endpoint`` now (disabled, or its circuit open):
        :meth:`wait_s` without making the caller the probe."""
        if endpoint.disabled:
            return True
        return endpoint.state is CircuitState.OPEN and self._open_for_s(endpoint) > 0

    def _open_for_s(self, endpoint: Endpoint) -> float:
        """Seconds left of the circuit's open period (negative: over)."""
        return endpoint.opened_at + endpoint.open_for_s - self._clock()

    def record(self, endpoint: Endpoint, outcome: Outcome) -> None:
        """Update the circuit and the failure streak with one attempt's outcome."""
        was_probe, endpoint.probing = endpoint.probing, False
        if outcome.ok:
            self._close(endpoint)
            return
        now = self._clock()
        endpoint.consecutive_failures += 1
        endpoint.last_error = outcome.reason
        if endpoint.failing_since is None:
            endpoint.failing_since = now
        if outcome.endpoint_gone:
            self._disable(endpoint, f"the endpoint answered 410 Gone: {outcome.reason}")
        elif outcome.endpoint_refused:
            self._disable(
                endpoint, f"{outcome.reason}: the app must set a webhook URL the rules allow"
            )
        elif now - endpoint.failing_since >= self._settings.delivery_disable_after_s:
            self._disable(
                endpoint,
                f"failing without a success for {now - endpoint.failing_since:.0f} s "
                f"(last: {outcome.reason})",
            )
        elif was_probe or endpoint.consecutive_failures >= self._settings.delivery_circuit_failures:
            self._open(endpoint, longer=was_probe)

    def _open(self, endpoint: Endpoint, *, longer: bool) -> None:
        base = self._settings.delivery_circuit_open_s
        endpoint.open_for_s = (
            min(endpoint.open_for_s * 2, base * _MAX_OPEN_FACTOR) if longer else base
        )
        endpoint.state = CircuitState.OPEN
        endpoint.opened_at = self._clock()
        log.warning(
            "circuit open: app %s endpoint %s after %d consecutive failures (%s); "
            "probing again in %.0f s",
            endpoint.app_id,
            endpoint.url,
            endpoint.consecutive_failures,
            endpoint.last_error,
            endpoint.open_for_s,
            extra={"app_id": endpoint.app_id, "endpoint": endpoint.url, "circuit": "open"},
        )

    def _close(self, endpoint: Endpoint) -> None:
        if endpoint.state is not CircuitState.CLOSED:
            log.info(
                "circuit closed: app %s endpoint %s answers again",
                endpoint.app_id,
                endpoint.url,
                extra={"app_id": endpoint.app_id, "endpoint": endpoint.url, "circuit": "closed"},
            )
        endpoint.state = CircuitState.CLOSED
        endpoint.consecutive_failures = 0
        endpoint.failing_since = None
        endpoint.open_for_s = 0.0

    def _disable(self, endpoint: Endpoint, reason: str) -> None:
        if endpoint.disabled:
            return
        endpoint.disabled_reason = reason
        # An operator-visible event: the status API shows it to the app, the log to operators.
        log.error(
            "endpoint disabled: app %s endpoint %s: %s; deliveries are parked until the app "
            "sets a new webhook URL",
            endpoint.app_id,
            endpoint.url,
            reason,
            extra={
                "app_id": endpoint.app_id,
                "endpoint": endpoint.url,
                "event": "endpoint.disabled",
            },
        )
        for listener in self.on_disabled:
            listener(endpoint)
