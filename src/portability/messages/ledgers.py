"""Each consent's ledger as the platform delivered it: kept from the log, answered to the API.

Every message of a consent carries the consent's hash chain (:mod:`portability.webhooks.ledger`)
and its log entries the chain's values around it (``ledger``: before, after, and the counts
after it). The writer keeps, per consent, the values after the latest message *delivered*
(an ok entry): what the app must hold once it received everything up to there. A message's
entries can be stored after a later message's (the log is keyed by message id, so the two
travel on different partitions), so a row only moves forward, to more ``events``; an app
comparing its head with this one compares with the platform's latest delivered state.

A consent that has had nothing delivered yet has no row; its ledger is the chain's start.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from portability.messages.models import LedgerRow
from portability.webhooks import ledger
from portability.wire.delivery_log import DeliveryLogEntry, LoggedLedger

__all__ = [
    "LedgerView",
    "consent_ledger",
    "delivered_heads",
    "ledger_json",
    "ledger_rows",
    "parse_ledger",
]

_CHUNK: Final = 500  # ids per IN list


@dataclass(frozen=True, slots=True)
class LedgerView:
    """A consent's ledger head and counts; ``updated_at`` None while nothing was delivered."""

    consent_id: str
    app_id: str
    head: str
    events: int
    deltas: int
    pages: int
    removals: int
    updated_at: datetime | None


def ledger_rows(entries: Iterable[DeliveryLogEntry]) -> list[dict[str, Any]]:
    """The ``consent_ledgers`` rows the delivered entries of a batch make: per consent, the
    one furthest along (a batch may hold several of a consent's messages, in any order)."""
    rows: dict[str, dict[str, Any]] = {}
    for entry in entries:
        values = entry.get("ledger")
        if not entry["ok"] or values is None or not entry["consent_id"]:
            continue
        known = rows.get(entry["consent_id"])
        if known is not None and known["events"] >= values["events"]:
            continue
        rows[entry["consent_id"]] = {
            "consent_id": entry["consent_id"],
            "app_id": entry["app_id"],
            "user_id": entry["user_id"],
            "head": values["after"],
            "events": values["events"],
            "deltas": values["deltas"],
            "pages": values["pages"],
            "removals": values["removals"],
            "last_message_id": entry["message_id"],
            "updated_at": entry["attempted_at"],
        }
    return list(rows.values())


def ledger_json(values: LoggedLedger | None) -> str | None:
    """A message's chain values as ``delivery_messages.ledger`` keeps them."""
    if values is None:
        return None
    kept = {
        "before": values["before"],
        "after": values["after"],
        "events": values["events"],
        "deltas": values["deltas"],
        "pages": values["pages"],
        "removals": values["removals"],
    }
    return json.dumps(kept, separators=(",", ":"))


def parse_ledger(text: str | None) -> LoggedLedger | None:
    """The chain values :func:`ledger_json` kept (None for none)."""
    if text is None:
        return None
    values = json.loads(text)
    return LoggedLedger(
        before=str(values["before"]),
        after=str(values["after"]),
        events=int(values["events"]),
        deltas=int(values["deltas"]),
        pages=int(values["pages"]),
        removals=int(values["removals"]),
    )


def consent_ledger(engine: Engine, consent_id: str, app_id: str) -> LedgerView:
    """The consent's ledger as delivered; its chain's start (counts 0) without a delivery.

    ``app_id`` is the consent's (the caller checked it may see the consent): a consent
    nothing was delivered to has no row to take it from.
    """
    with Session(engine) as session:
        row = session.get(LedgerRow, consent_id)
    if row is None:
        return LedgerView(consent_id, app_id, ledger.start(consent_id), 0, 0, 0, 0, None)
    return LedgerView(
        consent_id=row.consent_id,
        app_id=row.app_id,
        head=row.head,
        events=row.events,
        deltas=row.deltas,
        pages=row.pages,
        removals=row.removals,
        updated_at=row.updated_at,
    )


def delivered_heads(engine: Engine, consent_ids: Iterable[str]) -> dict[str, str]:
    """Each consent's head as delivered; the chain's start for one nothing was delivered to."""
    wanted = list(consent_ids)
    heads = {consent_id: ledger.start(consent_id) for consent_id in wanted}
    with Session(engine) as session:
        for start in range(0, len(wanted), _CHUNK):
            query = select(LedgerRow.consent_id, LedgerRow.head).where(
                col(LedgerRow.consent_id).in_(wanted[start : start + _CHUNK])
            )
            heads.update(session.exec(query).all())
    return heads
