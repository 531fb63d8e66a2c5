"""Apps and consents, with a transactional outbox.

Every state change writes an :class:`~portability.consent.models.OutboxEvent` in the same
transaction as the change, so a change is published if and only if it is committed. The
outbox row's id is the state's ``version``: ids only grow, and a consent's row is locked
before its outbox row is allocated, so a consent's versions grow in commit order too.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from portability.consent._time import millis, normalize, utc_now
from portability.consent.copies import copy_after_conflict, refuse_active_copy
from portability.consent.errors import ConflictError, InvalidRequestError, NotFoundError
from portability.consent.models import App, Consent, OutboxEvent, OutboxKind, Transfer
from portability.consent.regions import check_region
from portability.consent.signing_secrets import Rotation, drop_ended, issue_first, rotate
from portability.consent.views import AppView, ConsentView
from portability.sealing import SecretsKeys
from portability.webhooks.egress import EgressPolicy, EgressRefusedError
from portability.webhooks.signing import generate_secret
from portability.wire.notifications import authorization_removed
from portability.wire.records import CATEGORIES, RemovalReason
from portability.wire.topics import consent_key

__all__ = [
    "ALL_CATEGORIES",
    "AppRegistration",
    "ConsentService",
    "ReviewDecision",
    "end_consent",
    "hash_api_key",
    "new_api_key",
    "new_signing_secret",
    "publish_consent",
    "require_consent",
    "snapshot_transfer",
]

ALL_CATEGORIES = "all"
"""The category name that stands for every category (the "full archive" scope)."""

_MODES = ("one_time", "ongoing")
_STATUSES = ("active", "revoked", "expired")
_APP_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_MAX_USER_ID = 200
_MAX_NAME = 200
_MAX_URL = 2048
_MAX_USE_CASE = 2000
_MAX_REASON = 2000
API_KEY_PREFIX = "pk_"

ReviewDecision = Literal["approve", "reject"]


def new_signing_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` and base64 of 24 random bytes."""
    return generate_secret()


def new_api_key() -> str:
    """A fresh app API key: ``pk_`` and 43 URL-safe characters (32 random bytes)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    """What the store keeps of an API key: its SHA-256, hex (the key has 256 random bits)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AppRegistration:
    """A newly registered app and its API key, which is shown this once and never stored."""

    app: AppView
    api_key: str = field(repr=False)


