"""The records on the pipeline's topics, as the codec reads and writes them.

TypedDicts rather than classes: fastavro produces and consumes plain dicts, and the hot path
should not copy every record into an object. Timestamps are timezone-aware ``datetime``s
(Avro ``timestamp-millis``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "CATEGORIES",
    "DELIVERY_MODES",
    "AccountChange",
    "ActivityRef",
    "AppRecord",
    "AudienceCheckpoint",
    "AudienceEntry",
    "AudienceUpdate",
    "Category",
    "ChangeContext",
    "ConsentRecord",
    "CountedActivity",
    "DeliveryHead",
    "DeliveryMode",
    "DeliveryRecord",
    "DeliveryStatusRecord",
    "MatcherCheckpoint",
    "NotificationRecord",
    "PostFigures",
    "RemovalReason",
    "format_timestamp",
    "from_millis",
    "to_millis",
    "with_record_type",
]

Category = Literal["profile", "post", "follow", "activity", "direct_message"]
RemovalReason = Literal[
    "user_revoked",
    "app_revoked",
    "expired",
    "app_disabled",
    "account_deleted",
    "policy",
    "completed",
    "duplicate",
]
CATEGORIES: tuple[Category, ...] = ("profile", "post", "follow", "activity", "direct_message")
# How an app receives its events: POSTed to its webhook URL, or read from its pull feed.
DeliveryMode = Literal["webhook", "poll"]
DELIVERY_MODES: tuple[DeliveryMode, ...] = ("webhook", "poll")

_RECORD_TYPE: dict[str, str] = {
    "profile": "portability.v1.Profile",
    "post": "portability.v1.Post",
    "follow": "portability.v1.Follow",
    "activity": "portability.v1.Activity",
    "direct_message": "portability.v1.DirectMessage",
}


class ActivityRef(TypedDict):
    """What a deleted activity record was (a delete carries no record)."""

    kind: str  # like, comment, view or share
    post_id: str
    post_owner_id: str


class ChangeContext(TypedDict):
    """What the platform knew when the record was made; read by the privacy rules only."""

    actor_private: bool
    shares_visible: bool
    off_platform: bool
    activity: ActivityRef | None


class AudienceEntry(TypedDict):
    post_owner_id: str
    post_id: str
    kind: str
    delta: int
    source_offset: int
    occurred_at: datetime


class AudienceUpdate(TypedDict):
    """Written by the matcher: activity counting toward other users' post audience figures."""

    source_partition: int
    entries: list[AudienceEntry]


class AccountChange(TypedDict):
    change_id: str
    user_id: str
    category: Category
    operation: Literal["upsert", "delete"]
    record_id: str
    occurred_at: datetime
    record: dict[str, Any] | None
    # Added later, with defaults (None): the codec fills them in when decoding.
    context: NotRequired[ChangeContext | None]
    audience: NotRequired[AudienceUpdate | None]


class ConsentRecord(TypedDict):
    consent_id: str
    user_id: str
    app_id: str
    categories: list[Category]
    mode: Literal["one_time", "ongoing"]
    status: Literal["active", "revoked", "expired"]
    granted_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    version: int
    removal_reason: NotRequired[RemovalReason | None]
    # Snapshots (see consent.avsc): the current epoch and, once published, its hand-over.
    snapshot_epoch: NotRequired[int]
    snapshot_position: NotRequired[int | None]
    snapshot_last_page_offset: NotRequired[int | None]


class AppRecord(TypedDict):
    app_id: str
    name: str
    webhook_url: str
    # Clear whsec_ secrets: only in records written before secrets were sealed, and in the
    # delivery worker's memory once it opened the sealed ones (see app.avsc).
    signing_secrets: list[str]
    enabled: bool
    version: int
    sealed_signing_secrets: NotRequired[list[str]]
    # "poll": the worker appends the app's events to its feed (the feed topic) instead of
    # POSTing them; webhook_url may then be "". The codec fills in "webhook" when decoding a
    # record from a writer that predates the field, so decoded records always have it.
    delivery_mode: NotRequired[DeliveryMode]


class DeliveryRecord(TypedDict):
    delta_id: str
    consent_id: str
    app_id: str
    user_id: str
    sequence: int
    change: AccountChange
    matched_at: datetime
    # The privacy rules' version the matcher applied; the codec fills in "unversioned" when
    # decoding a record from a writer that predates the field.
    policy_version: NotRequired[str]
    # Offset in the user's account.changes partition of the change (or audience update) the
    # delta comes from; -1 from a writer that predates the field. Snapshots hand over on it.
    source_offset: NotRequired[int]
    # The consent's snapshot epoch when matched; 0 from a writer that predates snapshots.
    snapshot_epoch: NotRequired[int]
    # The delta's JSON object in the webhook contract, rendered by the matcher; None (the
    # default) from a writer that does not render: the delivery worker then renders change.
    rendered: NotRequired[bytes | None]
    # The digest the delta extends its consent's ledger with (webhooks.ledger.delta_digest);
    # None from a writer that predates it: the delivery worker computes it.
    ledger_digest: NotRequired[str | None]


