"""Sealing the secrets a store keeps in the clear, and re-sealing them with a new key.

Both rewrite an app's row and publish the app again through the outbox, in one transaction,
so that the ``apps`` topic's latest record of the app is sealed the same way: older records
of it stay on the compacted topic until compaction removes them.

- :func:`seal_stored_secrets` with ``renew=False`` seals only what is still in the clear (a
  store from before sealing); the API runs it on every start, and it finds nothing to do
  once done.
- With ``renew=True`` (``portability secrets reencrypt``) it also re-seals every secret that
  another key sealed with the sealing key, the step of a key rotation after which the old
  key can go.

Each app is its own transaction: a live store stays usable while it runs, and an app whose
secrets cannot be opened (a key the ring lacks) is reported and left as it is.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from portability.consent._time import utc_now
from portability.consent.models import App
from portability.consent.outbox_rows import publish_app
from portability.consent.signing_secrets import SigningSecrets, reseal
from portability.sealing import SecretsKeys, UnsealError, key_id_of

__all__ = ["SealReport", "seal_clear_secrets", "seal_stored_secrets", "sealing_census"]

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class SealReport:
    """What a sealing pass did.

    Attributes:
        sealed_key_id: The key everything was sealed with.
        changed: Apps rewritten (and published again).
        unchanged: Apps already as wanted.
        failed: App id and why, for apps left as they were.
    """

    sealed_key_id: str
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def seal_stored_secrets(engine: Engine, keys: SecretsKeys, *, renew: bool = False) -> SealReport:
    """Seal the clear secrets in the store (and, with ``renew``, re-seal with the first key).

    Args:
        engine: The consent store, at the current schema.
        keys: Seals with its first key; opens with any.
        renew: Also re-seal secrets sealed with another key than the first.

    Returns:
        What changed; apps that failed are listed with the reason, not raised.
    """
    report = SealReport(keys.sealing_key_id)
    query = select(App.app_id).order_by(col(App.app_id))
    if not renew:
        query = query.where(col(App.signing_secret) != "")
    with Session(engine) as session:
        app_ids = list(session.exec(query))
    for app_id in app_ids:
        try:
            changed = _seal_one(engine, keys, app_id)
        except UnsealError as error:
            report.failed.append((app_id, str(error)))
            continue
        if changed:
            report.changed.append(app_id)
        else:
            report.unchanged += 1
    return report


def seal_clear_secrets(engine: Engine, keys: SecretsKeys) -> SealReport:
    """Seal what a store from before sealing keeps in the clear, and log it (the API's start)."""
    report = seal_stored_secrets(engine, keys)
    if report.changed:
        _log.info(
            "sealed the signing secrets of %d app(s) kept in the clear, with key %s",
            len(report.changed),
            report.sealed_key_id,
        )
    for app_id, reason in report.failed:
        _log.error("cannot seal the signing secrets of app %s: %s", app_id, reason)
    return report


def sealing_census(engine: Engine) -> Counter[str]:
    """How many live secrets each key sealed (``clear``: not sealed), over every app."""
    census: Counter[str] = Counter()
    with Session(engine) as session:
        for app in session.exec(select(App)):
            for stored in SigningSecrets.of(app).stored:
                census[key_id_of(stored.value) if stored.sealed else "clear"] += 1
    return census


def _seal_one(engine: Engine, keys: SecretsKeys, app_id: str) -> bool:
    now = utc_now()
    query = select(App).where(col(App.app_id) == app_id).with_for_update()
    with Session(engine) as session, session.begin():
        app = session.exec(query).first()
        if app is None or not reseal(app, keys):  # deleted since the listing, or as wanted
            return False
        publish_app(session, app, now, keys)
        return True
