"""Turning an account change into the row the current-state view keeps.

A record is rendered to JSON once, when it is applied, exactly as the webhook contract renders
it (:mod:`portability.webhooks.payload`): datetimes as ISO-8601 UTC with milliseconds and ``Z``,
and without fastavro's ``-type`` union hint. The view, its changelog and the archives then copy
that text around without parsing it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from portability.wire.records import AccountChange, ChangeContext, format_timestamp

__all__ = ["Deletion", "StoredRecord", "render_record", "state_change"]

_RECORD_TYPE_KEY: Final = "-type"


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One current record of one user, as the view stores and serves it.

    Attributes:
        record_json: The record as compact JSON, rendered like the webhook contract.
        occurred_at: When the change that produced this state occurred (contract format).
        change_id: The platform's id of that change.
        source_offset: Its offset in ``account.changes``.
        context_json: The platform's context of that change (what the privacy rules read,
            never shipped), as JSON; None when the platform sent none.
    """

    user_id: str
    category: str
    record_id: str
    record_json: str
    occurred_at: str
    change_id: str
    source_offset: int
    context_json: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.user_id, self.category, self.record_id)

    def record(self) -> Any:
        """The record parsed (a dict, or None for an upsert that carried no record)."""
        return json.loads(self.record_json)

    def context(self) -> ChangeContext | None:
        """The platform's context of the change, for the privacy rules."""
        if self.context_json is None:
            return None
        context: ChangeContext = json.loads(self.context_json)
        return context


@dataclass(frozen=True, slots=True)
class Deletion:
    """A record removed by a delete change at ``source_offset``."""

    user_id: str
    category: str
    record_id: str
    source_offset: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.user_id, self.category, self.record_id)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return format_timestamp(value)
    raise TypeError(f"a record holds a {type(value).__name__}, which JSON cannot carry")


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)
_ASCII_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=_json_default)


def render_record(record: dict[str, Any] | None) -> str:
    """The record as the webhook contract renders it, as compact JSON text."""
    if record is not None and _RECORD_TYPE_KEY in record:
        record = {key: value for key, value in record.items() if key != _RECORD_TYPE_KEY}
    text = _ENCODER.encode(record)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate cannot be stored as UTF-8; the JSON escape carries it intact.
        return _ASCII_ENCODER.encode(record)
    return text


def state_change(change: AccountChange, offset: int) -> StoredRecord | Deletion:
    """What applying ``change`` (read at ``offset``) does to the view."""
    if change["operation"] == "delete":
        return Deletion(change["user_id"], change["category"], change["record_id"], offset)
    context = change.get("context")
    return StoredRecord(
        user_id=change["user_id"],
        category=change["category"],
        record_id=change["record_id"],
        record_json=render_record(change["record"]),
        occurred_at=format_timestamp(change["occurred_at"]),
        change_id=change["change_id"],
        source_offset=offset,
        context_json=None if context is None else render_record(dict(context)),
    )