class DeliveryHead(TypedDict):
    """What the delivery worker keeps of a Delivery record: no change, only its rendering.

    Every field of the record but ``change``, under the same name, except that a timestamp
    is kept as epoch milliseconds (as on the wire: most are never formatted) under its name
    with ``_ms``; and of the change, ``record_id`` and ``occurred_at_ms``. See
    :mod:`portability.wire.delivery_head`.
    """

    delta_id: str
    consent_id: str
    app_id: str
    user_id: str
    sequence: int
    matched_at_ms: int
    policy_version: str
    source_offset: int
    snapshot_epoch: int  # 0 from a writer that predates snapshots
    rendered: bytes  # the delta's JSON object, as the contract carries it in data.deltas
    ledger_digest: str | None  # for the ledger; None from a writer that predates it
    record_id: str  # the change's
    category: str  # the change's: for the message log
    operation: str  # the change's: for the message log
    occurred_at_ms: int  # the change's: for the end-to-end latency
    logged: bytes  # the message log's LoggedRecord of this delta, Avro-encoded


class DeliveryStatusRecord(TypedDict):
    consent_id: str
    app_id: str
    last_sequence: int
    last_delivered_at: datetime | None
    failing: bool
    last_error: str | None
    last_status: int | None
    updated_at: datetime
    last_response: NotRequired[str | None]
    endpoint_disabled: NotRequired[bool]
    snapshot_epoch_delivered: NotRequired[int]


class NotificationRecord(TypedDict):
    event_id: str
    event_type: str
    consent_id: str
    app_id: str
    user_id: str
    occurred_at: datetime
    attributes: dict[str, str]
    # portability.snapshot pages: the records as one JSON array (bytes), else None.
    records: NotRequired[bytes | None]


class PostFigures(TypedDict):
    post_owner_id: str
    post_id: str
    counts: dict[str, int]
    released: dict[str, int]


class AudienceCheckpoint(TypedDict):
    sources: dict[str, int]
    posts: list[PostFigures]


class CountedActivity(TypedDict):
    """One actor's live activity records counting toward one figure of another user's post."""

    actor_id: str
    post_owner_id: str
    post_id: str
    kind: str
    record_ids: list[str]  # never empty: an actor who no longer counts is not written


class MatcherCheckpoint(TypedDict):
    source_partition: int
    next_offset: int
    sequences: dict[str, int]
    written_at: datetime
    # The privacy policy's audience figures; None (the default) when there are none.
    audience: NotRequired[AudienceCheckpoint | None]
    # The actor side of the figures (the partition's users' counted activity on others'
    # posts); None (the default) when there is none, and from a writer that predates it.
    counted_activity: NotRequired[list[CountedActivity] | None]


def with_record_type(change: AccountChange) -> AccountChange:
    """A copy of ``change`` whose record is tagged with its Avro union branch.

    The category determines the branch; without the tag fastavro guesses it from the fields,
    and two branches (follow, direct message) share field names.
    """
    record = change["record"]
    if record is None or "-type" in record:
        return change
    tagged = change.copy()
    tagged["record"] = {"-type": _RECORD_TYPE[change["category"]], **record}
    return tagged


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_timestamp(moment: datetime) -> str:
    """Format a datetime as the contract does: ISO-8601 UTC, milliseconds, ``Z``.

    A naive datetime is taken as UTC, which is what Avro ``timestamp-millis`` means.

    Args:
        moment: The datetime to format.

    Returns:
        For example ``"2025-01-31T12:00:00.123Z"`` (sub-millisecond digits are truncated).
    """
    if moment.tzinfo is not UTC:  # the common case (fastavro's output) skips both checks
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        elif moment.utcoffset():
            moment = moment.astimezone(UTC)
    # Any zero-offset tzinfo formats as "+00:00": swap that suffix for the shorter "Z".
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def to_millis(moment: datetime) -> int:
    """Epoch milliseconds, exactly (no float), truncated as the contract's timestamps are.

    A naive datetime is taken as UTC, which is what Avro ``timestamp-millis`` means.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # The timedelta's parts, not ``// timedelta(milliseconds=1)``: the same integer (floor
    # division, before 1970 too), a third cheaper, and the matcher reads it per change.
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_millis(millis: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds, exactly (the inverse of :func:`to_millis`)."""
    return _EPOCH + timedelta(milliseconds=millis)
