"""The reference receiving app: what a third-party app does with our webhooks, done properly.

It verifies every request with the unmodified ``standardwebhooks`` package (rejecting
timestamps outside a tolerance, 5 minutes at most), deduplicates by delta id, notices a gap in
a consent's sequence the moment it opens, asks the API to replay a gap that does not fill by
itself (when given the API's URL and the app's key), and measures end-to-end latency. The demo,
``portability receiver`` and the tests drive it; its counters are what they assert on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from portability.receiver.recovery import GapRecovery, RecoveryOptions, ReplayRequestRecord
from portability.receiver.snapshots import ReceivedSnapshot, SnapshotPageError, parse_snapshot_page
from portability.receiver.tracking import ConsentLog, LatencyRecorder, SequenceRange
from portability.webhooks.payload import (
    DELTA_EVENT_TYPE,
    Delta,
    DeltaEvent,
    PayloadError,
    UnknownEventTypeError,
    parse_delta_event,
)
from portability.webhooks.signing import validate_secret
from portability.wire.notifications import AUTHORIZATION_REMOVED, SNAPSHOT

__all__ = [
    "MAX_TOLERANCE_S",
    "WEBHOOK_PATH",
    "ReceivedEvent",
    "ReceiverStats",
    "ReceivingApp",
    "Removal",
]

_log = logging.getLogger(__name__)

WEBHOOK_PATH: Final = "/webhooks/{app_id}"
SINGLE_APP_PATH: Final = "/webhooks"
"""For a receiver of one app: its webhook URL need not name the app (it is known only once
the app is registered, and the URL is given at registration)."""
# Batches of many deltas exceed aiohttp's 1 MiB default; a real app would size this to its own.
_MAX_BODY_BYTES: Final = 16 * 1024 * 1024
LATENCY_WINDOW: Final = 10_000
"""Latencies a receiver that does not retain deltas computes its percentiles over."""
MAX_TOLERANCE_S: Final = 300.0
"""The Standard Webhooks tolerance (5 minutes): ``standardwebhooks`` enforces it in any case,
so a receiver can only tighten it."""


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    """A snapshot of what the receiver has seen.

    Attributes:
        requests: Every request to the webhook route, whatever its answer.
        deltas_received: Unique deltas accepted (by delta id; by sequence when the receiver
            does not retain deltas).
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
        stale_timestamps: Requests whose ``webhook-timestamp`` was outside the tolerance
            (also counted in ``verification_failures``).
        snapshot_pages: Unique ``portability.snapshot`` pages received.
        snapshots_completed: Snapshots whose last page arrived.
        snapshot_records: Records in the snapshot pages received.
        replays_requested: Replays of gaps the API accepted.
        replays_refused: Gaps whose replay the API refused or never accepted.
        gaps_unfilled: Gaps still open after their replay ended (beyond retention?).
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
    stale_timestamps: int = 0
    snapshot_pages: int = 0
    snapshots_completed: int = 0
    snapshot_records: int = 0
    replays_requested: int = 0
    replays_refused: int = 0
    gaps_unfilled: int = 0


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """A verified event, as handed to ``on_event`` (what ``portability receiver`` logs).

    Attributes:
        app_id: The app it was for.
        webhook_id: Its ``webhook-id``.
        event_type: ``portability.delta``, ``authorization.removed``, or a newer type.
        consent_id: The consent it is about, if it names one.
        sequences: The sequences of the deltas it carried, in order (empty for other types).
        duplicates: How many of those deltas had been received before.
        body: The body exactly as received.
    """

    app_id: str
    webhook_id: str
    event_type: str
    consent_id: str | None
    sequences: tuple[int, ...] = field(default=())
    duplicates: int = 0
    body: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class Removal:
    """An ``authorization.removed`` event: the consent ended and no more deltas come.

    Attributes:
        event_id: The ``webhook-id``; the same on every redelivery of the event.
        consent_id: The consent that ended.
        reason: user_revoked, app_revoked, expired, app_disabled, account_deleted, policy,
            completed or duplicate.
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
        clock: Wall-clock seconds since the epoch, used as receipt time for latency. The
            timestamp tolerance is judged on the real clock, as the verifier judges it.
        tolerance_s: How far ``webhook-timestamp`` may be from now, either way, in seconds;
            at most :data:`MAX_TOLERANCE_S`. A replayed old request is refused with 401.
        recovery: Where to ask for replays of gaps, and how patiently; None: gaps are only
            counted. Only apps added with an ``api_key`` ask.
        on_event: Called with every verified event, after it was recorded.
        retain_deltas: Keep every delta and id (for :meth:`deltas` and :meth:`received_ids`).
            False bounds memory for a long run: duplicates are then recognised by their
            consent and sequence (a redelivery carries the same ones), those two methods
            answer empty, and latency percentiles cover the latest
            :data:`LATENCY_WINDOW` deltas.

    Raises:
        ValueError: ``tolerance_s`` is not in (0, :data:`MAX_TOLERANCE_S`].
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        tolerance_s: float = MAX_TOLERANCE_S,
        recovery: RecoveryOptions | None = None,
        on_event: Callable[[ReceivedEvent], None] | None = None,
        retain_deltas: bool = True,
    ) -> None:
        if not 0 < tolerance_s <= MAX_TOLERANCE_S:
            raise ValueError(
                f"tolerance_s must be above 0 and at most {MAX_TOLERANCE_S:g} s (the Standard "
                f"Webhooks limit, which the verifier enforces anyway), not {tolerance_s}"
            )
        self._clock = clock
        self._tolerance_s = tolerance_s
        self._on_event = on_event
        self._recovery = (
            GapRecovery(recovery, self.missing_ranges, self._wake) if recovery else None
        )
        self._api_keys: dict[str, str] = {}
        self._verifiers: dict[str, Webhook] = {}
        self._consents: dict[str, ConsentLog] = {}
        self._retain = retain_deltas
        self._ids: set[str] = set()
        self._latency = LatencyRecorder(None if retain_deltas else LATENCY_WINDOW)
        self._injections: collections.deque[_Injection] = collections.deque()
        self._other_events: list[dict[str, Any]] = []
        self._removals: dict[str, Removal] = {}
        self._snapshots: dict[str, ReceivedSnapshot] = {}
        self._last_delta_at: dict[str, float] = {}
        self._counts: collections.Counter[str] = collections.Counter()
        self._missing = 0
        self._changed = asyncio.Condition()

    def add_app(self, app_id: str, secret: str, *, api_key: str | None = None) -> None:
        """Accept deliveries for ``app_id`` signed with ``secret``; replaces an earlier secret.

        Args:
            app_id: The app, as it appears in the webhook path.
            secret: Its ``whsec_`` signing secret.
            api_key: Its API key (``pk_...``): with ``recovery`` set, gaps of its consents
                are replayed on request with this key.

        Raises:
            SigningError: ``secret`` is not ``whsec_`` followed by non-empty base64.
        """
        # Checked as the sender checks it, so a secret works on both sides or on neither.
        validate_secret(secret)
        self._verifiers[app_id] = Webhook(secret)
        if api_key is not None:
            self._api_keys[app_id] = api_key

    async def aclose(self) -> None:
        """Stop recovering gaps (cancels outstanding replay requests); state is kept."""
        if self._recovery is not None:
            await self._recovery.close()

    def web_app(self) -> web.Application:
        """Build an aiohttp application serving ``POST /webhooks/{app_id}``.

        ``POST /webhooks`` is served too, for the app when exactly one was added.

        Each call builds a new one over the same state, so a test can stop and restart the
        endpoint without losing what was received.
        """
        application = web.Application(client_max_size=_MAX_BODY_BYTES)
        application.router.add_post(WEBHOOK_PATH, self._handle)
        application.router.add_post(SINGLE_APP_PATH, self._handle)
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
            deltas_received=counts["deltas_received"],
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
            stale_timestamps=counts["stale_timestamps"],
            snapshot_pages=counts["snapshot_pages"],
            snapshots_completed=counts["snapshots_completed"],
            snapshot_records=counts["snapshot_records"],
            **self._recovery_counts(),
        )

    def _recovery_counts(self) -> dict[str, int]:
        if self._recovery is None:
            return {}
        outcomes = self._recovery.outcomes()
        return {
            "replays_requested": self._recovery.replays_requested,
            "replays_refused": outcomes["refused"],
            "gaps_unfilled": outcomes["unfilled"],
        }

    def replay_requests(self) -> list[ReplayRequestRecord]:
        """Every gap recovery that ended, oldest first (empty without ``recovery``)."""
        return self._recovery.records() if self._recovery else []

    @property
    def recoveries_outstanding(self) -> int:
        """Consents whose gap is being recovered now."""
        return self._recovery.outstanding if self._recovery else 0

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

    def snapshot(self, consent_id: str) -> ReceivedSnapshot | None:
        """The consent's latest snapshot received (complete or not), if any."""
        return self._snapshots.get(consent_id)

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
            await self._wake()

    async def _wake(self) -> None:
        """Let ``wait_for`` callers re-check their predicate."""
        async with self._changed:
            self._changed.notify_all()

    async def _respond(self, request: web.Request, received_at: float) -> web.StreamResponse:
        if self._injections:
            return self._injected(request, self._injections.popleft())
        app_id = self._app_id(request)
        verifier = self._verifiers.get(app_id)
        if verifier is None:
            self._counts["unknown_app_requests"] += 1
            raise _Rejection(
                404,
                "unknown_app",
                "no app with this id is registered here"
                if app_id
                else "this receiver does not serve exactly one app: post to /webhooks/{app_id}",
            )
        body = await request.read()
        self._verify(verifier, body, request)
        webhook_id = request.headers.get("webhook-id", "")
        event = self._parse(body, app_id, webhook_id, received_at)
        if event is not None:
            duplicates = self._record(event, received_at)
            self._emit(
                ReceivedEvent(
                    app_id,
                    webhook_id,
                    DELTA_EVENT_TYPE,
                    event.consent_id,
                    tuple(delta.sequence for delta in event.deltas),
                    duplicates,
                    body,
                )
            )
        return web.Response(status=204)

    def _app_id(self, request: web.Request) -> str:
        """The app named in the path; on ``/webhooks``, the only app added (else "")."""
        named = request.match_info.get("app_id")
        if named is not None:
            return named
        return next(iter(self._verifiers)) if len(self._verifiers) == 1 else ""

    def _emit(self, event: ReceivedEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    def _verify(self, verifier: Webhook, body: bytes, request: web.Request) -> None:
        self._check_timestamp(request.headers.get("webhook-timestamp"), time.time())
        try:
            verifier.verify(body, dict(request.headers), json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:
            # ValueError: the package does not wrap a malformed signature or a non-UTF-8 body.
            self._counts["verification_failures"] += 1
            raise _Rejection(401, "verification_failed", str(exc) or type(exc).__name__) from exc

    def _check_timestamp(self, header: str | None, now: float) -> None:
        """Refuse a request signed too long ago (a replayed capture) or in the future.

        A missing or unreadable header is left to the verifier, which refuses it too.
        """
        try:
            signed_at = float(header) if header is not None else None
        except ValueError:
            return
        if signed_at is None or abs(now - signed_at) <= self._tolerance_s:
            return
        self._counts["verification_failures"] += 1
        self._counts["stale_timestamps"] += 1
        direction = "too old" if signed_at < now else "too new"
        raise _Rejection(
            401,
            "verification_failed",
            f"message timestamp {direction}: {abs(now - signed_at):.0f} s from now, beyond "
            f"the tolerance of {self._tolerance_s:g} s",
        )

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
            elif exc.event_type == SNAPSHOT:
                self._record_snapshot_page(exc.document, app_id)
            data = exc.document.get("data")
            consent_id = data.get("consent_id") if isinstance(data, dict) else None
            self._emit(
                ReceivedEvent(
                    app_id,
                    event_id,
                    exc.event_type,
                    consent_id if isinstance(consent_id, str) else None,
                    body=body,
                )
            )
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

    def _record_snapshot_page(self, document: dict[str, Any], app_id: str) -> None:
        try:
            page = parse_snapshot_page(document)
        except SnapshotPageError as exc:
            self._counts["malformed_payloads"] += 1
            raise _Rejection(400, "malformed_payload", str(exc)) from exc
        snapshot = self._snapshots.get(page.consent_id)
        if snapshot is None or (snapshot.snapshot_id, snapshot.position) != (
            page.snapshot_id,
            page.position,
        ):
            if snapshot is not None and snapshot.epoch > page.epoch:
                self._counts["duplicates"] += 1  # an older snapshot delivered again
                return
            # A new snapshot (or the same one built again elsewhere) replaces the last one.
            known = self._consents.get(page.consent_id)
            snapshot = ReceivedSnapshot(
                page.snapshot_id,
                page.epoch,
                page.position,
                deltas_before=0 if known is None else len(known.deltas),
            )
            self._snapshots[page.consent_id] = snapshot
        try:
            added = snapshot.add(page, self._retain)
        except SnapshotPageError as exc:
            self._counts["malformed_payloads"] += 1
            raise _Rejection(400, "out_of_order", str(exc)) from exc
        if not added:
            self._counts["duplicates"] += 1
            return
        self._counts["snapshot_pages"] += 1
        self._counts["snapshot_records"] += len(page.records)
        if page.last:
            self._counts["snapshots_completed"] += 1
            log = self._consents.setdefault(page.consent_id, ConsentLog(retain=self._retain))
            log.restart_after_snapshot()
            _log.info(
                "snapshot %s of consent %s complete: %d records in %d pages",
                page.snapshot_id,
                page.consent_id,
                snapshot.record_count,
                snapshot.pages,
                extra={"consent_id": page.consent_id, "app_id": app_id},
            )

    def _record(self, event: DeltaEvent, received_at: float) -> int:
        """Record the event's new deltas; returns how many were duplicates."""
        self._last_delta_at[event.consent_id] = received_at
        if event.consent_id in self._removals:
            self._counts["deltas_after_removal"] += len(event.deltas)
        log = self._consents.setdefault(event.consent_id, ConsentLog(retain=self._retain))
        duplicates = 0
        for delta in event.deltas:
            if (delta.id in self._ids) if self._retain else log.has(delta.sequence):
                self._counts["duplicates"] += 1
                duplicates += 1
                continue
            if self._retain:
                self._ids.add(delta.id)
            self._counts["deltas_received"] += 1
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
                self._recover(event.app_id, event.consent_id)
        return duplicates

    def _recover(self, app_id: str, consent_id: str) -> None:
        api_key = self._api_keys.get(app_id)
        if self._recovery is not None and api_key is not None:
            self._recovery.gap_opened(app_id, api_key, consent_id)

    def _injected(self, request: web.Request, injection: _Injection) -> web.Response:
        self._counts["injected_failures"] += 1
        _log.info(
            "answering %d to a webhook request for app %s, as fail_next asked",
            injection.status,
            self._app_id(request),
            extra={"app_id": self._app_id(request), "status": injection.status},
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
        app_id = self._app_id(request)
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
