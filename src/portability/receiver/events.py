"""What the reference receiver reports: its counters, and the events it accepted.

:class:`ReceiverStats` is what the demo, ``portability receiver`` and the tests assert on;
:class:`ReceivedEvent` is handed to ``on_event`` for every verified event; :class:`Removal`
is kept per consent whose ``authorization.removed`` event arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ReceivedEvent", "ReceiverStats", "Removal"]


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
        ledger_mismatches: Events whose ``ledger`` value differs from the chain the receiver
            computed from what it received (a delta missing, changed or out of order before
            it); see :mod:`portability.receiver.chains`.
        ledger_unchained: Events received the first time without a ``ledger`` value (a
            replay's deltas): they do not extend the chain.
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
    ledger_mismatches: int = 0
    ledger_unchained: int = 0


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
