"""Writing the outbox: one row per state change, in the same transaction as the change.

Every state change writes an :class:`~portability.consent.models.OutboxEvent` in the same
transaction as the change, so a change is published if and only if it is committed. The
outbox row's id is the state's ``version``: ids only grow, and a consent's row is locked
before its outbox row is allocated, so a consent's versions grow in commit order too.

This is the writing side only; the relay that publishes committed rows to Kafka, apart
from any change, is :mod:`portability.consent.relay`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from portability.consent._time import millis
from portability.consent.models import App, Consent, OutboxEvent, OutboxKind
from portability.consent.relay import wake_relays
from portability.consent.views import AppView, ConsentView
from portability.sealing import SecretsKeys
from portability.wire.topics import consent_key

__all__ = ["append_event", "outbox_payload", "publish_app", "publish_consent"]


def publish_app(
    session: Session, app: App, now: datetime, keys: SecretsKeys | None = None
) -> AppView:
    """Write the app's new state to the outbox; its version is the outbox row's id."""
    event = append_event(session, "app", app.app_id, None, now)
    app.version = _assigned_id(event)
    view = AppView.of(app, keys)
    event.payload = outbox_payload(view.to_record())
    return view


def publish_consent(session: Session, consent: Consent, now: datetime) -> ConsentView:
    """Write the consent's new state to the outbox; its version is the outbox row's id."""
    key = consent_key(consent.user_id, consent.consent_id).decode()
    event = append_event(session, "consent", key, consent.user_id, now)
    consent.version = _assigned_id(event)
    view = ConsentView.of(consent)
    event.payload = outbox_payload(view.to_record())
    return view


def append_event(
    session: Session, kind: OutboxKind, key: str, user_id: str | None, now: datetime
) -> OutboxEvent:
    """Insert an outbox row whose payload the caller fills in once it knows the id."""
    event = OutboxEvent(kind=kind, key=key, user_id=user_id, payload="", created_at=now)
    session.add(event)
    # Once committed, the relays of this process publish it at once, whatever retry delay a
    # store outage left them with (a revocation the API answered must reach the pipeline).
    sa.event.listen(session, "after_commit", _wake_relays, once=True)
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


def _wake_relays(_session: Session) -> None:
    wake_relays()
