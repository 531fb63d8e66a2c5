"""Consents: granted, revoked, ended and expired, each change written to the outbox.

:class:`Consents` is the consent side of :class:`~portability.consent.ConsentService`; the
functions below change one consent inside a caller's transaction, for the app side
(:mod:`portability.consent.apps`: an app disabled, rejected or narrowed ends consents) and for
transfer requests (:mod:`portability.consent.transfer_requests`: an archive uses up a one-time
consent, a resync starts a new snapshot).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from portability.consent._time import normalize, utc_now
from portability.consent.copies import copy_after_conflict, refuse_active_copy
from portability.consent.errors import ConflictError, InvalidRequestError
from portability.consent.lookups import require_app, require_consent
from portability.consent.models import Consent, Transfer
from portability.consent.outbox_rows import append_event, outbox_payload, publish_consent
from portability.consent.regions import check_region
from portability.consent.validation import (
    MODES,
    STATUSES,
    check_choice,
    check_expiry,
    check_user_id,
    parse_categories,
)
from portability.consent.views import AppView, ConsentView
from portability.wire.notifications import authorization_removed
from portability.wire.records import RemovalReason

__all__ = [
    "Consents",
    "check_grantable",
    "end_consent",
    "end_unfit_consents",
    "snapshot_transfer",
]


class Consents:
    """Grants, revokes, ends and expires consents, and reads them.

    Methods are synchronous (call them from async code with ``asyncio.to_thread``); each is
    one transaction and returns frozen views, never ORM objects.
    """

    def __init__(self, engine: Engine) -> None:
        """Use ``engine``, whose schema :func:`~portability.consent.init_schema` created."""
        self._engine = engine

    def grant(
        self,
        user_id: str,
        app_id: str,
        categories: Sequence[str],
        mode: str = "ongoing",
        expires_at: datetime | None = None,
        now: datetime | None = None,
        *,
        user_region: str | None = None,
        initial_snapshot: bool = False,
    ) -> ConsentView:
        """Record that ``user_id`` lets ``app_id`` receive ``categories``, and publish it.

        Args:
            user_id: The data subject.
            app_id: A registered app.
            categories: Names from ``CATEGORIES``, or ``"all"`` for every one; duplicates
                are dropped.
            mode: ``"ongoing"`` (deltas as they happen) or ``"one_time"``.
            expires_at: When the consent ends by itself (aware, after ``now``); None: never.
            now: The time of the grant (aware); default the current time.
            user_region: The user's ISO 3166-1 country; only the EEA and the UK are served.
                None (trusted in-process callers only: CLI, demo) records no region; the
                API always requires it.
            initial_snapshot: For an ongoing consent, send the user's current records of
                ``categories`` first (snapshot epoch 1, built by a transfer builder), then
                the deltas. The API asks for it unless the app declines.

        Raises:
            InvalidRequestError: Empty or unknown categories, a bad mode, a naive or past
                ``expires_at``, a malformed region, a snapshot for a one-time consent.
            RegionNotServedError: The user is outside the EEA and the UK.
            ConflictError: The app is not approved or disabled, or a category is outside its
                approved scopes.
            DuplicateConsentError: The user already has an active consent for the app with
                the same mode and categories (named in the error): never two active copies.
            NotFoundError: ``app_id`` is not registered.
        """
        at = utc_now() if now is None else normalize(now, "now")
        region = None if user_region is None else check_region(user_region)
        consent = Consent(
            consent_id=f"cns_{secrets.token_hex(8)}",
            user_id=check_user_id(user_id),
            app_id=app_id,
            categories=parse_categories(categories),
            mode=check_choice("mode", mode, MODES),
            status="active",
            granted_at=at,
            expires_at=check_expiry(expires_at, at),
            updated_at=at,
            user_region=region,
        )
        if initial_snapshot:
            if consent.mode != "ongoing":
                raise InvalidRequestError(
                    "initial_snapshot is for ongoing consents: a one-time consent's data comes "
                    "as an archive (POST /v1/consents/{consent_id}/transfers)"
                )
            consent.snapshot_epoch = 1
        try:
            with Session(self._engine) as session, session.begin():
                check_grantable(AppView.of(require_app(session, app_id)), consent.category_list)
                refuse_active_copy(session, consent)
                session.add(consent)
                view = publish_consent(session, consent, at)
                if initial_snapshot:
                    session.add(snapshot_transfer(consent, at))
                return view
        except IntegrityError as error:
            # An identical grant committed between the check and the insert (the unique index).
            duplicate = copy_after_conflict(self._engine, consent)
            if duplicate is None:
                raise
            raise duplicate from error

    def revoke(
        self,
        consent_id: str,
        now: datetime | None = None,
        *,
        reason: RemovalReason = "user_revoked",
    ) -> ConsentView:
        """Revoke a consent and publish it; the app's flow stops once consumers apply it.

        Idempotent: a consent that is no longer active (revoked, or expired) is returned
        unchanged and nothing is published.

        Args:
            consent_id: The consent.
            now: The time of the revocation (aware); default the current time.
            reason: The removal reason the app is told, e.g. ``user_revoked`` or
                ``app_revoked``.

        Raises:
            NotFoundError: No such consent.
        """
        at = utc_now() if now is None else normalize(now, "now")
        with Session(self._engine) as session, session.begin():
            consent = require_consent(session, consent_id, for_update=True)
            if consent.status != "active":
                return ConsentView.of(consent)
            return end_consent(session, consent, reason, at)

    def end_user_consents(
        self, user_id: str, reason: RemovalReason = "account_deleted", now: datetime | None = None
    ) -> list[ConsentView]:
        """End every active consent of a user, e.g. when the account is deleted.

        Each app is told with ``authorization.removed`` and ``reason``. Returns the consents it
        ended, oldest grant first; none when the user has no active consent.
        """
        at = utc_now() if now is None else normalize(now, "now")
        query = (
            select(Consent)
            .where(col(Consent.user_id) == check_user_id(user_id))
            .where(col(Consent.status) == "active")
            .order_by(col(Consent.granted_at), col(Consent.consent_id))
            # Lock before allocating outbox ids: see portability.consent.outbox_rows.
            .with_for_update()
        )
        with Session(self._engine) as session, session.begin():
            return [end_consent(session, c, reason, at) for c in session.exec(query).all()]

    def get_consent(self, consent_id: str) -> ConsentView:
        """The consent ``consent_id``.

        Raises:
            NotFoundError: No such consent.
        """
        with Session(self._engine) as session:
            return ConsentView.of(require_consent(session, consent_id))

    def list_consents(
        self, user_id: str | None = None, app_id: str | None = None, status: str | None = None
    ) -> list[ConsentView]:
        """Consents matching every given filter, oldest grant first.

        Raises:
            InvalidRequestError: ``status`` is not active, revoked or expired.
        """
        query = select(Consent)
        if user_id is not None:
            query = query.where(col(Consent.user_id) == user_id)
        if app_id is not None:
            query = query.where(col(Consent.app_id) == app_id)
        if status is not None:
            query = query.where(col(Consent.status) == check_choice("status", status, STATUSES))
        query = query.order_by(col(Consent.granted_at), col(Consent.consent_id))
        with Session(self._engine) as session:
            return [ConsentView.of(consent) for consent in session.exec(query)]

    def expire_due(self, now: datetime | None = None) -> list[ConsentView]:
        """Mark active consents whose ``expires_at`` is at or before ``now`` as expired.

        Each one is published. Returns the consents it expired, earliest expiry first.
        """
        at = utc_now() if now is None else normalize(now, "now")
        query = (
            select(Consent)
            .where(col(Consent.status) == "active")
            .where(col(Consent.expires_at).is_not(None))
            .where(col(Consent.expires_at) <= at)
            .order_by(col(Consent.expires_at), col(Consent.consent_id))
            # Lock before allocating outbox ids: see portability.consent.outbox_rows.
            .with_for_update()
        )
        with Session(self._engine) as session, session.begin():
            return [
                end_consent(session, consent, "expired", at)
                for consent in session.exec(query).all()
            ]


def end_consent(
    session: Session, consent: Consent, reason: RemovalReason, now: datetime
) -> ConsentView:
    """Stop an active consent and tell its app, in the caller's transaction.

    The consent becomes ``expired`` when it ended by itself (``expired``, or ``completed``:
    a one-time consent used up by its archive), ``revoked`` for any other reason. Lock the
    consent's row first (see :mod:`portability.consent.outbox_rows`).
    """
    ended_by_itself = reason in ("expired", "completed")
    consent.status = "expired" if ended_by_itself else "revoked"
    if not ended_by_itself:
        consent.revoked_at = now
    consent.removal_reason = reason
    consent.updated_at = now
    view = publish_consent(session, consent, now)
    # Same transaction: the app hears of the removal if and only if it is committed.
    notification = authorization_removed(
        consent_id=view.consent_id,
        app_id=view.app_id,
        user_id=view.user_id,
        reason=reason,
        removed_at=now,
        version=view.version,
    )
    event = append_event(session, "notification", view.consent_id, view.user_id, now)
    event.payload = outbox_payload(notification)
    return view


def end_unfit_consents(
    session: Session, app: AppView, reason: RemovalReason, now: datetime
) -> None:
    """End the app's active consents it may no longer hold (disabled, rejected, narrowed)."""
    query = (
        select(Consent)
        .where(col(Consent.app_id) == app.app_id)
        .where(col(Consent.status) == "active")
        .order_by(col(Consent.granted_at), col(Consent.consent_id))
        .with_for_update()
    )
    allowed = set(app.approved_scopes) if app.can_receive else set()
    for consent in session.exec(query).all():
        if not set(consent.category_list) <= allowed:
            end_consent(session, consent, reason, now)


def check_grantable(app: AppView, categories: Sequence[str]) -> None:
    """Refuse a grant to an app not approved, disabled, or not approved for ``categories``."""
    if app.review_status != "approved":
        raise ConflictError(
            f"app {app.app_id!r} is {app.review_status}, not approved: only apps that passed "
            "review can receive consents"
        )
    if not app.enabled:
        raise ConflictError(f"app {app.app_id!r} is disabled: it cannot receive consents")
    outside = [category for category in categories if category not in app.approved_scopes]
    if outside:
        raise ConflictError(
            f"categories {', '.join(outside)} are outside app {app.app_id!r}'s approved "
            f"scopes ({', '.join(app.approved_scopes) or 'none'}): grant only those"
        )


def snapshot_transfer(consent: Consent, now: datetime) -> Transfer:
    """The pending transfer that builds snapshot ``consent.snapshot_epoch`` of the consent."""
    return Transfer(
        transfer_id=f"trf_{secrets.token_hex(8)}",
        consent_id=consent.consent_id,
        app_id=consent.app_id,
        user_id=consent.user_id,
        categories=consent.categories,
        kind="snapshot",
        snapshot_epoch=consent.snapshot_epoch,
        state="pending",
        created_at=now,
    )
