"""What the transfer store hands out and takes in: views of transfers, and builders' facts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from portability.consent.models import Transfer, TransferKind, TransferState
from portability.wire.records import Category

__all__ = ["ArchiveFacts", "SnapshotFacts", "TransferView"]


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
class SnapshotFacts:
    """What a builder reports about a snapshot whose pages it published."""

    position: int  # offset of the user's account.changes partition the snapshot is as of
    partition: int
    last_page_offset: int  # of the last page on the notifications topic
    record_count: int
    pages: int
    policy_version: str


@dataclass(frozen=True, slots=True)
class TransferView:
    """One transfer, as stored (its states: :mod:`~portability.consent.transfer_requests.store`)."""

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
    kind: TransferKind = "archive"
    snapshot_epoch: int | None = None

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
            kind=cast("TransferKind", row.kind),
            snapshot_epoch=row.snapshot_epoch,
        )
