"""The JSON contract of a delta delivery: what an app's webhook receives, and how to read it.

One request carries deltas of one consent in ascending sequence::

    {"type": "portability.delta",
     "data": {"consent_id": "...", "app_id": "...", "user_id": "...",
              "deltas": [{"id": "...", "sequence": 7, "change_id": "...",
                          "category": "post", "operation": "upsert", "record_id": "...",
                          "occurred_at": "2025-01-31T12:00:00.123Z", "record": {...}}]}}

The webhook message id is derived from the delta ids, so a redelivery of the same deltas
carries the same ``webhook-id`` and a recipient can deduplicate on either.

Building a body runs once per delivery request: records are not deep-copied, datetimes nested in
a record are converted by the JSON encoder as it meets them, and a record is shallow-copied only
when it carries fastavro's ``-type`` union hint, which must not leak into the contract.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

from portability.errors import PortabilityError
from portability.wire.records import DeliveryRecord, NotificationRecord

__all__ = [
    "DELTA_EVENT_TYPE",
    "Delta",
    "DeltaEvent",
    "PayloadError",
    "UnknownEventTypeError",
    "delta_event",
    "format_timestamp",
    "message_id",
    "notification_event",
    "parse_delta_event",
]

DELTA_EVENT_TYPE: Final = "portability.delta"
_RECORD_TYPE_KEY: Final = "-type"
_OPERATIONS: Final = frozenset({"upsert", "delete"})

_T = TypeVar("_T")


class PayloadError(PortabilityError, ValueError):
    """A request body that is not a well-formed delta event; the message says what is wrong."""


class UnknownEventTypeError(PayloadError):
    """A well-formed event of a type other than ``portability.delta``.

    Recipients should accept (and may ignore) event types they do not know, so this is told
    apart from a malformed body.

    Attributes:
        event_type: The ``type`` the event declared.
        document: The whole parsed event.
    """

    def __init__(self, event_type: str, document: dict[str, Any]) -> None:
        super().__init__(f"event type {event_type!r} is not {DELTA_EVENT_TYPE!r}")
        self.event_type = event_type
        self.document = document


@dataclass(frozen=True, slots=True)
class Delta:
    """One change to one record, as a recipient receives it.

    Attributes:
        id: Stable delta id: a redelivery carries the same one.
        sequence: Position within the consent: 1, 2, 3... without gaps.
        change_id: The platform's id of the underlying account change.
        category: profile, post, follow, activity or direct_message.
        operation: ``"upsert"`` or ``"delete"``.
        record_id: Id of the changed record within its category.
        occurred_at: When the change happened on the platform (aware, UTC).
        record: The record after the change (datetimes as ISO strings); None for a delete.
    """

    id: str
    sequence: int
    change_id: str
    category: str
    operation: Literal["upsert", "delete"]
    record_id: str
    occurred_at: datetime
    record: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class DeltaEvent:
    """One delivery request: deltas of one consent, in ascending sequence."""

    consent_id: str
    app_id: str
    user_id: str
    deltas: tuple[Delta, ...]


def format_timestamp(moment: datetime) -> str:
    """Format a datetime as the contract does: ISO-8601 UTC, milliseconds, ``Z``.

    A naive datetime is taken as UTC, which is what Avro ``timestamp-millis`` means.

    Args:
        moment: The datetime to format.

    Returns:
        For example ``"2025-01-31T12:00:00.123Z"`` (sub-millisecond digits are truncated).
    """
    if moment.tzinfo is not UTC:  # the common case (fastavro's output) skips both checks
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        elif moment.utcoffset():
            moment = moment.astimezone(UTC)
    # Any zero-offset tzinfo formats as "+00:00": swap that suffix for the shorter "Z".
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def message_id(delta_ids: Iterable[str]) -> str:
    """Derive the webhook message id of a request from the delta ids it carries.

    Args:
        delta_ids: The ids, in the order of the request.

    Returns:
        ``"msg_"`` and the first 32 hex digits of SHA-256 over the ids joined by newlines.
    """
    digest = hashlib.sha256("\n".join(delta_ids).encode()).hexdigest()
    return "msg_" + digest[:32]


def delta_event(records: Sequence[DeliveryRecord]) -> tuple[str, bytes]:
    """Build the body of one delivery request.

    Args:
        records: Deliveries of one consent, in strictly ascending sequence. They are not
            modified.

    Returns:
        The webhook message id and the compact UTF-8 JSON body.

    Raises:
        ValueError: ``records`` is empty, mixes consents, or is not in ascending sequence.
    """
    _check_batch(records)
    first = records[0]
    document = {
        "type": DELTA_EVENT_TYPE,
        "data": {
            "consent_id": first["consent_id"],
            "app_id": first["app_id"],
            "user_id": first["user_id"],
            "deltas": [_delta_object(record) for record in records],
        },
    }
    return message_id(record["delta_id"] for record in records), _encode(document)


def notification_event(notification: NotificationRecord) -> tuple[str, bytes]:
    """Build the body of a notification, e.g. ``authorization.removed``::

        {"type": "authorization.removed",
         "data": {"consent_id": "...", "app_id": "...", "user_id": "...",
                  "occurred_at": "2025-01-31T12:00:00.123Z", "reason": "user_revoked"}}

    Returns:
        The webhook message id (the notification's stable event id) and the JSON body.
    """
    data: dict[str, Any] = {
        "consent_id": notification["consent_id"],
        "app_id": notification["app_id"],
        "user_id": notification["user_id"],
        "occurred_at": format_timestamp(notification["occurred_at"]),
    }
    # Event-specific fields never replace the common ones an app routes on.
    data.update((k, v) for k, v in notification["attributes"].items() if k not in data)
    document = {"type": notification["event_type"], "data": data}
    return notification["event_id"], _encode(document)


def parse_delta_event(body: bytes) -> DeltaEvent:
    """Read a delivery request body.

    Args:
        body: The request body as received.

    Returns:
        The event, with ``occurred_at`` parsed to aware UTC datetimes.

    Raises:
        UnknownEventTypeError: The body is a well-formed event of another type.
        PayloadError: The body is not a well-formed delta event.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        # ValueError covers both invalid JSON and bytes that are not UTF-8.
        raise PayloadError(f"body is not JSON: {exc}") from exc
    event = _expect(document, dict, "body")
    event_type = _get(event, "type", str, "body")
    if event_type != DELTA_EVENT_TYPE:
        raise UnknownEventTypeError(event_type, event)
    data = _get(event, "data", dict, "body")
    deltas = _get(data, "deltas", list, "data")
    if not deltas:
        raise PayloadError("data.deltas is empty: a delta event carries at least one delta")
    return DeltaEvent(
        consent_id=_get(data, "consent_id", str, "data"),
        app_id=_get(data, "app_id", str, "data"),
        user_id=_get(data, "user_id", str, "data"),
        deltas=tuple(_parse_delta(item, index) for index, item in enumerate(deltas)),
    )


def _check_batch(records: Sequence[DeliveryRecord]) -> None:
    if not records:
        raise ValueError("a delta event needs at least one delivery record")
    consent_id = records[0]["consent_id"]
    previous = records[0]["sequence"] - 1
    for record in records:
        if record["consent_id"] != consent_id:
            raise ValueError(
                f"a delta event carries one consent: got {consent_id!r} "
                f"and {record['consent_id']!r}"
            )
        if record["sequence"] <= previous:
            raise ValueError(
                f"deltas of consent {consent_id!r} must be in ascending sequence: "
                f"{record['sequence']} follows {previous}"
            )
        previous = record["sequence"]


def _delta_object(delivery: DeliveryRecord) -> dict[str, Any]:
    change = delivery["change"]
    record = change["record"]
    if record is not None and _RECORD_TYPE_KEY in record:
        # A shallow copy without the hint; the caller's record stays as it was.
        record = {key: value for key, value in record.items() if key != _RECORD_TYPE_KEY}
    return {
        "id": delivery["delta_id"],
        "sequence": delivery["sequence"],
        "change_id": change["change_id"],
        "category": change["category"],
        "operation": change["operation"],
        "record_id": change["record_id"],
        "occurred_at": format_timestamp(change["occurred_at"]),
        "record": record,
    }


def _json_default(value: object) -> str:
    """Encode what JSON lacks; called only for values inside records (e.g. a Post's created_at)."""
    if isinstance(value, datetime):
        return format_timestamp(value)
    raise TypeError(f"a delta record holds a {type(value).__name__}, which JSON cannot carry")


# One encoder for every request: json.dumps with options would build a new one per call.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)
_ASCII_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=_json_default)


