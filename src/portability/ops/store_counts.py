"""Counts from the consent store for operators: consents by app, mode and status; the outbox.

Two grouped ``COUNT`` queries and one on the outbox's ``(published_at, id)`` index, cheap
enough to run on every metrics scrape and status page load. Blocking: call from a thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from portability.consent.models import Consent, OutboxEvent

__all__ = ["StoreCounts", "read_store_counts"]


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """Consents per ``(app_id, mode, status)``, and outbox rows not yet published."""

    consents: dict[tuple[str, str, str], int] = field(default_factory=dict)
    outbox_pending: int = 0

    def active_by_app(self) -> dict[str, int]:
        """Active ongoing consents (those the pipeline delivers to) per app."""
        counts: dict[str, int] = {}
        for (app_id, mode, status), count in self.consents.items():
            if status == "active" and mode == "ongoing":
                counts[app_id] = counts.get(app_id, 0) + count
        return counts

    def by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (_app, _mode, status), count in self.consents.items():
            counts[status] = counts.get(status, 0) + count
        return counts


def read_store_counts(engine: Engine) -> StoreCounts:
    """Count now; raises SQLAlchemyError when the store cannot be read."""
    grouped = select(
        col(Consent.app_id), col(Consent.mode), col(Consent.status), func.count()
    ).group_by(col(Consent.app_id), col(Consent.mode), col(Consent.status))
    pending = (
        select(func.count()).select_from(OutboxEvent).where(col(OutboxEvent.published_at).is_(None))
    )
    with Session(engine) as session:
        consents = {
            (str(app), str(mode), str(status)): int(count)
            for app, mode, status, count in session.exec(grouped)
        }
        outbox = session.exec(pending).one()
    return StoreCounts(consents, int(outbox))
