"""The reference receiving app: what a third-party app does with our webhooks, done properly.

It verifies every request with the unmodified ``standardwebhooks`` package (rejecting
timestamps outside a tolerance, 5 minutes at most), deduplicates by delta id, notices a gap in
a consent's sequence the moment it opens, asks the API to replay a gap that does not fill by
itself (when given the API's URL and the app's key), verifies each consent's ledger (the hash
chain the events carry), and measures end-to-end latency. The demo,
``portability receiver`` and the tests drive it; its counters are what they assert on.

:class:`ReceivingApp` is the HTTP door and the face callers use: it answers each request
(or a failure ``fail_next`` queued), with :mod:`.verification` checking it and the
:class:`~portability.receiver.inbox.Inbox` recording what it carried; gap recovery is
:mod:`.recovery`'s.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

from portability.receiver.errors import RejectedRequestError
from portability.receiver.events import ReceivedEvent, ReceiverStats, Removal
from portability.receiver.inbox import Inbox
from portability.receiver.recovery import GapRecovery, RecoveryOptions, ReplayRequestRecord
from portability.receiver.snapshots import ReceivedSnapshot
from portability.receiver.tracking import SequenceRange
from portability.receiver.verification import MAX_TOLERANCE_S, Verification
from portability.webhooks.ledger import LedgerHead
from portability.webhooks.parsing import (
    Delta,
    DeltaEvent,
    PayloadError,
    UnknownEventTypeError,
    parse_delta_event,
)
from portability.webhooks.payload import DELTA_EVENT_TYPE

__all__ = ["SINGLE_APP_PATH", "WEBHOOK_PATH", "ReceivingApp"]

_log = logging.getLogger(__name__)

WEBHOOK_PATH: Final = "/webhooks/{app_id}"
SINGLE_APP_PATH: Final = "/webhooks"
"""For a receiver of one app: its webhook URL need not name the app (it is known only once
the app is registered, and the URL is given at registration)."""
# Batches of many deltas exceed aiohttp's 1 MiB default; a real app would size this to its own.
_MAX_BODY_BYTES: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Injection:
    status: int
    retry_after: float | None


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
            :data:`~portability.receiver.inbox.LATENCY_WINDOW` deltas.

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
        # One set of counters: each part counts what it sees, the inbox reports them all.
        counts: collections.Counter[str] = collections.Counter()
        self._verification = Verification(tolerance_s, counts)
        self._clock = clock
        self._on_event = on_event
        self._inbox = Inbox(retain=retain_deltas, counts=counts, on_gap=self._recover)
        self._recovery = (
            GapRecovery(recovery, self._inbox.missing_ranges, self._wake) if recovery else None
        )
        self._api_keys: dict[str, str] = {}
        self._injections: collections.deque[_Injection] = collections.deque()
        self._counts = counts
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
        self._verification.add(app_id, secret)
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
        return self._inbox.stats(_recovery_counts(self._recovery))

    def replay_requests(self) -> list[ReplayRequestRecord]:
        """Every gap recovery that ended, oldest first (empty without ``recovery``)."""
        return self._recovery.records() if self._recovery else []

    @property
    def recoveries_outstanding(self) -> int:
        """Consents whose gap is being recovered now."""
        return self._recovery.outstanding if self._recovery else 0

    def deltas(self, consent_id: str) -> list[Delta]:
        """The unique deltas of a consent, in arrival order (empty for an unknown consent)."""
        return self._inbox.deltas(consent_id)

    def received_ids(self) -> set[str]:
        """The ids of every unique delta received."""
        return self._inbox.received_ids()

    def consent_ids(self) -> list[str]:
        """The consents that delivered at least one delta, in order of first arrival."""
        return self._inbox.consent_ids()

    def detected_gaps(self, consent_id: str) -> list[SequenceRange]:
        """Every gap as it was detected live, as inclusive ``(first, last)`` ranges."""
        return self._inbox.detected_gaps(consent_id)

    def missing_ranges(self, consent_id: str) -> list[SequenceRange]:
        """Sequence ranges still missing below the consent's highest sequence received."""
        return self._inbox.missing_ranges(consent_id)

    def snapshot(self, consent_id: str) -> ReceivedSnapshot | None:
        """The consent's latest snapshot received (complete or not), if any."""
        return self._inbox.snapshot(consent_id)

    def removal(self, consent_id: str) -> Removal | None:
        """The ``authorization.removed`` event received for a consent, if any."""
        return self._inbox.removal(consent_id)

    def ledger_head(self, consent_id: str) -> LedgerHead | None:
        """The consent's ledger as this receiver computed it from what it received (None
        before any chained event of it): compare with ``GET /v1/consents/{id}/ledger``."""
        return self._inbox.ledger_head(consent_id)

    def last_delta_at(self, consent_id: str) -> float | None:
        """Receipt time of the latest request that carried deltas of a consent."""
        return self._inbox.last_delta_at(consent_id)

    def other_events(self) -> list[dict[str, Any]]:
        """Verified events of types other than ``portability.delta``, in arrival order."""
        return self._inbox.other_events()

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
        except RejectedRequestError as rejection:
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
        verifier = self._verification.verifier(app_id)
        body = await request.read()
        self._verification.verify(verifier, body, request.headers)
        webhook_id = request.headers.get("webhook-id", "")
        event = self._parse(body, app_id, webhook_id, received_at)
        if event is not None:
            duplicates = self._inbox.record(event, received_at, _delta_objects(body))
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
        return self._verification.app_id(request.match_info.get("app_id"))

    def _emit(self, event: ReceivedEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    def _parse(
        self, body: bytes, app_id: str, event_id: str, received_at: float
    ) -> DeltaEvent | None:
        try:
            event = parse_delta_event(body)
        except UnknownEventTypeError as exc:
            self._inbox.record_other(exc, event_id, app_id, received_at)
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
            raise RejectedRequestError(400, "malformed_payload", str(exc)) from exc
        if event.app_id != app_id:
            self._counts["malformed_payloads"] += 1
            raise RejectedRequestError(400, "wrong_app", f"event is for app {event.app_id!r}")
        return event

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

    def _reject(self, request: web.Request, rejection: RejectedRequestError) -> web.Response:
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


def _delta_objects(body: bytes) -> list[dict[str, Any]] | None:
    """The deltas' objects as sent, parsed again: the ledger hashes all their keys. None for
    JSON the chain cannot be computed over (a lone surrogate): the ledger is then unchecked."""
    try:
        deltas: list[dict[str, Any]] = orjson.loads(body)["data"]["deltas"]
    except orjson.JSONDecodeError:
        _log.warning("a delta body holds JSON the ledger cannot hash: its ledger is unchecked")
        return None
    return deltas


def _recovery_counts(recovery: GapRecovery | None) -> dict[str, int]:
    if recovery is None:
        return {}
    outcomes = recovery.outcomes()
    return {
        "replays_requested": recovery.replays_requested,
        "replays_refused": outcomes["refused"],
        "gaps_unfilled": outcomes["unfilled"],
    }


def _format_seconds(seconds: float) -> str:
    # Whole seconds as HTTP specifies them; a fraction only when a test asked for one.
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))
