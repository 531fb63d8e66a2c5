"""A user's delivery history for the disclosure report's tests, written as the writer would.

Consents go through the :class:`ConsentService`; ``disclosed_records`` rows are inserted
directly (the report reads them, whoever wrote them). :func:`seed_history` builds the one
history the query, API and CLI tests all check: three apps, a snapshot page, deltas under
two policy versions, a revoked consent, an app that received nothing, and another user.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from portability.consent import ConsentService
from portability.messages.models import DisclosedRecordRow

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
USER = "u-disclosed"
OTHER_USER = "u-other"
ARCHIVE = "app_archive"
FEED = "app_feed"
IDLE = "app_idle"


def disclose(
    engine: Engine,
    *,
    message_id: str,
    app_id: str,
    consent_id: str,
    user_id: str,
    category: str,
    record_id: str,
    delivered_at: datetime,
    delta_id: str = "",
    operation: str = "upsert",
    sequence: int | None = None,
    policy_version: str = "2026-01",
    event_type: str = "portability.delta",
) -> None:
    """One disclosed record, as the message log's writer stores it."""
    with Session(engine) as session, session.begin():
        session.add(
            DisclosedRecordRow(
                message_id=message_id,
                category=category,
                record_id=record_id,
                delta_id=delta_id,
                app_id=app_id,
                consent_id=consent_id,
                user_id=user_id,
                operation=operation,
                sequence=sequence,
                policy_version=policy_version,
                event_type=event_type,
                delivered_at=delivered_at,
            )
        )


@dataclass(frozen=True)
class History:
    """The consents :func:`seed_history` granted."""

    archive_consent: str
    feed_consent: str
    idle_consent: str
    other_consent: str


def seed_history(engine: Engine, service: ConsentService) -> History:
    """Three apps and USER's consents and deliveries; OTHER_USER's one record to Archive."""
    for app_id, name in ((ARCHIVE, "Archive Pal"), (FEED, "Feed Reader"), (IDLE, "Idle App")):
        service.register_app(name, f"https://{app_id}.example/hooks", app_id)
    granted = T0 - timedelta(days=1)
    archive = service.grant(USER, ARCHIVE, ["post", "profile"], now=granted).consent_id
    feed = service.grant(USER, FEED, ["activity"], now=granted + timedelta(hours=1)).consent_id
    idle = service.grant(USER, IDLE, ["follow"], now=granted + timedelta(hours=2)).consent_id
    other = service.grant(OTHER_USER, ARCHIVE, ["post"], now=granted).consent_id
    # Archive: a snapshot page of three records, then three deltas; the policy changes.
    for category, record_id in (("post", "p1"), ("post", "p2"), ("profile", "me")):
        disclose(
            engine,
            message_id="msg_snapshot",
            app_id=ARCHIVE,
            consent_id=archive,
            user_id=USER,
            category=category,
            record_id=record_id,
            delivered_at=T0,
            operation="snapshot",
            event_type="portability.snapshot",
        )
    deltas = (("p1", "upsert", "2026-01"), ("p3", "upsert", "2026-02"), ("p2", "delete", "2026-02"))
    for sequence, (record_id, operation, policy) in enumerate(deltas, start=1):
        disclose(
            engine,
            message_id=f"msg_d{sequence}",
            app_id=ARCHIVE,
            consent_id=archive,
            user_id=USER,
            category="post",
            record_id=record_id,
            delivered_at=T0 + timedelta(minutes=sequence),
            delta_id=f"dlt_{sequence}",
            operation=operation,
            sequence=sequence,
            policy_version=policy,
        )
    # Feed: one delta, then the user revokes.
    disclose(
        engine,
        message_id="msg_feed",
        app_id=FEED,
        consent_id=feed,
        user_id=USER,
        category="activity",
        record_id="a1",
        delivered_at=T0 + timedelta(minutes=5),
        delta_id="dlt_feed",
        sequence=1,
    )
    service.revoke(feed, now=T0 + timedelta(hours=1), reason="user_revoked")
    disclose(
        engine,
        message_id="msg_other",
        app_id=ARCHIVE,
        consent_id=other,
        user_id=OTHER_USER,
        category="post",
        record_id="q1",
        delivered_at=T0 - timedelta(minutes=1),
        delta_id="dlt_other",
        sequence=1,
    )
    return History(archive, feed, idle, other)
