"""What the reference receiver accepted: deltas per consent, removals, snapshot pages.

The :class:`Inbox` is the receiver's state, apart from HTTP: it deduplicates deltas by id
(by consent and sequence when it does not retain them), notices a gap in a consent's
sequence the moment it opens, keeps ``authorization.removed`` events and the pages of each
consent's latest snapshot, checks each consent's ledger (:mod:`.chains`) over what it
received the first time, measures end-to-end latency, and answers what the tests, the demo
and ``portability receiver`` read.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from portability.receiver.chains import LedgerChecker
from portability.receiver.errors import RejectedRequestError, SnapshotPageError
from portability.receiver.events import ReceiverStats, Removal
from portability.receiver.snapshots import ReceivedSnapshot, parse_snapshot_page
from portability.receiver.tracking import ConsentLog, LatencyRecorder, SequenceRange
from portability.webhooks.ledger import LedgerHead
from portability.webhooks.parsing import Delta, DeltaEvent, UnknownEventTypeError
from portability.wire.notifications import AUTHORIZATION_REMOVED, SNAPSHOT

__all__ = ["LATENCY_WINDOW", "Inbox"]

_log = logging.getLogger(__name__)

LATENCY_WINDOW: Final = 10_000
"""Latencies a receiver that does not retain deltas computes its percentiles over."""


class Inbox:
    """Every event the receiver accepted, and what it reports about them.

    Args:
        retain: Keep every delta and id; False bounds memory (see ``ReceivingApp``).
        counts: The receiver's counters, which this counts into and reports.
        on_gap: Called with the app and consent ids when a gap opens in the consent's
            sequence.
    """

    def __init__(
        self,
        *,
        retain: bool,
        counts: collections.Counter[str],
        on_gap: Callable[[str, str], None],
    ) -> None:
        self._retain = retain
        self._counts = counts
        self._on_gap = on_gap
        self._consents: dict[str, ConsentLog] = {}
        self._ids: set[str] = set()
        self._latency = LatencyRecorder(None if retain else LATENCY_WINDOW)
        self._other_events: list[dict[str, Any]] = []
        self._removals: dict[str, Removal] = {}
        self._snapshots: dict[str, ReceivedSnapshot] = {}
        self._last_delta_at: dict[str, float] = {}
        self._missing = 0
        self._ledgers = LedgerChecker(counts)

    # --- recording ---------------------------------------------------------------------------

    def record(
        self,
        event: DeltaEvent,
        received_at: float,
        objects: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Record the event's new deltas; returns how many were duplicates.

        Args:
            objects: The deltas' objects as the body carries them (``data.deltas``, parsed),
                for the ledger; None: the ledger is not checked.
        """
        self._last_delta_at[event.consent_id] = received_at
        if event.consent_id in self._removals:
            self._counts["deltas_after_removal"] += len(event.deltas)
        log = self._consents.setdefault(event.consent_id, ConsentLog(retain=self._retain))
        duplicates = 0
        for index, delta in enumerate(event.deltas):
            if (delta.id in self._ids) if self._retain else log.has(delta.sequence):
                self._counts["duplicates"] += 1
                duplicates += 1
                continue
            if self._retain:
                self._ids.add(delta.id)
            self._counts["deltas_received"] += 1
            if objects is not None:
                self._ledgers.delta(event.app_id, event.consent_id, objects[index])
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
                self._on_gap(event.app_id, event.consent_id)
        return duplicates

    def record_other(
        self, event: UnknownEventTypeError, event_id: str, app_id: str, received_at: float
    ) -> None:
        """Keep an event of another type than deltas; removals and snapshot pages take effect.

        Raises:
            RejectedRequestError: 400, a removal or snapshot page that is malformed, or a page
                out of order.
        """
        # Recipients accept event types they do not know yet; keep it for inspection.
        self._other_events.append(event.document)
        if event.event_type == AUTHORIZATION_REMOVED:
            self._record_removal(event.document, event_id, received_at)
        elif event.event_type == SNAPSHOT:
            self._record_snapshot_page(event.document, app_id)
        data = event.document.get("data")
        if isinstance(data, dict):  # accepted (a refused event is sent again: chained then)
            self._ledgers.notification(app_id, event.event_type, data, event_id)

    def _record_removal(self, document: dict[str, Any], event_id: str, received_at: float) -> None:
        data = document.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("consent_id"), str):
            self._counts["malformed_payloads"] += 1
            raise RejectedRequestError(400, "malformed_payload", "data.consent_id must be a string")
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
            raise RejectedRequestError(400, "malformed_payload", str(exc)) from exc
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
            raise RejectedRequestError(400, "out_of_order", str(exc)) from exc
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

    # --- reading -----------------------------------------------------------------------------

    def stats(self, recovery: Mapping[str, int]) -> ReceiverStats:
        """A snapshot of the counters and latency percentiles, with gap recovery's counts."""
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
            ledger_mismatches=counts["ledger_mismatches"],
            ledger_unchained=counts["ledger_unchained"],
            **recovery,
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

    def snapshot(self, consent_id: str) -> ReceivedSnapshot | None:
        """The consent's latest snapshot received (complete or not), if any."""
        return self._snapshots.get(consent_id)

    def removal(self, consent_id: str) -> Removal | None:
        """The ``authorization.removed`` event received for a consent, if any."""
        return self._removals.get(consent_id)

    def ledger_head(self, consent_id: str) -> LedgerHead | None:
        """The consent's ledger as received (None before any chained event of it)."""
        return self._ledgers.head(consent_id)

    def last_delta_at(self, consent_id: str) -> float | None:
        """Receipt time of the latest request that carried deltas of a consent."""
        return self._last_delta_at.get(consent_id)

    def other_events(self) -> list[dict[str, Any]]:
        """Verified events of types other than ``portability.delta``, in arrival order."""
        return list(self._other_events)
