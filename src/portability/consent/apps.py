"""Apps: registered, reviewed, enabled, re-pointed, and their signing secrets rotated.

:class:`Apps` is the app side of :class:`~portability.consent.ConsentService`. Each change
writes the app's new state to the outbox (:mod:`portability.consent.outbox_rows`); a change
that takes away what an app may receive (disabled, rejected, narrowed) ends its consents
that no longer fit, in the same transaction
(:func:`~portability.consent.consents.end_unfit_consents`).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from portability.consent._time import normalize, utc_now
from portability.consent.consents import end_unfit_consents
from portability.consent.credentials import API_KEY_PREFIX, hash_api_key, new_api_key
from portability.consent.errors import InvalidRequestError
from portability.consent.lookups import require_app
from portability.consent.models import App
from portability.consent.outbox_rows import publish_app
from portability.consent.signing_secrets import Rotation, drop_ended, issue_first, rotate
from portability.consent.validation import (
    ALL_CATEGORIES,
    MAX_REASON,
    MAX_USE_CASE,
    check_app_fields,
    check_delivery,
    check_text,
    check_webhook_url,
    parse_categories,
)
from portability.consent.views import AppView
from portability.sealing import SecretsKeys
from portability.webhooks.egress import EgressPolicy

__all__ = ["AppRegistration", "Apps", "ReviewDecision"]

ReviewDecision = Literal["approve", "reject"]


@dataclass(frozen=True, slots=True)
class AppRegistration:
    """A newly registered app and its API key, which is shown this once and never stored."""

    app: AppView
    api_key: str = field(repr=False)


class Apps:
    """Registers, reviews, enables and re-points apps, and rotates their signing secrets.

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
        delivery_mode: str = "webhook",
    ) -> AppView:
        """Register an app, approved for the scopes it requests, and publish it.

        This is the trusted path (operator CLI, demo): no review, no API key. Developers
        self-register with :meth:`apply_for_app` instead.

        Args:
            name: Display name, 1 to 200 characters.
            webhook_url: An ``http(s)://`` URL with a host (``https`` outside development
                mode); its host must pass the service's webhook policy. ``""`` for a poll
                app without one.
            app_id: A chosen id (letters, digits, ``_.:-``, at most 64); default
                ``app_<12 hex>``.
            use_case: What the app does with the data.
            requested_scopes: Categories (or ``"all"``); default every category.
            delivery_mode: ``webhook`` (default) or ``poll`` (events read from the app's
                pull feed instead of POSTed).

        Raises:
            InvalidRequestError: A bad argument, or ``app_id`` is already registered.
        """
        scopes = parse_categories(requested_scopes, "requested_scopes")
        return self._register(
            name,
            webhook_url,
            app_id,
            use_case,
            scopes,
            approved=True,
            api_key_hash=None,
            delivery_mode=delivery_mode,
        )

    def apply_for_app(
        self,
        name: str,
        webhook_url: str,
        use_case: str,
        requested_scopes: Sequence[str],
        app_id: str | None = None,
        *,
        delivery_mode: str = "webhook",
    ) -> AppRegistration:
        """A developer's self-registration: a pending app with an API key, awaiting review.

        The arguments are :meth:`register_app`'s.

        Raises:
            InvalidRequestError: A bad argument (a use case is required), or ``app_id`` is
                already registered.
        """
        if not use_case.strip():
            raise InvalidRequestError(
                "use_case is required: describe what the app does with each scope it requests"
            )
        scopes = parse_categories(requested_scopes, "requested_scopes")
        api_key = new_api_key()
        view = self._register(
            name,
            webhook_url,
            app_id,
            use_case,
            scopes,
            approved=False,
            api_key_hash=hash_api_key(api_key),
            delivery_mode=delivery_mode,
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
        delivery_mode: str,
    ) -> AppView:
        mode = check_app_fields(name, webhook_url, app_id, self._webhook_policy, delivery_mode)
        check_text("use_case", use_case, MAX_USE_CASE)
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
            delivery_mode=mode,
        )
        try:
            with Session(self._engine) as session, session.begin():
                if session.get(App, app.app_id) is not None:
                    raise InvalidRequestError(
                        f"app_id {app.app_id!r} is already registered: choose another or omit it"
                    )
                session.add(app)
                issue_first(app, self._keys)
                view = publish_app(session, app, now, self._keys)
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
        check_text("reason", reason or "", MAX_REASON)
        with Session(self._engine) as session, session.begin():
            app = require_app(session, app_id, for_update=True)
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
            view = publish_app(session, app, at, self._keys)
            end_unfit_consents(session, view, "policy", at)
            return view

    def set_app_enabled(self, app_id: str, enabled: bool, now: datetime | None = None) -> AppView:
        """Enable or disable an app; disabling ends its active consents (``app_disabled``).

        Raises:
            NotFoundError: No such app.
        """
        at = utc_now() if now is None else normalize(now, "now")
        with Session(self._engine) as session, session.begin():
            app = require_app(session, app_id, for_update=True)
            if app.enabled == enabled:
                return AppView.of(app, self._keys)
            app.enabled = enabled
            view = publish_app(session, app, at, self._keys)
            end_unfit_consents(session, view, "app_disabled", at)
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
            app = require_app(session, app_id, for_update=True)
            rotation = rotate(app, self._keys, overlap_s, at, idempotency_key)
            if rotation.repeated:
                return AppView.of(app, self._keys), rotation
            return publish_app(session, app, at, self._keys), rotation

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
        check_webhook_url(webhook_url, self._webhook_policy)
        at = utc_now() if now is None else normalize(now, "now")
        with Session(self._engine) as session, session.begin():
            app = require_app(session, app_id, for_update=True)
            if app.webhook_url == webhook_url:
                return AppView.of(app, self._keys)
            app.webhook_url = webhook_url
            return publish_app(session, app, at, self._keys)

    def set_delivery_mode(
        self, app_id: str, delivery_mode: str, webhook_url: str | None = None
    ) -> AppView:
        """Switch how the app receives: ``webhook`` (POSTed) or ``poll`` (its pull feed).

        Events produced after the switch go the new way; those already in the feed stay
        there until its retention. Switching to ``webhook`` needs a URL: ``webhook_url``,
        or the one the app kept.

        Raises:
            InvalidRequestError: An unknown mode, a webhook app without an allowed URL.
            NotFoundError: No such app.
        """
        with Session(self._engine) as session, session.begin():
            app = require_app(session, app_id, for_update=True)
            url = app.webhook_url if webhook_url is None else webhook_url
            mode = check_delivery(delivery_mode, url, self._webhook_policy)
            if (app.delivery_mode, app.webhook_url) == (mode, url):
                return AppView.of(app, self._keys)
            app.delivery_mode, app.webhook_url = mode, url
            return publish_app(session, app, utc_now(), self._keys)

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
                publish_app(session, app, at, self._keys)
                for app in session.exec(query).all()
                if drop_ended(app, at)
            ]

    def get_app(self, app_id: str) -> AppView:
        """The app ``app_id``.

        Raises:
            NotFoundError: No such app.
        """
        with Session(self._engine) as session:
            return AppView.of(require_app(session, app_id), self._keys)

    def list_apps(self, *, review_status: str | None = None) -> list[AppView]:
        """Registered apps, oldest first: every one, or those in ``review_status``."""
        with Session(self._engine) as session:
            query = select(App).order_by(col(App.created_at), col(App.app_id))
            if review_status is not None:
                query = query.where(col(App.review_status) == review_status)
            return [AppView.of(app, self._keys) for app in session.exec(query)]


def _approved_scopes(app: App, approved: Sequence[str] | None) -> str:
    if approved is None:
        return app.requested_scopes
    scopes = parse_categories(approved, "approved_scopes")
    requested = app.requested_scopes.split(",")
    outside = [scope for scope in scopes.split(",") if scope not in requested]
    if outside:
        raise InvalidRequestError(
            f"approved_scopes {', '.join(outside)} were not requested (requested: "
            f"{app.requested_scopes}): approve a subset of the requested scopes"
        )
    return scopes
