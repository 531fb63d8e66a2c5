"""The reference receiving app: what a third-party app does with our webhooks, done properly.

It verifies every request with the unmodified ``standardwebhooks`` package, deduplicates by
delta id, notices a gap in a consent's sequence the moment it opens, and measures end-to-end
latency. The demo and the tests drive it; its counters are what they assert on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from portability.delivery.payload import (
    Delta,
    DeltaEvent,
    PayloadError,
    UnknownEventTypeError,
    parse_delta_event,
)
from portability.delivery.signing import validate_secret
from portability.receiver.tracking import ConsentLog, LatencyRecorder, SequenceRange
from portability.wire.notifications import AUTHORIZATION_REMOVED

__all__ = ["WEBHOOK_PATH", "ReceiverStats", "ReceivingApp", "Removal"]

_log = logging.getLogger(__name__)

WEBHOOK_PATH: Final = "/webhooks/{app_id}"
# Batches of many deltas exceed aiohttp's 1 MiB default; a real app would size this to its own.
_MAX_BODY_BYTES: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    """A snapshot of what the receiver has seen.

    Attributes:
        requests: Every request to the webhook route, whatever its answer.
        deltas_received: Unique deltas accepted (by delta id).
        duplicates: Deltas received again after their id was already accepted.
        verification_failures: Requests whose signature or timestamp did not verify (401).
        gaps_detected: Times a delta arrived with a sequence beyond the highest seen plus one.
        missing_sequences: Sequence numbers still absent below each consent's highest, summed.
        latency_p50_ms: Median of receipt time minus ``occurred_at``, or None without data.
        latency_p95_ms: 95th percentile of the same.
        latency_p99_ms: 99th percentile of the same.
        injected_failures: Requests answered with a failure queued by ``fail_next``.
        malformed_payloads: Verified requests whose body was not a valid delta event (400).
        unknown_app_requests: Requests for an app the receiver does not know (404).
        other_events: Verified events of a type other than ``portability.delta`` (accepted).
        authorizations_removed: Unique ``authorization.removed`` events (by webhook id).
        deltas_after_removal: Deltas that arrived after their consent's removal event: a
            recipient must never see one.
    """

    requests: int
    deltas_received: int
    duplicates: int
    verification_failures: int
    gaps_detected: int
    missing_sequences: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    injected_failures: int = 0
    malformed_payloads: int = 0
    unknown_app_requests: int = 0
    other_events: int = 0
    authorizations_removed: int = 0
    deltas_after_removal: int = 0


@dataclass(frozen=True, slots=True)
class Removal:
    """An ``authorization.removed`` event: the consent ended and no more deltas come.

    Attributes:
        event_id: The ``webhook-id``; the same on every redelivery of the event.
        consent_id: The consent that ended.
        reason: user_revoked, app_revoked, expired, app_disabled, account_deleted or policy.
        received_at: Receipt time, seconds since the epoch.
    """

    event_id: str
    consent_id: str
    reason: str
    received_at: float


@dataclass(frozen=True, slots=True)
class _Injection:
    status: int
    retry_after: float | None


class _Rejection(Exception):
    """Ends a request with an error answer; carries what the log line and the body say."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


