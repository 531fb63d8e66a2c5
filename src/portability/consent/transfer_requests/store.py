"""Transfer requests in the consent store: asked for by apps, built by transfer builders.

Two kinds. An ``archive`` is a one-time consent's zip, described below. A ``snapshot`` is
the user's current records sent to an ongoing consent's app as paged webhook events before
its deltas: one per snapshot epoch of the consent (epoch 1 when granted with a snapshot, one
more per resync). A snapshot transfer becomes ``ready`` when its pages are published; the
consent's new state then records where the snapshot hands over to the deltas.

A transfer is ``pending`` until a builder that owns the user's partition of the current-state
view takes it (``in_progress``); it becomes ``ready`` when the archive is written, and the app
is told with a ``portability.download.ready`` event written to the outbox in the same
transaction. It can be downloaded until ``expires_at`` (``PORTABILITY_TRANSFER_EXPIRY_S``,
4 days by default), then it is ``expired`` and its file deleted. The app may cancel it
before; a builder that cannot finish marks it ``failed`` with the reason.

A one-time consent is used up by its archive: in the transaction that makes the archive
ready, the consent ends with removal reason ``completed`` (status ``expired``) and its app
gets ``authorization.removed`` after ``portability.download.ready``. The download stays
available until the transfer expires; no further transfer can be asked for. A failed or
cancelled transfer does not use the consent up: the app may ask again. A consent that ended
before its archive was ready (revoked, say) gets no archive: the transfer is cancelled.
"""

from __future__ import annotations

import secrets
from collections.abc import Container
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from portability.consent._time import utc_now
from portability.consent.consents import end_consent, snapshot_transfer
from portability.consent.errors import ConflictError, NotFoundError
from portability.consent.lookups import require_consent
from portability.consent.models import OutboxEvent, Transfer, TransferState
from portability.consent.outbox_rows import outbox_payload, publish_consent
from portability.consent.transfer_requests.rules import check_transferable, consent_active
from portability.consent.transfer_requests.views import ArchiveFacts, SnapshotFacts, TransferView
from portability.settings import Settings
from portability.wire.notifications import download_ready

__all__ = ["TransferStore", "delete_archive", "download_url"]

_UNFINISHED: tuple[TransferState, ...] = ("pending", "in_progress")
_MAX_REASON = 2000


