"""The delivery log's records: one per attempt at a webhook message (``delivery.log``).

The delivery worker (and the API, for resends and test events) writes one
:class:`DeliveryLogEntry` per attempt, keyed by the message id; the message log's writer
(:mod:`portability.messages`) stores them in the consent store's database in batches, so the
worker's hot path never waits on a database. An entry names what the message carried, record
by record (ids, categories, sequences), and where its records were read, so that a resend can
read them again and build the same body: it holds ids, hashes and outcomes, never contents.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal, TypedDict

__all__ = [
    "DELTA_EVENT",
    "ORIGINS",
    "PING_EVENT",
    "DeliveryLogEntry",
    "LoggedLedger",
    "LoggedRecord",
    "LoggedSource",
    "Origin",
]

DELTA_EVENT: Final = "portability.delta"
PING_EVENT: Final = "portability.ping"

Origin = Literal["worker", "resend", "test"]
ORIGINS: Final[tuple[Origin, ...]] = ("worker", "resend", "test")


class LoggedRecord(TypedDict):
    """One record a message carried: a delta's (with its id and sequence) or a page's."""

    delta_id: str  # empty for a snapshot page's record
    record_id: str
    category: str
    operation: str  # upsert or delete; "snapshot" for a page's record
    sequence: int | None
    policy_version: str


class LoggedSource(TypedDict):
    """Where one of the message's records was read (the deliveries topic, its retry topic,
    or notifications)."""

    topic: str
    partition: int
    offset: int


class LoggedLedger(TypedDict):
    """The consent's hash chain around a message: before it, after it, counts after it."""

    before: str
    after: str
    events: int
    deltas: int
    pages: int
    removals: int


class DeliveryLogEntry(TypedDict):
    """One attempt at one message (``schemas/delivery_log_entry.avsc``)."""

    message_id: str
    app_id: str
    consent_id: str
    user_id: str
    event_type: str
    endpoint_url: str
    origin: str  # an Origin
    attempt: int
    attempted_at: datetime
    duration_ms: int
    ok: bool
    status: int | None
    reason: str
    response_excerpt: str
    size: int
    body_sha256: str
    first_sequence: int | None
    last_sequence: int | None
    snapshot_epoch: int | None
    removal_reason: str | None
    records: list[LoggedRecord]
    sources: list[LoggedSource]
    ledger: LoggedLedger | None
