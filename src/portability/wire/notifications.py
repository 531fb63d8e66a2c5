"""Notifications: events about a consent that are not deltas, and how their ids are made.

The consent store writes a notification to its outbox in the same transaction as the change it
announces, so the event is published if and only if the change is committed. Its id is derived
from the consent and the version of the consent's state that caused it: the relay may publish
a row twice after a crash, and both copies carry the same id, which is the ``webhook-id`` an
app deduplicates on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from portability.wire.records import NotificationRecord, RemovalReason, format_timestamp

__all__ = [
    "AUTHORIZATION_REMOVED",
    "DOWNLOAD_READY",
    "SNAPSHOT",
    "SnapshotPage",
    "authorization_removed",
    "download_ready",
    "event_id",
    "snapshot_page",
]

AUTHORIZATION_REMOVED: Final = "authorization.removed"
DOWNLOAD_READY: Final = "portability.download.ready"
SNAPSHOT: Final = "portability.snapshot"


def event_id(event_type: str, consent_id: str, version: int) -> str:
    """The stable id of the ``event_type`` event caused by version ``version`` of a consent."""
    digest = hashlib.sha256(f"{event_type}\n{consent_id}\n{version}".encode()).hexdigest()
    return "evt_" + digest[:32]


def authorization_removed(
    *,
    consent_id: str,
    app_id: str,
    user_id: str,
    reason: RemovalReason,
    removed_at: datetime,
    version: int,
) -> NotificationRecord:
    """The event telling an app that a consent ended (revoked, expired, app disabled...)."""
    return NotificationRecord(
        event_id=event_id(AUTHORIZATION_REMOVED, consent_id, version),
        event_type=AUTHORIZATION_REMOVED,
        consent_id=consent_id,
        app_id=app_id,
        user_id=user_id,
        occurred_at=removed_at,
        attributes={"reason": reason},
    )


def download_ready(
    *,
    consent_id: str,
    app_id: str,
    user_id: str,
    transfer_id: str,
    download_url: str,
    expires_at: datetime,
    size_bytes: int,
    sha256: str,
    categories: Sequence[str],
    ready_at: datetime,
) -> NotificationRecord:
    """The event telling an app that a one-time transfer's archive can be downloaded.

    Attributes are strings on the wire; the webhook body gives ``size_bytes`` as a number and
    ``categories`` as a list (see ``webhooks.payload``).
    """
    digest = hashlib.sha256(f"{DOWNLOAD_READY}\n{transfer_id}".encode()).hexdigest()
    return NotificationRecord(
        event_id="evt_" + digest[:32],
        event_type=DOWNLOAD_READY,
        consent_id=consent_id,
        app_id=app_id,
        user_id=user_id,
        occurred_at=ready_at,
        attributes={
            "transfer_id": transfer_id,
            "download_url": download_url,
            "expires_at": format_timestamp(expires_at),
            "size_bytes": str(size_bytes),
            "sha256": sha256,
            "categories": ",".join(categories),
        },
    )


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    """Where one page of a snapshot stands, as its notification's attributes carry it."""

    snapshot_id: str  # the transfer's id
    epoch: int
    page: int  # 1, 2, 3...
    last: bool
    partition: int  # of account.changes (the user's)
    position: int  # the snapshot holds every change of that partition before this offset

    @classmethod
    def of(cls, notification: NotificationRecord) -> SnapshotPage | None:
        """The page a ``portability.snapshot`` notification is; None for other events."""
        if notification["event_type"] != SNAPSHOT:
            return None
        attributes = notification["attributes"]
        partition, _, position = attributes["position"].partition(":")
        return cls(
            snapshot_id=attributes["snapshot_id"],
            epoch=int(attributes["epoch"]),
            page=int(attributes["page"]),
            last=attributes["last"] == "true",
            partition=int(partition),
            position=int(position),
        )


def snapshot_page(
    *,
    consent_id: str,
    app_id: str,
    user_id: str,
    page: SnapshotPage,
    categories: Sequence[str],
    policy_version: str,
    records: bytes,
    record_count: int,
    taken_at: datetime,
) -> NotificationRecord:
    """One page of a snapshot: ``records`` is the page's JSON array, ``record_count`` its size.

    The id depends on the position too: a snapshot built again after a builder crash may
    stand elsewhere, and its pages must not be taken for the first build's.
    """
    where = f"{page.partition}:{page.position}"
    digest = hashlib.sha256(
        f"{SNAPSHOT}\n{page.snapshot_id}\n{where}\n{page.page}".encode()
    ).hexdigest()
    return NotificationRecord(
        event_id="evt_" + digest[:32],
        event_type=SNAPSHOT,
        consent_id=consent_id,
        app_id=app_id,
        user_id=user_id,
        occurred_at=taken_at,
        attributes={
            "snapshot_id": page.snapshot_id,
            "epoch": str(page.epoch),
            "page": str(page.page),
            "last": "true" if page.last else "false",
            "position": where,
            "categories": ",".join(categories),
            "policy_version": policy_version,
            "record_count": str(record_count),
        },
        records=records,
    )