class TransferStore:
    """Creates, reads and advances transfers; every method is one short transaction.

    Synchronous like :class:`~portability.consent.ConsentService`: call it from async code
    with ``asyncio.to_thread``.
    """

    def __init__(self, engine: Engine, *, expiry_s: float = 4 * 86400.0) -> None:
        self._engine = engine
        self._expiry = timedelta(seconds=expiry_s)

    def request(self, consent_id: str) -> TransferView:
        """Record a pending transfer of the consent's granted categories.

        Raises:
            NotFoundError: No such consent.
            ConflictError: The consent is not an active one-time consent (e.g. its archive
                was built: it is used up), or already has a transfer in progress.
        """
        with Session(self._engine) as session, session.begin():
            consent = require_consent(session, consent_id, for_update=True)
            check_transferable(session, consent)
            running = session.exec(
                select(Transfer.transfer_id).where(
                    col(Transfer.consent_id) == consent_id,
                    col(Transfer.state).in_(_UNFINISHED),
                )
            ).first()
            if running is not None:
                raise ConflictError(
                    f"consent {consent_id!r} already has transfer {running!r} in progress: "
                    f"follow it (GET /v1/transfers/{running}) instead of asking again"
                )
            row = Transfer(
                transfer_id=f"trf_{secrets.token_hex(8)}",
                consent_id=consent_id,
                app_id=consent.app_id,
                user_id=consent.user_id,
                categories=consent.categories,
                state="pending",
                created_at=utc_now(),
            )
            session.add(row)
            session.flush()
            return TransferView.of(row)

    def get(self, transfer_id: str) -> TransferView:
        """The transfer ``transfer_id``; :class:`NotFoundError` if there is none."""
        with Session(self._engine) as session:
            row = session.get(Transfer, transfer_id)
            if row is None:
                raise NotFoundError(f"no transfer {transfer_id!r}: check the id")
            return TransferView.of(row)

    def list_for_consent(self, consent_id: str) -> list[TransferView]:
        query = (
            select(Transfer)
            .where(col(Transfer.consent_id) == consent_id)
            .order_by(col(Transfer.created_at))
        )
        with Session(self._engine) as session:
            return [TransferView.of(row) for row in session.exec(query)]

    def claim(self, owns_user: Container[str] | None = None, limit: int = 10) -> list[TransferView]:
        """Take pending transfers (oldest first) to build: they become ``in_progress``.

        Args:
            owns_user: Only users ``in`` it (a builder passes an object whose
                ``__contains__`` says whether it holds the user's partition); None: any.
            limit: At most this many.
        """
        query = (
            select(Transfer)
            .where(col(Transfer.state) == "pending")
            .order_by(col(Transfer.created_at))
            .with_for_update(skip_locked=True)
        )
        now = utc_now()
        with Session(self._engine) as session, session.begin():
            claimed = []
            for row in session.exec(query).all():
                if owns_user is not None and row.user_id not in owns_user:
                    continue
                if not consent_active(session, row):
                    row.state, row.finished_at = "cancelled", now
                    row.failure_reason = f"the consent ended before its {row.kind} was built"
                    session.add(row)
                    continue
                row.state = "in_progress"
                row.started_at = now
                session.add(row)
                claimed.append(row)
                if len(claimed) >= limit:
                    break
            session.flush()
            return [TransferView.of(row) for row in claimed]

    def mark_ready(self, transfer_id: str, facts: ArchiveFacts, base_url: str) -> TransferView:
        """The archive is written: ready until the expiry, the app told, the consent used up.

        In one transaction: the transfer becomes ready, the app's ``download.ready`` event is
        written to the outbox, and the one-time consent ends (``completed``, its
        ``authorization.removed`` after that event). A transfer cancelled while it was built
        stays cancelled (returned as it is), and one whose consent ended meanwhile is
        cancelled: the caller deletes the file then.
        """
        now = utc_now()
        with Session(self._engine) as session, session.begin():
            row = _locked(session, transfer_id)
            if row.state != "in_progress":
                return TransferView.of(row)
            # Transfer, then consent: the order mark_snapshot_published locks them in too.
            consent = require_consent(session, row.consent_id, for_update=True)
            if consent.status != "active":
                # Revoked while it was built: the user's data does not go out after all.
                row.state, row.finished_at = "cancelled", now
                row.failure_reason = (
                    f"the consent ended ({consent.removal_reason or consent.status}) while "
                    "its archive was built"
                )
                session.add(row)
                session.flush()
                return TransferView.of(row)
            row.state = "ready"
            row.ready_at = now
            row.expires_at = now + self._expiry
            row.archive_file = facts.archive_file
            row.size_bytes = facts.size_bytes
            row.sha256 = facts.sha256
            row.record_count = facts.record_count
            row.policy_version = facts.policy_version
            row.position = facts.position
            session.add(row)
            event = download_ready(
                consent_id=row.consent_id,
                app_id=row.app_id,
                user_id=row.user_id,
                transfer_id=row.transfer_id,
                download_url=download_url(base_url, row.transfer_id),
                expires_at=row.expires_at,
                size_bytes=facts.size_bytes,
                sha256=facts.sha256,
                categories=row.categories.split(","),
                ready_at=now,
            )
            session.add(
                OutboxEvent(
                    kind="notification",
                    key=row.consent_id,
                    user_id=row.user_id,
                    payload=outbox_payload(event),
                    created_at=now,
                )
            )
            # Flushed first: download.ready gets the smaller outbox id, so the app hears of
            # the archive before it hears that the consent ended.
            session.flush()
            end_consent(session, consent, "completed", now)
            session.flush()
            return TransferView.of(row)

    def request_snapshot(self, consent_id: str) -> TransferView:
        """Resync: a new snapshot epoch for an active ongoing consent, and its transfer.

        The consent's new state (published through the outbox) makes the matcher stamp the
        new epoch on its deltas, and the delivery worker holds those until the snapshot's
        pages are delivered.

        While the consent's snapshot is still pending (not being built yet), asking again is
        that snapshot: it will hold everything up to when it is built. Cancelling it for a new
        epoch would strand the deltas already stamped with its epoch (matched since it was
        asked): they wait for its pages, which would never come, and the new snapshot's pages
        sort in behind them, so the consent would get nothing more. One being built is not
        replaced either: a new epoch starts, and both are delivered, in order.

        Raises:
            NotFoundError: No such consent.
            ConflictError: The consent is not an active ongoing consent.
        """
        now = utc_now()
        with Session(self._engine) as session, session.begin():
            consent = require_consent(session, consent_id, for_update=True)
            if consent.status != "active" or consent.mode != "ongoing":
                raise ConflictError(
                    f"consent {consent_id!r} is {consent.status} and {consent.mode}: a snapshot "
                    "is for an active ongoing consent (a one-time consent asks for a transfer)"
                )
            pending = select(Transfer).where(
                col(Transfer.consent_id) == consent_id,
                col(Transfer.kind) == "snapshot",
                col(Transfer.state) == "pending",
                col(Transfer.snapshot_epoch) == consent.snapshot_epoch,
            )
            waiting = session.exec(pending).first()
            if waiting is not None:
                return TransferView.of(waiting)
            consent.snapshot_epoch += 1
            consent.snapshot_position = None
            consent.snapshot_last_page_offset = None
            consent.updated_at = now
            session.add(consent)
            publish_consent(session, consent, now)
            row = snapshot_transfer(consent, now)
            session.add(row)
            session.flush()
            return TransferView.of(row)

    def mark_snapshot_published(self, transfer_id: str, facts: SnapshotFacts) -> TransferView:
        """The snapshot's pages are on the notifications topic: ready, and the hand-over known.

        If the snapshot is still the consent's current epoch, the consent's new state records
        the position and the last page's offset (the delivery worker needs them after a
        restart). A transfer cancelled meanwhile stays cancelled.
        """
        now = utc_now()
        with Session(self._engine) as session, session.begin():
            row = _locked(session, transfer_id)
            if row.state != "in_progress":
                return TransferView.of(row)
            row.state = "ready"
            row.ready_at = now
            row.record_count = facts.record_count
            row.policy_version = facts.policy_version
            row.position = f"{facts.partition}:{facts.position}"
            session.add(row)
            consent = require_consent(session, row.consent_id, for_update=True)
            if consent.snapshot_epoch == row.snapshot_epoch and consent.status == "active":
                consent.snapshot_position = facts.position
                consent.snapshot_last_page_offset = facts.last_page_offset
                consent.updated_at = now
                session.add(consent)
                publish_consent(session, consent, now)
            session.flush()
            return TransferView.of(row)

    def consent_published(self, consent_id: str) -> bool:
        """Whether the consent's current state is on the consents topic (relayed)."""
        with Session(self._engine) as session:
            consent = require_consent(session, consent_id)
            event = session.get(OutboxEvent, consent.version)
            # A row already pruned from the outbox was published long ago.
            return event is None or event.published_at is not None

    def retry_later(self, transfer_id: str, reason: str) -> TransferView:
        """Put a snapshot back to pending after a failure that may pass (a builder retries it).

        A snapshot cannot simply fail: the consent's deltas wait for it.
        """
        with Session(self._engine) as session, session.begin():
            row = _locked(session, transfer_id)
            if row.state == "in_progress":
                row.state = "pending"
                row.failure_reason = reason[:_MAX_REASON]
                session.add(row)
                session.flush()
            return TransferView.of(row)

    def fail(self, transfer_id: str, reason: str) -> TransferView:
        return self._finish(transfer_id, "failed", reason, only=_UNFINISHED)

    def cancel(self, transfer_id: str) -> TransferView:
        """Cancel a transfer that is not finished or still downloadable.

        Raises:
            ConflictError: It already ended (expired, cancelled or failed).
        """
        with Session(self._engine) as session, session.begin():
            row = _locked(session, transfer_id)
            if row.state not in (*_UNFINISHED, "ready"):
                raise ConflictError(
                    f"transfer {transfer_id!r} is {row.state}: only a pending, in-progress or "
                    "ready transfer can be cancelled"
                )
        return self._finish(transfer_id, "cancelled", None, only=(*_UNFINISHED, "ready"))

    def expire_due(self, now: datetime | None = None) -> list[TransferView]:
        """Mark ready transfers past their expiry ``expired``; returns them (to delete files)."""
        at = now or utc_now()
        query = (
            select(Transfer)
            .where(col(Transfer.state) == "ready")
            .where(col(Transfer.expires_at) <= at)
            .with_for_update()
        )
        with Session(self._engine) as session, session.begin():
            rows = session.exec(query).all()
            for row in rows:
                row.state = "expired"
                row.finished_at = at
                session.add(row)
            session.flush()
            return [TransferView.of(row) for row in rows]

    def _finish(
        self,
        transfer_id: str,
        state: TransferState,
        reason: str | None,
        *,
        only: tuple[TransferState, ...],
    ) -> TransferView:
        with Session(self._engine) as session, session.begin():
            row = _locked(session, transfer_id)
            if row.state in only:
                row.state = state
                row.failure_reason = reason[:_MAX_REASON] if reason else None
                row.finished_at = utc_now()
                session.add(row)
                session.flush()
            return TransferView.of(row)


def delete_archive(settings: Settings, view: TransferView) -> None:
    """Delete the archive file of a transfer that ended (expired or cancelled)."""
    if view.archive_file is not None and view.state in ("cancelled", "expired"):
        (settings.archive_dir() / view.archive_file).unlink(missing_ok=True)


def download_url(base_url: str, transfer_id: str) -> str:
    """The archive's download URL (``base_url``: the API's public URL)."""
    return f"{base_url}/v1/transfers/{transfer_id}/archive"


def _locked(session: Session, transfer_id: str) -> Transfer:
    query = select(Transfer).where(col(Transfer.transfer_id) == transfer_id).with_for_update()
    row = session.exec(query).first()
    if row is None:
        raise NotFoundError(f"no transfer {transfer_id!r}: check the id")
    return row