def _encode(document: dict[str, Any]) -> bytes:
    try:
        return _ENCODER.encode(document).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate cannot be UTF-8; JSON escapes carry it, so a recipient still parses it.
        return _ASCII_ENCODER.encode(document).encode("ascii")


def _parse_delta(item: object, index: int) -> Delta:
    where = f"data.deltas[{index}]"
    delta = _expect(item, dict, where)
    operation = _get(delta, "operation", str, where)
    if operation not in _OPERATIONS:
        raise PayloadError(f"{where}.operation is {operation!r}, not 'upsert' or 'delete'")
    record = delta.get("record")
    if record is not None and not isinstance(record, dict):
        raise PayloadError(f"{where}.record must be an object or null")
    return Delta(
        id=_get(delta, "id", str, where),
        sequence=_parse_sequence(_get(delta, "sequence", int, where), where),
        change_id=_get(delta, "change_id", str, where),
        category=_get(delta, "category", str, where),
        operation="upsert" if operation == "upsert" else "delete",
        record_id=_get(delta, "record_id", str, where),
        occurred_at=_parse_timestamp(_get(delta, "occurred_at", str, where), where),
        record=record,
    )


def _parse_sequence(sequence: int, where: str) -> int:
    if sequence < 1:
        raise PayloadError(f"{where}.sequence is {sequence}; sequences start at 1")
    return sequence


def _parse_timestamp(text: str, where: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PayloadError(f"{where}.occurred_at is not an ISO-8601 timestamp: {text!r}") from exc
    if moment.tzinfo is None:
        raise PayloadError(f"{where}.occurred_at has no time zone: {text!r}")
    return moment.astimezone(UTC)


def _expect(value: object, kind: type[_T], where: str) -> _T:
    # bool is an int in Python but not a number in the contract.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PayloadError(f"{where} must be {_KIND_NAMES.get(kind, kind.__name__)}")
    return value


def _get(container: Mapping[str, Any], key: str, kind: type[_T], where: str) -> _T:
    if key not in container:
        raise PayloadError(f"{where}.{key} is missing")
    return _expect(container[key], kind, f"{where}.{key}")


_KIND_NAMES: Final[dict[type, str]] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "an integer",
}
