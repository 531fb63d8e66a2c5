"""One-time transfers in the consent store: requested by apps, built by transfer builders.

A transfer is ``pending`` until a builder that owns the user's partition of the current-state
view takes it (``in_progress``); it becomes ``ready`` when the archive is written, and the app
is told with a ``portability.download.ready`` event written to the outbox in the same
transaction. It can be downloaded until ``expires_at`` (``PORTABILITY_TRANSFER_EXPIRY_S``,
4 days by default), then it is ``expired`` and its file deleted. The app may cancel it
before; a builder that cannot finish marks it ``failed`` with the reason.
"""

from __future__ import annotations

import secrets
from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from portability.consent._time import utc_now
from portability.consent.errors import ConflictError, NotFoundError
from portability.consent.models import Consent, OutboxEvent, Transfer, TransferState
from portability.consent.service import outbox_payload
from portability.settings import Settings
from portability.wire.notifications import download_ready
from portability.wire.records import Category

__all__ = [
    "ArchiveFacts",
    "TransferStore",
    "TransferView",
    "delete_archive",
    "download_url",
]

_UNFINISHED: tuple[TransferState, ...] = ("pending", "in_progress")
_MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class ArchiveFacts:
    """What a builder reports about an archive it wrote."""

    archive_file: str  # file name inside the archive folder
    size_bytes: int
    sha256: str
    record_count: int
    policy_version: str
    position: str  # "partition:offset" of the current-state view it was built at


@dataclass(frozen=True, slots=True)
class TransferView:
    """One transfer, as stored (see the module docstring for the states)."""

    transfer_id: str
    consent_id: str
    app_id: str
    user_id: str
    categories: tuple[Category, ...]
    state: TransferState
    failure_reason: str | None
    archive_file: str | None
    size_bytes: int | None
    sha256: str | None
    record_count: int | None
    policy_version: str | None
    position: str | None
    created_at: datetime
    started_at: datetime | None
    ready_at: datetime | None
    expires_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: Transfer) -> TransferView:
        return cls(
            transfer_id=row.transfer_id,
            consent_id=row.consent_id,
            app_id=row.app_id,
            user_id=row.user_id,
            categories=cast("tuple[Category, ...]", tuple(row.categories.split(","))),
            state=cast("TransferState", row.state),
            failure_reason=row.failure_reason,
            archive_file=row.archive_file,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            record_count=row.record_count,
            policy_version=row.policy_version,
            position=row.position,
            created_at=row.created_at,
            started_at=row.started_at,
            ready_at=row.ready_at,
            expires_at=row.expires_at,
            finished_at=row.finished_at,
        )


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
            ConflictError: The consent is not an active one-time consent, or already has a
                transfer in progress.
        """
        with Session(self._engine) as session, session.begin():
            query = select(Consent).where(col(Consent.consent_id) == consent_id)
            consent = session.exec(query.with_for_update()).first()
            if consent is None:
                raise NotFoundError(f"no consent {consent_id!r}: check the id")
            _check_transferable(consent)
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
                row.state = "in_progress"
                row.started_at = now
                session.add(row)
                claimed.append(row)
                if len(claimed) >= limit:
                    break
            session.flush()
            return [TransferView.of(row) for row in claimed]

    def mark_ready(self, transfer_id: str, facts: ArchiveFacts, base_url: str) -> TransferView:
        """The archive is written: ready until the expiry, and the app is told (outbox).

        A transfer cancelled while it was built stays cancelled (returned as it is); the
        caller deletes the file then.
        """
        now = utc_now()
        with Session(self._engine) as session, session.begin():
            row = _locked(session, transfer_id)
            if row.state != "in_progress":
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


def _check_transferable(consent: Consent) -> None:
    if consent.status != "active":
        raise ConflictError(
            f"consent {consent.consent_id!r} is {consent.status}: a transfer needs an active "
            "consent"
        )
    if consent.mode != "one_time":
        raise ConflictError(
            f"consent {consent.consent_id!r} is ongoing: its data flows as deltas after its "
            "initial snapshot; one-time transfers are for one-time consents"
        )
