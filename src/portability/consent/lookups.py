"""One app or consent row by id, in the caller's transaction, or a NotFoundError saying so.

Apps, consents and transfer requests all start a change this way; ``for_update`` locks the
row first, which a change must do before it allocates its outbox row (see
:mod:`portability.consent.outbox_rows`).
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from portability.consent.errors import NotFoundError
from portability.consent.models import App, Consent

__all__ = ["require_app", "require_consent"]


def require_app(session: Session, app_id: str, *, for_update: bool = False) -> App:
    """The app ``app_id`` (its row locked if ``for_update``)."""
    query = select(App).where(col(App.app_id) == app_id)
    if for_update:
        query = query.with_for_update()
    app = session.exec(query).first()
    if app is None:
        raise NotFoundError(f"no app {app_id!r}: register it first (or check the id)")
    return app


def require_consent(session: Session, consent_id: str, *, for_update: bool = False) -> Consent:
    """The consent ``consent_id`` (its row locked if ``for_update``)."""
    query = select(Consent).where(col(Consent.consent_id) == consent_id)
    if for_update:
        query = query.with_for_update()
    consent = session.exec(query).first()
    if consent is None:
        raise NotFoundError(f"no consent {consent_id!r}: check the id")
    return consent