class ConsentService:
    """Registers apps and grants, revokes and expires consents.

    Methods are synchronous (call them from async code with ``asyncio.to_thread``); each is
    one transaction and returns frozen views, never ORM objects.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        webhook_policy: EgressPolicy | None = None,
        secrets: SecretsKeys | None = None,
    ) -> None:
        """Use ``engine``, whose schema :func:`~portability.consent.init_schema` created.

        Args:
            engine: The consent store.
            webhook_policy: The rules webhook URLs must meet (``EgressPolicy.from_settings``);
                default development mode's: http allowed, loopback allowed.
            secrets: The keys that seal apps' signing secrets
                (``SecretsKeys.from_settings``); default a key of this process only.
        """
        self._engine = engine
        self._webhook_policy = webhook_policy or EgressPolicy()
        # The ephemeral default seals what no other process can open: for tests only.
        self._keys = secrets or SecretsKeys.ephemeral()

    def register_app(
        self,
        name: str,
        webhook_url: str,
        app_id: str | None = None,
        *,
        use_case: str = "",
        requested_scopes: Sequence[str] = (ALL_CATEGORIES,),
    ) -> AppView:
        """Register an app, approved for the scopes it requests, and publish it.

        This is the trusted path (operator CLI, demo): no review, no API key. Developers
        self-register with :meth:`apply_for_app` instead.

        Args:
            name: Display name, 1 to 200 characters.
            webhook_url: An ``http(s)://`` URL with a host (``https`` outside development
                mode); its host must pass the service's webhook policy.
            app_id: A chosen id (letters, digits, ``_.:-``, at most 64); default
                ``app_<12 hex>``.
            use_case: What the app does with the data.
            requested_scopes: Categories (or ``"all"``); default every category.

        Raises:
            InvalidRequestError: A bad argument, or ``app_id`` is already registered.
        """
        scopes = _parse_categories(requested_scopes, "requested_scopes")
        return self._register(
            name, webhook_url, app_id, use_case, scopes, approved=True, api_key_hash=None
        )

    def apply_for_app(
        self,
        name: str,
        webhook_url: str,
        use_case: str,
        requested_scopes: Sequence[str],
        app_id: str | None = None,
    ) -> AppRegistration:
        """A developer's self-registration: a pending app with an API key, awaiting review.

        Raises:
            InvalidRequestError: A bad argument (a use case is required), or ``app_id`` is
                already registered.
        """
        if not use_case.strip():
            raise InvalidRequestError(
                "use_case is required: describe what the app does with each scope it requests"
            )
        scopes = _parse_categories(requested_scopes, "requested_scopes")
        api_key = new_api_key()
        view = self._register(
            name,
            webhook_url,
            app_id,
            use_case,
            scopes,
            approved=False,
            api_key_hash=hash_api_key(api_key),
        )
        return AppRegistration(view, api_key)

    def _register(
        self,
        name: str,
        webhook_url: str,
        app_id: str | None,
        use_case: str,
        scopes: str,
        *,
        approved: bool,
        api_key_hash: str | None,
    ) -> AppView:
        _check_app_fields(name, webhook_url, app_id, self._webhook_policy)
        _check_text("use_case", use_case, _MAX_USE_CASE)
        now = utc_now()
        app = App(
            app_id=app_id or f"app_{secrets.token_hex(6)}",
            name=name,
            webhook_url=webhook_url,
            created_at=now,
            use_case=use_case,
            requested_scopes=scopes,
            approved_scopes=scopes if approved else "",
            review_status="approved" if approved else "pending",
            api_key_hash=api_key_hash,
        )
        try:
            with Session(self._engine) as session, session.begin():
                if session.get(App, app.app_id) is not None:
                    raise InvalidRequestError(
                        f"app_id {app.app_id!r} is already registered: choose another or omit it"
                    )
                session.add(app)
                issue_first(app, self._keys)
                view = _publish_app(session, app, now, self._keys)
        except IntegrityError as error:
            # Lost a race with a concurrent registration of the same id.
            raise InvalidRequestError(f"app_id {app.app_id!r} is already registered") from error
        return view

    def authenticate_app(self, api_key: str) -> AppView | None:
        """The app whose API key is ``api_key``, or None."""
        if not api_key.startswith(API_KEY_PREFIX):
            return None
        query = select(App).where(col(App.api_key_hash) == hash_api_key(api_key))
        with Session(self._engine) as session:
            app = session.exec(query).first()
            return None if app is None else AppView.of(app, self._keys)

    def review_app(
        self,
        app_id: str,
        decision: ReviewDecision,
        *,
        approved_scopes: Sequence[str] | None = None,
        reason: str | None = None,
        now: datetime | None = None,
    ) -> AppView:
        """An operator's review: approve (within the requested scopes) or reject with a reason.

        Rejecting an app, or narrowing its scopes, ends its active consents that no longer
        fit, with removal reason ``policy``.

        Args:
            app_id: The app.
            decision: ``approve`` or ``reject``.
            approved_scopes: On approval, categories (or ``"all"``) within those requested;
                default all requested.
            reason: Why; required to reject.
            now: The time of the review (aware); default the current time.

        Raises:
            InvalidRequestError: Scopes beyond those requested, a rejection without a reason.
            NotFoundError: No such app.
        """
        at = utc_now() if now is None else normalize(now, "now")
        _check_text("reason", reason or "", _MAX_REASON)
        with Session(self._engine) as session, session.begin():
            app = _require_app(session, app_id, for_update=True)
            if decision == "approve":
                app.approved_scopes = _approved_scopes(app, approved_scopes)
                app.review_status = "approved"
            elif decision == "reject":
                if not reason or not reason.strip():
                    raise InvalidRequestError("reason is required to reject an app: say why")
                app.approved_scopes = ""
                app.review_status = "rejected"
            else:
                raise InvalidRequestError(f"unknown decision {decision!r}: approve or reject")
            app.review_reason = reason
            view = _publish_app(session, app, at, self._keys)
            _end_unfit_consents(session, view, "policy", at)
            return view

    def set_app_enabled(self, app_id: str, enabled: bool, now: datetime | None = None) -> AppView:
        """Enable or disable an app; disabling ends its active consents (``app_disabled``).

        Raises:
            NotFoundError: No such app.
        """
        at = utc_now() if now is None else normalize(now, "now")
        with Session(self._engine) as session, session.begin():
            app = _require_app(session, app_id, for_update=True)
            if app.enabled == enabled:
                return AppView.of(app, self._keys)
            app.enabled = enabled
            view = _publish_app(session, app, at, self._keys)
            _end_unfit_consents(session, view, "app_disabled", at)
            return view

    def rotate_secret(
        self,
        app_id: str,
        overlap_s: float,
        now: datetime | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> tuple[AppView, Rotation]:
        """Give the app a new signing secret; the one it replaces keeps signing ``overlap_s``.

        Earlier secrets still in their overlap keep signing too, up to three secrets at once;
        ``overlap_s`` 0 drops every previous one. Repeating a rotation with its
        ``idempotency_key`` changes nothing. See :mod:`portability.consent.signing_secrets`.

        Returns:
            The app, and the rotation: the new secret in the clear, and whether it was made
            by an earlier call with the same key.

        Raises:
            InvalidRequestError: A negative overlap.
            RotationLimitError: Three secrets sign already (it says when the oldest stops).
            ConflictError: ``idempotency_key`` made a secret a later rotation replaced.
            NotFoundError: No such app.
        """
        if overlap_s < 0:
            raise InvalidRequestError(f"overlap_s must be 0 or more seconds, got {overlap_s}")
        at = utc_now() if now is None else normalize(now, "now")
        with Session(self._engine) as session, session.begin():
            app = _require_app(session, app_id, for_update=True)
            rotation = rotate(app, self._keys, overlap_s, at, idempotency_key)
            if rotation.repeated:
                return AppView.of(app, self._keys), rotation
            return _publish_app(session, app, at, self._keys), rotation

    def set_webhook_url(
        self, app_id: str, webhook_url: str, now: datetime | None = None
    ) -> AppView:
        """Point the app's deliveries at a new URL (and publish it).

        A delivery worker that disabled the old endpoint (410 Gone, or failing too long)
        starts afresh with the new one: parked deliveries go there, in order.

        Raises:
            InvalidRequestError: The URL is not allowed (scheme, host, address rules).
            NotFoundError: No such app.
        """
        _check_webhook_url(webhook_url, self._webhook_policy)
        at = utc_now() if now is None else normalize(now, "now")
        with Session(self._engine) as session, session.begin():
            app = _require_app(session, app_id, for_update=True)
            if app.webhook_url == webhook_url:
                return AppView.of(app, self._keys)
            app.webhook_url = webhook_url
            return _publish_app(session, app, at, self._keys)

    def end_secret_overlaps(self, now: datetime | None = None) -> list[AppView]:
        """Drop previous secrets whose overlap ended at or before ``now``, and publish each app.

        Run it periodically (the API server does); returns the apps it changed.
        """
        at = utc_now() if now is None else normalize(now, "now")
        query = (
            select(App)
            .where(col(App.previous_secret_expires_at).is_not(None))
            .where(col(App.previous_secret_expires_at) <= at)
            .order_by(col(App.app_id))
            .with_for_update()
        )
        with Session(self._engine) as session, session.begin():
            return [
                _publish_app(session, app, at, self._keys)
                for app in session.exec(query).all()
                if drop_ended(app, at)
            ]

    def get_app(self, app_id: str) -> AppView:
        """The app ``app_id``.

        Raises:
            NotFoundError: No such app.
        """
        with Session(self._engine) as session:
            return AppView.of(_require_app(session, app_id), self._keys)

    def list_apps(self, *, review_status: str | None = None) -> list[AppView]:
        """Registered apps, oldest first: every one, or those in ``review_status``."""
        with Session(self._engine) as session:
            query = select(App).order_by(col(App.created_at), col(App.app_id))
            if review_status is not None:
                query = query.where(col(App.review_status) == review_status)
            return [AppView.of(app, self._keys) for app in session.exec(query)]

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
            user_id=_check_user_id(user_id),
            app_id=app_id,
            categories=_parse_categories(categories),
            mode=_check_choice("mode", mode, _MODES),
            status="active",
            granted_at=at,
            expires_at=_check_expiry(expires_at, at),
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
                _check_grantable(AppView.of(_require_app(session, app_id)), consent.category_list)
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
            .where(col(Consent.user_id) == _check_user_id(user_id))
            .where(col(Consent.status) == "active")
            .order_by(col(Consent.granted_at), col(Consent.consent_id))
            # Lock before allocating outbox ids: see the module docstring.
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
            query = query.where(col(Consent.status) == _check_choice("status", status, _STATUSES))
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
            # Lock before allocating outbox ids: see the module docstring.
            .with_for_update()
        )
        with Session(self._engine) as session, session.begin():
            return [
                end_consent(session, consent, "expired", at)
                for consent in session.exec(query).all()
            ]


def _require_app(session: Session, app_id: str, *, for_update: bool = False) -> App:
    query = select(App).where(col(App.app_id) == app_id)
    if for_update:
        query = query.with_for_update()
    app = session.exec(query).first()
    if app is None:
        raise NotFoundError(f"no app {app_id!r}: register it first (or check the id)")
    return app


def require_consent(session: Session, consent_id: str, *, for_update: bool = False) -> Consent:
    query = select(Consent).where(col(Consent.consent_id) == consent_id)
    if for_update:
        query = query.with_for_update()
    consent = session.exec(query).first()
    if consent is None:
        raise NotFoundError(f"no consent {consent_id!r}: check the id")
    return consent


def end_consent(
    session: Session, consent: Consent, reason: RemovalReason, now: datetime
) -> ConsentView:
    """Stop an active consent and tell its app, in the caller's transaction.

    The consent becomes ``expired`` when it ended by itself (``expired``, or ``completed``:
    a one-time consent used up by its archive), ``revoked`` for any other reason. Lock the
    consent's row first (see the module docstring).
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
    event = _append_event(session, "notification", view.consent_id, view.user_id, now)
    event.payload = outbox_payload(notification)
    return view


