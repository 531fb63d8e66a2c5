"""Apps and consents, with a transactional outbox.

Every state change writes an :class:`~portability.consent.models.OutboxEvent` in the same
transaction as the change, so a change is published if and only if it is committed. The
outbox row's id is the state's ``version``: ids only grow, and a consent's row is locked
before its outbox row is allocated, so a consent's versions grow in commit order too.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from portability.consent._time import millis, normalize, utc_now
from portability.consent.errors import InvalidRequestError, NotFoundError
from portability.consent.models import App, Consent, OutboxEvent, OutboxKind
from portability.consent.views import AppView, ConsentView
from portability.delivery.signing import generate_secret
from portability.wire.records import CATEGORIES
from portability.wire.topics import consent_key

__all__ = ["ALL_CATEGORIES", "ConsentService", "new_signing_secret"]

ALL_CATEGORIES = "all"
"""The category name that stands for every category (the "full archive" scope)."""

_MODES = ("one_time", "ongoing")
_STATUSES = ("active", "revoked", "expired")
_APP_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_MAX_USER_ID = 200
_MAX_NAME = 200
_MAX_URL = 2048


def new_signing_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` and base64 of 24 random bytes."""
    return generate_secret()


class ConsentService:
    """Registers apps and grants, revokes and expires consents.

    Methods are synchronous (call them from async code with ``asyncio.to_thread``); each is
    one transaction and returns frozen views, never ORM objects.
    """

    def __init__(self, engine: Engine) -> None:
        """Use ``engine``, whose schema :func:`~portability.consent.init_schema` created."""
        self._engine = engine

    def register_app(self, name: str, webhook_url: str, app_id: str | None = None) -> AppView:
        """Register an app with a new signing secret and publish it.

        Args:
            name: Display name, 1 to 200 characters.
            webhook_url: An ``http(s)://`` URL with a host.
            app_id: A chosen id (letters, digits, ``_.:-``, at most 64); default
                ``app_<12 hex>``.

        Raises:
            InvalidRequestError: A bad argument, or ``app_id`` is already registered.
        """
        _check_app_fields(name, webhook_url, app_id)
        now = utc_now()
        app = App(
            app_id=app_id or f"app_{secrets.token_hex(6)}",
            name=name,
            webhook_url=webhook_url,
            signing_secret=new_signing_secret(),
            created_at=now,
        )
        try:
            with Session(self._engine) as session, session.begin():
                if session.get(App, app.app_id) is not None:
                    raise InvalidRequestError(
                        f"app_id {app.app_id!r} is already registered: choose another or omit it"
                    )
                session.add(app)
                event = _append_event(session, "app", app.app_id, None, now)
                app.version = _assigned_id(event)
                view = AppView.of(app)
                event.payload = _payload_json(view.to_record())
        except IntegrityError as error:
            # Lost a race with a concurrent registration of the same id.
            raise InvalidRequestError(f"app_id {app.app_id!r} is already registered") from error
        return view

    def get_app(self, app_id: str) -> AppView:
        """The app ``app_id``.

        Raises:
            NotFoundError: No such app.
        """
        with Session(self._engine) as session:
            return AppView.of(_require_app(session, app_id))

    def list_apps(self) -> list[AppView]:
        """Every registered app, oldest first."""
        with Session(self._engine) as session:
            apps = session.exec(select(App).order_by(col(App.created_at), col(App.app_id)))
            return [AppView.of(app) for app in apps]

    def grant(
        self,
        user_id: str,
        app_id: str,
        categories: Sequence[str],
        mode: str = "ongoing",
        expires_at: datetime | None = None,
        now: datetime | None = None,
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

        Raises:
            InvalidRequestError: Empty or unknown categories, a bad mode, a naive or past
                ``expires_at``.
            NotFoundError: ``app_id`` is not registered.
        """
        at = utc_now() if now is None else normalize(now, "now")
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
        )
        with Session(self._engine) as session, session.begin():
            _require_app(session, app_id)
            session.add(consent)
            return _publish_consent(session, consent, at)

    def revoke(self, consent_id: str, now: datetime | None = None) -> ConsentView:
        """Revoke a consent and publish it; the app's flow stops once consumers apply it.

        Idempotent: a consent that is no longer active (revoked, or expired) is returned
        unchanged and nothing is published.

        Raises:
            NotFoundError: No such consent.
        """
        at = utc_now() if now is None else normalize(now, "now")
        with Session(self._engine) as session, session.begin():
            consent = _require_consent(session, consent_id, for_update=True)
            if consent.status != "active":
                return ConsentView.of(consent)
            consent.status = "revoked"
            consent.revoked_at = at
            consent.updated_at = at
            return _publish_consent(session, consent, at)

    def get_consent(self, consent_id: str) -> ConsentView:
        """The consent ``consent_id``.

        Raises:
            NotFoundError: No such consent.
        """
        with Session(self._engine) as session:
            return ConsentView.of(_require_consent(session, consent_id))

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
            expired = []
            for consent in session.exec(query).all():
                consent.status = "expired"
                consent.updated_at = at
                expired.append(_publish_consent(session, consent, at))
            return expired


def _require_app(session: Session, app_id: str) -> App:
    app = session.get(App, app_id)
    if app is None:
        raise NotFoundError(f"no app {app_id!r}: register it first (or check the id)")
    return app


def _require_consent(session: Session, consent_id: str, *, for_update: bool = False) -> Consent:
    query = select(Consent).where(col(Consent.consent_id) == consent_id)
    if for_update:
        query = query.with_for_update()
    consent = session.exec(query).first()
    if consent is None:
        raise NotFoundError(f"no consent {consent_id!r}")
    return consent


def _publish_consent(session: Session, consent: Consent, now: datetime) -> ConsentView:
    """Write the consent's new state to the outbox; its version is the outbox row's id."""
    key = consent_key(consent.user_id, consent.consent_id).decode()
    event = _append_event(session, "consent", key, consent.user_id, now)
    consent.version = _assigned_id(event)
    view = ConsentView.of(consent)
    event.payload = _payload_json(view.to_record())
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


def _payload_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, default=_json_default, separators=(",", ":"))


def _json_default(value: object) -> object:
    # Avro timestamp-millis: the payload is exactly the record the relay encodes.
    if isinstance(value, datetime):
        return millis(value)
    raise TypeError(f"cannot put {type(value).__name__} in an outbox payload")


def _parse_categories(categories: Sequence[str]) -> str:
    """The stored form: deduplicated, in ``CATEGORIES`` order, comma-separated."""
    allowed = f"any of {', '.join(CATEGORIES)}, or {ALL_CATEGORIES!r} for every one"
    if isinstance(categories, str):
        # A str is a Sequence[str] of letters: a classic slip worth a clear message.
        raise InvalidRequestError(f"categories must be a list such as [{categories!r}]")
    wanted: set[str] = set()
    for category in categories:
        if category == ALL_CATEGORIES:
            wanted.update(CATEGORIES)
        elif category in CATEGORIES:
            wanted.add(category)
        else:
            raise InvalidRequestError(f"unknown category {category!r}: use {allowed}")
    if not wanted:
        raise InvalidRequestError(f"categories is empty: grant at least one, {allowed}")
    return ",".join(category for category in CATEGORIES if category in wanted)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InvalidRequestError(f"unknown {name} {value!r}: use one of {', '.join(choices)}")
    return value


def _check_user_id(user_id: str) -> str:
    if not user_id or len(user_id) > _MAX_USER_ID:
        raise InvalidRequestError(f"user_id must be 1 to {_MAX_USER_ID} characters")
    return user_id


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


def _check_app_fields(name: str, webhook_url: str, app_id: str | None) -> None:
    if not name.strip() or len(name) > _MAX_NAME:
        raise InvalidRequestError(f"name must be 1 to {_MAX_NAME} characters, not blank")
    parts = urlsplit(webhook_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(webhook_url) > _MAX_URL:
        raise InvalidRequestError(
            f"webhook_url {webhook_url!r} must be an http(s) URL with a host, "
            f"at most {_MAX_URL} characters"
        )
    if app_id is not None and not _APP_ID.fullmatch(app_id):
        raise InvalidRequestError(
            f"app_id {app_id!r} must be 1 to 64 letters, digits or _ . : -, or omitted"
        )
