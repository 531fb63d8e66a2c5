"""Storing delivery-log entries, and the retention sweep: the message log's SQL.

A batch of entries is stored in one transaction, and storing the same entries again changes
nothing (the writer reads an entry twice after a crash or a rebalance):

1. each entry is an attempt row, inserted unless its key (message, origin, attempt, time) is
   there already;
2. each message of the batch is then summed up from *all* its stored attempts (count, first
   and last time, first success, the last one's status and reason) and upserted: the first
   attempt creates the row, later ones update the summary. Summing up from the table, not
   adding to the row, is what makes a repeated entry harmless, in any order;
3. the records of a message whose stored attempts include a success are inserted as
   disclosed records, unless there already (the first success writes them);
4. each consent's ledger head is moved to that of its latest delivered message, only forward
   (:mod:`portability.messages.ledgers`).

Synchronous (SQLAlchemy Core): the writer runs these in a thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from portability.messages.ledgers import ledger_json, ledger_rows
from portability.messages.models import (
    ATTEMPTS_TABLE,
    DELIVERED,
    DISCLOSED_RECORDS_TABLE,
    FAILING,
    LEDGERS_TABLE,
    MESSAGES_TABLE,
)
from portability.wire.delivery_log import ORIGINS, DeliveryLogEntry

__all__ = ["BatchCounts", "SweepCounts", "entry_fault", "store_entries", "sweep_retention"]

# Ids per IN list and rows per retention round: far under SQLite's variable limit, and short
# transactions on PostgreSQL.
_CHUNK: Final = 500
_SWEEP_ROUND: Final = 1000

# Column sizes (models.py) a decoded entry must fit: a longer value would fail the whole batch
# on PostgreSQL (SQLite does not check), so such an entry is refused up front.
_LIMITS: Final[dict[str, int]] = {
    "message_id": 64,
    "app_id": 64,
    "consent_id": 64,
    "user_id": 200,
    "event_type": 64,
    "endpoint_url": 2048,
    "body_sha256": 64,
}
_RECORD_LIMITS: Final[dict[str, int]] = {
    "delta_id": 128,
    "record_id": 200,
    "category": 32,
    "operation": 16,
    "policy_version": 100,
}
_REMOVAL_REASON_MAX: Final = 32
_DIGEST_MAX: Final = 64

_MESSAGE_SUMMARY: Final = (
    "created_at",
    "last_attempt_at",
    "attempts",
    "outcome",
    "delivered_at",
    "last_status",
    "last_reason",
)


@dataclass(frozen=True, slots=True)
class BatchCounts:
    """What one stored batch touched."""

    entries: int
    messages: int
    delivered: int  # messages of the batch that are delivered (by now)
    disclosed_records: int  # disclosed-record rows offered (existing ones are skipped)


@dataclass(frozen=True, slots=True)
class SweepCounts:
    """What one retention sweep deleted."""

    messages: int
    attempts: int
    disclosed_records: int


def entry_fault(entry: DeliveryLogEntry) -> str | None:
    """Why a decoded entry cannot be stored (None: it can): an unknown origin, a value longer
    than its column. Such an entry is dead-lettered, not retried: it fails the same way."""
    if entry["origin"] not in ORIGINS:
        return f"unknown origin {entry['origin']!r} (expected one of {', '.join(ORIGINS)})"
    if not entry["message_id"]:
        return "empty message_id"
    for name, limit in _LIMITS.items():
        if len(entry[name]) > limit:  # type: ignore[literal-required]
            return f"{name} longer than {limit} characters"
    reason = entry["removal_reason"]
    if reason is not None and len(reason) > _REMOVAL_REASON_MAX:
        return f"removal_reason longer than {_REMOVAL_REASON_MAX} characters"
    values = entry.get("ledger")
    if values is not None and max(len(values["before"]), len(values["after"])) > _DIGEST_MAX:
        return f"a ledger value longer than {_DIGEST_MAX} characters"
    for record in entry["records"]:
        for name, limit in _RECORD_LIMITS.items():
            if len(record[name]) > limit:  # type: ignore[literal-required]
                return f"a record's {name} longer than {limit} characters"
    return None


def store_entries(engine: Engine, entries: Sequence[DeliveryLogEntry]) -> BatchCounts:
    """Store ``entries`` in one transaction (idempotent; see the module's docstring)."""
    if not entries:
        return BatchCounts(0, 0, 0, 0)
    with engine.begin() as connection:
        _insert_ignoring(connection, ATTEMPTS_TABLE, [_attempt_row(e) for e in entries])
        firsts: dict[str, DeliveryLogEntry] = {}
        for entry in entries:
            firsts.setdefault(entry["message_id"], entry)
        summaries = _summaries(connection, list(firsts))
        messages = [_message_row(firsts[m], summaries[m]) for m in firsts]
        _upsert_messages(connection, messages)
        disclosed = _disclosed_rows(entries, summaries)
        _insert_ignoring(connection, DISCLOSED_RECORDS_TABLE, disclosed)
        _advance_ledgers(connection, ledger_rows(entries))
    delivered = sum(1 for s in summaries.values() if s["outcome"] == DELIVERED)
    return BatchCounts(len(entries), len(messages), delivered, len(disclosed))


def sweep_retention(
    engine: Engine, now: datetime, message_days: int, disclosure_days: int
) -> SweepCounts:
    """Delete messages (with their attempts) first attempted more than ``message_days`` before
    ``now``, and disclosed records delivered more than ``disclosure_days`` before it.

    Messages go in rounds of a bounded size, each its own transaction, so that a sweep after a
    long pause never holds one huge transaction.
    """
    messages, attempts = 0, 0
    table_m, table_a = _table(MESSAGES_TABLE), _table(ATTEMPTS_TABLE)
    cutoff = now - timedelta(days=message_days)
    while True:
        with engine.begin() as connection:
            ids = list(
                connection.scalars(
                    sa.select(table_m.c.message_id)
                    .where(table_m.c.created_at < cutoff)
                    .limit(_SWEEP_ROUND)
                )
            )
            if not ids:
                break
            attempts += connection.execute(
                table_a.delete().where(table_a.c.message_id.in_(ids))
            ).rowcount
            messages += connection.execute(
                table_m.delete().where(table_m.c.message_id.in_(ids))
            ).rowcount
    table_d = _table(DISCLOSED_RECORDS_TABLE)
    with engine.begin() as connection:
        disclosed = connection.execute(
            table_d.delete().where(table_d.c.delivered_at < now - timedelta(days=disclosure_days))
        ).rowcount
    return SweepCounts(messages, attempts, disclosed)


def _table(name: str) -> sa.Table:
    return SQLModel.metadata.tables[name]


def _insert(connection: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing`` / ``_do_update``."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _insert_ignoring(connection: Connection, name: str, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``, skipping each whose key (primary or unique) is stored already."""
    if rows:
        connection.execute(_insert(connection, _table(name)).on_conflict_do_nothing(), rows)


def _attempt_row(entry: DeliveryLogEntry) -> dict[str, Any]:
    return {
        "message_id": entry["message_id"],
        "origin": entry["origin"],
        "attempt": entry["attempt"],
        "attempted_at": entry["attempted_at"],
        "duration_ms": entry["duration_ms"],
        "ok": entry["ok"],
        "status": entry["status"],
        "reason": entry["reason"],
        "response_excerpt": entry["response_excerpt"],
        "endpoint_url": entry["endpoint_url"],
    }


def _summaries(connection: Connection, message_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each message's summary, from every attempt stored for it (this batch's included)."""
    table = _table(ATTEMPTS_TABLE)
    attempts: dict[str, list[Any]] = {}
    for start in range(0, len(message_ids), _CHUNK):
        chunk = message_ids[start : start + _CHUNK]
        query = sa.select(
            table.c.message_id, table.c.attempted_at, table.c.id, table.c.ok, table.c.status,
            table.c.reason,
        ).where(table.c.message_id.in_(chunk))  # fmt: skip
        for row in connection.execute(query):
            attempts.setdefault(row.message_id, []).append(row)
    return {message_id: _summary(rows) for message_id, rows in attempts.items()}


def _summary(rows: Iterable[Any]) -> dict[str, Any]:
    ordered = sorted(rows, key=lambda row: (row.attempted_at, row.id))
    last = ordered[-1]
    delivered_at = next((row.attempted_at for row in ordered if row.ok), None)
    return {
        "created_at": ordered[0].attempted_at,
        "last_attempt_at": last.attempted_at,
        "attempts": len(ordered),
        "outcome": FAILING if delivered_at is None else DELIVERED,
        "delivered_at": delivered_at,
        "last_status": last.status,
        "last_reason": last.reason,
    }


def _message_row(entry: DeliveryLogEntry, summary: dict[str, Any]) -> dict[str, Any]:
    sources = [
        {"topic": s["topic"], "partition": s["partition"], "offset": s["offset"]}
        for s in entry["sources"]
    ]
    return {
        "message_id": entry["message_id"],
        "app_id": entry["app_id"],
        "consent_id": entry["consent_id"],
        "user_id": entry["user_id"],
        "event_type": entry["event_type"],
        "endpoint_url": entry["endpoint_url"],
        "first_sequence": entry["first_sequence"],
        "last_sequence": entry["last_sequence"],
        "snapshot_epoch": entry["snapshot_epoch"],
        "removal_reason": entry["removal_reason"],
        "size": entry["size"],
        "body_sha256": entry["body_sha256"],
        "record_count": len(entry["records"]),
        "sources": json.dumps(sources, separators=(",", ":")),
        "ledger": ledger_json(entry.get("ledger")),
        **summary,
    }


def _upsert_messages(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Create each message, or update the summary of one stored already (its description,
    the same in every entry, stays as first stored)."""
    statement = _insert(connection, _table(MESSAGES_TABLE))
    statement = statement.on_conflict_do_update(
        index_elements=["message_id"],
        set_={name: statement.excluded[name] for name in _MESSAGE_SUMMARY},
    )
    connection.execute(statement, rows)


def _advance_ledgers(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Store each consent's ledger row unless the stored one is as far along or further
    (``events``): an older message's entry stored late never moves a head back."""
    if not rows:
        return
    table = _table(LEDGERS_TABLE)
    statement = _insert(connection, table)
    statement = statement.on_conflict_do_update(
        index_elements=["consent_id"],
        set_={name: statement.excluded[name] for name in rows[0] if name != "consent_id"},
        where=table.c.events < statement.excluded.events,
    )
    connection.execute(statement, rows)


def _disclosed_rows(
    entries: Sequence[DeliveryLogEntry], summaries: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The records of the batch's successful entries, once each, as first delivered."""
    rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for entry in entries:
        if not entry["ok"]:
            continue
        message_id = entry["message_id"]
        delivered_at = summaries[message_id]["delivered_at"]
        for record in entry["records"]:
            key = (message_id, record["category"], record["record_id"], record["delta_id"])
            rows.setdefault(
                key,
                {
                    "message_id": message_id,
                    "category": record["category"],
                    "record_id": record["record_id"],
                    "delta_id": record["delta_id"],
                    "app_id": entry["app_id"],
                    "consent_id": entry["consent_id"],
                    "user_id": entry["user_id"],
                    "operation": record["operation"],
                    "sequence": record["sequence"],
                    "policy_version": record["policy_version"],
                    "event_type": entry["event_type"],
                    "delivered_at": delivered_at,
                },
            )
    return list(rows.values())