def _end_unfit_consents(
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


def _check_grantable(app: AppView, categories: Sequence[str]) -> None:
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


def _approved_scopes(app: App, approved: Sequence[str] | None) -> str:
    if approved is None:
        return app.requested_scopes
    scopes = _parse_categories(approved, "approved_scopes")
    requested = app.requested_scopes.split(",")
    outside = [scope for scope in scopes.split(",") if scope not in requested]
    if outside:
        raise InvalidRequestError(
            f"approved_scopes {', '.join(outside)} were not requested (requested: "
            f"{app.requested_scopes}): approve a subset of the requested scopes"
        )
    return scopes


def _publish_app(
    session: Session, app: App, now: datetime, keys: SecretsKeys | None = None
) -> AppView:
    """Write the app's new state to the outbox; its version is the outbox row's id."""
    event = _append_event(session, "app", app.app_id, None, now)
    app.version = _assigned_id(event)
    view = AppView.of(app, keys)
    event.payload = outbox_payload(view.to_record())
    return view


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


def publish_consent(session: Session, consent: Consent, now: datetime) -> ConsentView:
    """Write the consent's new state to the outbox; its version is the outbox row's id."""
    key = consent_key(consent.user_id, consent.consent_id).decode()
    event = _append_event(session, "consent", key, consent.user_id, now)
    consent.version = _assigned_id(event)
    view = ConsentView.of(consent)
    event.payload = outbox_payload(view.to_record())
    return view


def _append_event(
    session: Session, kind: OutboxKind, key: str, user_id: str | None, now: datetime
) -> OutboxEvent:
    """Insert an outbox row whose payload the caller fills in once it knows the id."""
    event = OutboxEvent(kind=kind, key=key, user_id=user_id, payload="", created_at=now)
    session.add(event)
    # The payload carries the version, which is the row id: the flush makes the database
    # assign it inside this transaction.
    session.flush()
    return event


def _assigned_id(event: OutboxEvent) -> int:
    if event.id is None:  # pragma: no cover - a flushed row always has its primary key
        raise RuntimeError("the database assigned no outbox id")
    return event.id


def outbox_payload(record: Mapping[str, Any]) -> str:
    """The JSON an outbox row carries: exactly the record the relay encodes (millis times)."""
    return json.dumps(record, default=_json_default, separators=(",", ":"))


def _json_default(value: object) -> object:
    # Avro timestamp-millis: the payload is exactly the record the relay encodes.
    if isinstance(value, datetime):
        return millis(value)
    raise TypeError(f"cannot put {type(value).__name__} in an outbox payload")


def _parse_categories(categories: Sequence[str], name: str = "categories") -> str:
    """The stored form: deduplicated, in ``CATEGORIES`` order, comma-separated."""
    allowed = f"any of {', '.join(CATEGORIES)}, or {ALL_CATEGORIES!r} for every one"
    if isinstance(categories, str):
        # A str is a Sequence[str] of letters: a classic slip worth a clear message.
        raise InvalidRequestError(f"{name} must be a list such as [{categories!r}]")
    wanted: set[str] = set()
    for category in categories:
        if category == ALL_CATEGORIES:
            wanted.update(CATEGORIES)
        elif category in CATEGORIES:
            wanted.add(category)
        else:
            raise InvalidRequestError(f"unknown category {category!r}: use {allowed} ({name})")
    if not wanted:
        raise InvalidRequestError(f"{name} is empty: grant at least one, {allowed}")
    return ",".join(category for category in CATEGORIES if category in wanted)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InvalidRequestError(f"unknown {name} {value!r}: use one of {', '.join(choices)}")
    return value


def _check_user_id(user_id: str) -> str:
    if not user_id or len(user_id) > _MAX_USER_ID:
        raise InvalidRequestError(f"user_id must be 1 to {_MAX_USER_ID} characters")
    return user_id


def _check_text(name: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidRequestError(f"{name} must be at most {limit} characters")


def _check_expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    if expires_at is None:
        return None
    expires = normalize(expires_at, "expires_at")
    if expires <= now:
        raise InvalidRequestError(
            f"expires_at {expires.isoformat()} is not after now ({now.isoformat()}): "
            "give a future time, or None for no expiry"
        )
    return expires


def _check_app_fields(
    name: str, webhook_url: str, app_id: str | None, policy: EgressPolicy
) -> None:
    if not name.strip() or len(name) > _MAX_NAME:
        raise InvalidRequestError(f"name must be 1 to {_MAX_NAME} characters, not blank")
    _check_webhook_url(webhook_url, policy)
    if app_id is not None and not _APP_ID.fullmatch(app_id):
        raise InvalidRequestError(
            f"app_id {app_id!r} must be 1 to 64 letters, digits or _ . : -, or omitted"
        )


def _check_webhook_url(webhook_url: str, policy: EgressPolicy) -> None:
    """Refuse at registration what the worker would refuse anyway, with what to fix.

    Only what needs no DNS is checked here (scheme, metadata names, literal IP addresses): a
    name's addresses can change, so the worker checks them again on every connection.
    """
    try:
        parts = urlsplit(webhook_url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed "[" in the host
        usable = False
    if not usable or len(webhook_url) > _MAX_URL:
        raise InvalidRequestError(
            f"webhook_url {webhook_url!r} must be an http(s) URL with a host, "
            f"at most {_MAX_URL} characters"
        )
    try:
        policy.check_url(webhook_url)
    except EgressRefusedError as error:
        raise InvalidRequestError(f"{error}; register a public https endpoint") from error