class ReceivingApp:
    """A webhook recipient for one or more apps, with counters for tests and the demo.

    Args:
        clock: Wall-clock seconds since the epoch, used as receipt time for latency.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._verifiers: dict[str, Webhook] = {}
        self._consents: dict[str, ConsentLog] = {}
        self._ids: set[str] = set()
        self._latency = LatencyRecorder()
        self._injections: collections.deque[_Injection] = collections.deque()
        self._other_events: list[dict[str, Any]] = []
        self._removals: dict[str, Removal] = {}
        self._last_delta_at: dict[str, float] = {}
        self._counts: collections.Counter[str] = collections.Counter()
        self._missing = 0
        self._changed = asyncio.Condition()

    def add_app(self, app_id: str, secret: str) -> None:
        """Accept deliveries for ``app_id`` signed with ``secret``; replaces an earlier secret.

        Args:
            app_id: The app, as it appears in the webhook path.
            secret: Its ``whsec_`` signing secret.

        Raises:
            SigningError: ``secret`` is not ``whsec_`` followed by non-empty base64.
        """
        # Checked as the sender checks it, so a secret works on both sides or on neither.
        validate_secret(secret)
        self._verifiers[app_id] = Webhook(secret)

    def web_app(self) -> web.Application:
        """Build an aiohttp application serving ``POST /webhooks/{app_id}``.

        Each call builds a new one over the same state, so a test can stop and restart the
        endpoint without losing what was received.
        """
        application = web.Application(client_max_size=_MAX_BODY_BYTES)
        application.router.add_post(WEBHOOK_PATH, self._handle)
        return application

    def fail_next(self, count: int, status: int = 503, retry_after: float | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` and record nothing of them.

        Calls queue up: ``fail_next(1, 429)`` then ``fail_next(2)`` fails three requests.

        Args:
            count: How many requests to fail.
            status: An HTTP error status (400-599).
            retry_after: Seconds to send as ``Retry-After``; fractions are kept, for fast tests.

        Raises:
            ValueError: A negative count or retry_after, or a status that is not an error.
        """
        if count < 0 or not 400 <= status <= 599:
            raise ValueError(f"fail_next needs count >= 0 and a 4xx/5xx status, not {status}")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must not be negative")
        self._injections.extend([_Injection(status, retry_after)] * count)

    def stats(self) -> ReceiverStats:
        """A snapshot of the counters and latency percentiles."""
        counts = self._counts
        return ReceiverStats(
            requests=counts["requests"],
            deltas_received=len(self._ids),
            duplicates=counts["duplicates"],
            verification_failures=counts["verification_failures"],
            gaps_detected=counts["gaps_detected"],
            missing_sequences=self._missing,
            latency_p50_ms=self._latency.percentile(50),
            latency_p95_ms=self._latency.percentile(95),
            latency_p99_ms=self._latency.percentile(99),
            injected_failures=counts["injected_failures"],
            malformed_payloads=counts["malformed_payloads"],
            unknown_app_requests=counts["unknown_app_requests"],
            other_events=len(self._other_events),
            authorizations_removed=len(self._removals),
            deltas_after_removal=counts["deltas_after_removal"],
        )

    def deltas(self, consent_id: str) -> list[Delta]:
        """The unique deltas of a consent, in arrival order (empty for an unknown consent)."""
        log = self._consents.get(consent_id)
        return list(log.deltas) if log else []

    def received_ids(self) -> set[str]:
        """The ids of every unique delta received."""
        return set(self._ids)

    def consent_ids(self) -> list[str]:
        """The consents that delivered at least one delta, in order of first arrival."""
        return list(self._consents)

    def detected_gaps(self, consent_id: str) -> list[SequenceRange]:
        """Every gap as it was detected live, as inclusive ``(first, last)`` ranges."""
        log = self._consents.get(consent_id)
        return list(log.detected_gaps) if log else []

    def missing_ranges(self, consent_id: str) -> list[SequenceRange]:
        """Sequence ranges still missing below the consent's highest sequence received."""
        log = self._consents.get(consent_id)
        return log.missing_ranges() if log else []

    def removal(self, consent_id: str) -> Removal | None:
        """The ``authorization.removed`` event received for a consent, if any."""
        return self._removals.get(consent_id)

    def last_delta_at(self, consent_id: str) -> float | None:
        """Receipt time of the latest request that carried deltas of a consent."""
        return self._last_delta_at.get(consent_id)

    def other_events(self) -> list[dict[str, Any]]:
        """Verified events of types other than ``portability.delta``, in arrival order."""
        return list(self._other_events)

    async def wait_for(self, predicate: Callable[[ReceiverStats], bool], timeout_s: float) -> bool:
        """Wait until ``predicate(stats)`` holds, re-checking after every request.

        Args:
            predicate: Tested on a fresh snapshot now and after each request.
            timeout_s: How long to wait at most.

        Returns:
            True once the predicate holds; False if ``timeout_s`` passed first.
        """
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: predicate(self.stats()))
        except TimeoutError:
            return False
        return True

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received_at = self._clock()
        self._counts["requests"] += 1
        try:
            return await self._respond(request, received_at)
        except _Rejection as rejection:
            return self._reject(request, rejection)
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def _respond(self, request: web.Request, received_at: float) -> web.StreamResponse:
        if self._injections:
            return self._injected(request, self._injections.popleft())
        app_id = request.match_info["app_id"]
        verifier = self._verifiers.get(app_id)
        if verifier is None:
            self._counts["unknown_app_requests"] += 1
            raise _Rejection(404, "unknown_app", "no app with this id is registered here")
        body = await request.read()
        self._verify(verifier, body, request)
        event = self._parse(body, app_id, request.headers.get("webhook-id", ""), received_at)
        if event is not None:
            self._record(event, received_at)
        return web.Response(status=204)

    def _verify(self, verifier: Webhook, body: bytes, request: web.Request) -> None:
        try:
            verifier.verify(body, dict(request.headers), json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:
            # ValueError: the package does not wrap a malformed signature or a non-UTF-8 body.
            self._counts["verification_failures"] += 1
            raise _Rejection(401, "verification_failed", str(exc) or type(exc).__name__) from exc

    def _parse(
        self, body: bytes, app_id: str, event_id: str, received_at: float
    ) -> DeltaEvent | None:
        try:
            event = parse_delta_event(body)
        except UnknownEventTypeError as exc:
            # Recipients accept event types they do not know yet; keep it for inspection.
            self._other_events.append(exc.document)
            if exc.event_type == AUTHORIZATION_REMOVED:
                self._record_removal(exc.document, event_id, received_at)
            return None
        except PayloadError as exc:
            self._counts["malformed_payloads"] += 1
            raise _Rejection(400, "malformed_payload", str(exc)) from exc
        if event.app_id != app_id:
            self._counts["malformed_payloads"] += 1
            raise _Rejection(400, "wrong_app", f"event is for app {event.app_id!r}")
        return event

    def _record_removal(self, document: dict[str, Any], event_id: str, received_at: float) -> None:
        data = document.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("consent_id"), str):
            self._counts["malformed_payloads"] += 1
            raise _Rejection(400, "malformed_payload", "data.consent_id must be a string")
        consent_id: str = data["consent_id"]
        if consent_id in self._removals:
            self._counts["duplicates"] += 1
            return
        self._removals[consent_id] = Removal(
            event_id=event_id,
            consent_id=consent_id,
            reason=str(data.get("reason")),
            received_at=received_at,
        )

    def _record(self, event: DeltaEvent, received_at: float) -> None:
        self._last_delta_at[event.consent_id] = received_at
        if event.consent_id in self._removals:
            self._counts["deltas_after_removal"] += len(event.deltas)
        log = self._consents.setdefault(event.consent_id, ConsentLog())
        for delta in event.deltas:
            if delta.id in self._ids:
                self._counts["duplicates"] += 1
                continue
            self._ids.add(delta.id)
            self._latency.add((received_at - delta.occurred_at.timestamp()) * 1000)
            gap, missing_change = log.add(delta)
            self._missing += missing_change
            if gap is not None:
                self._counts["gaps_detected"] += 1
                _log.warning(
                    "gap in consent %s: sequences %d-%d missing before %d",
                    event.consent_id,
                    gap[0],
                    gap[1],
                    delta.sequence,
                    extra={"consent_id": event.consent_id, "app_id": event.app_id, "gap": gap},
                )

    def _injected(self, request: web.Request, injection: _Injection) -> web.Response:
        self._counts["injected_failures"] += 1
        _log.info(
            "answering %d to a webhook request for app %s, as fail_next asked",
            injection.status,
            request.match_info["app_id"],
            extra={"app_id": request.match_info["app_id"], "status": injection.status},
        )
        headers = {}
        if injection.retry_after is not None:
            headers["Retry-After"] = _format_seconds(injection.retry_after)
        return web.json_response(
            {"error": "injected_failure", "detail": "failure injected by fail_next"},
            status=injection.status,
            headers=headers,
        )

    def _reject(self, request: web.Request, rejection: _Rejection) -> web.Response:
        app_id = request.match_info.get("app_id", "")
        _log.warning(
            "rejected webhook request for app %s: %s (%d): %s",
            app_id,
            rejection.reason,
            rejection.status,
            rejection.detail,
            extra={
                "app_id": app_id,
                "status": rejection.status,
                "reason": rejection.reason,
                "webhook_id": request.headers.get("webhook-id"),
            },
        )
        return web.json_response(
            {"error": rejection.reason, "detail": rejection.detail}, status=rejection.status
        )


def _format_seconds(seconds: float) -> str:
    # Whole seconds as HTTP specifies them; a fraction only when a test asked for one.
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))
