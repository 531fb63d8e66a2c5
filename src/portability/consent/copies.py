"""One active copy of a consent: a second identical grant is refused, naming the first.

Two active consents of one user for the same app, mode and categories would deliver every
change once per copy. A grant is compared with the active consents first, to name the one
in force; the partial unique index ``uq_consents_active_copy`` (migration 0006) closes the
race between two concurrent grants, which both pass that check: the second insert fails
and is reported the same way. Categories are compared in their stored form (deduplicated,
in ``CATEGORIES`` order), so ``["post", "profile"]`` and ``["profile", "post"]`` are one set.
The expiry is not compared: to change it, revoke the consent and grant it again.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from portability.consent.errors import DuplicateConsentError
from portability.consent.models import Consent

__all__ = [
    "ACTIVE_COPY_INDEX",
    "copy_after_conflict",
    "duplicate_error",
    "find_active_copy",
    "refuse_active_copy",
]

ACTIVE_COPY_INDEX = "uq_consents_active_copy"
"""The partial unique index: (user_id, app_id, mode, categories) where status is active."""


def find_active_copy(session: Session, consent: Consent) -> Consent | None:
    """The active consent identical to ``consent`` (user, app, mode, categories), if any."""
    query = select(Consent).where(
        col(Consent.user_id) == consent.user_id,
        col(Consent.app_id) == consent.app_id,
        col(Consent.mode) == consent.mode,
        col(Consent.categories) == consent.categories,
        col(Consent.status) == "active",
        col(Consent.consent_id) != consent.consent_id,
    )
    return session.exec(query).first()


def refuse_active_copy(session: Session, consent: Consent) -> None:
    """Raise :class:`DuplicateConsentError` if ``consent`` would be a second active copy."""
    existing = find_active_copy(session, consent)
    if existing is not None:
        raise duplicate_error(existing)


def copy_after_conflict(engine: Engine, consent: Consent) -> DuplicateConsentError | None:
    """After an insert failed on a unique index: the error naming the copy that won, if any."""
    with Session(engine) as session:
        existing = find_active_copy(session, consent)
        return None if existing is None else duplicate_error(existing)


def duplicate_error(existing: Consent) -> DuplicateConsentError:
    """The refusal of a grant identical to ``existing``, saying what to do instead."""
    return DuplicateConsentError(
        f"user {existing.user_id!r} already has active consent {existing.consent_id!r} for app "
        f"{existing.app_id!r} ({existing.mode}, categories {existing.categories}): use it "
        f"(GET /v1/consents/{existing.consent_id}), or revoke it first to grant it anew "
        "(e.g. with another expiry)",
        existing.consent_id,
    )
