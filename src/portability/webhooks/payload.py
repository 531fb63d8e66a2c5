"""The JSON contract of webhook events: what an app's webhook receives, and how to read it.

One delta request carries deltas of one consent in ascending sequence::

    {"type": "portability.delta", "timestamp": "2025-01-31T12:00:01.456Z",
     "data": {"consent_id": "...", "app_id": "...", "user_id": "...",
              "deltas": [{"id": "...", "sequence": 7, "change_id": "...",
                          "category": "post", "operation": "upsert", "record_id": "...",
                          "occurred_at": "2025-01-31T12:00:00.123Z", "record": {...},
                          "policy_version": "..."}]}}

The webhook message id is derived from the delta ids, so a redelivery of the same deltas
carries the same ``webhook-id`` and a recipient can deduplicate on either. The body is a pure
function of the delivery records too (``timestamp`` is the last delta's ``matched_at``, not the
time of sending), so a retry of the same deltas sends the same bytes.

Every body built here is described by the JSON Schema ``schemas/webhooks/events.schema.json``
(:func:`event_schema`), which is installed with the package next to the Avro schemas; the
contract tests validate what this module builds against it.

Each delta's JSON object is rendered once, by the matcher (:func:`render_change`,
:func:`render_delta`), and travels in the Delivery record's ``rendered`` field; a request's
body is then spliced around the rendered deltas, byte for byte what encoding the whole document
would give. A record without a rendering (from an older writer) is rendered from its change
when it is read. Rendering converts datetimes nested in a record as the JSON encoder meets them,
and shallow-copies a record only when it carries fastavro's ``-type`` union hint, which must not
leak into the contract.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast

import orjson

from portability.errors import PortabilityError
from portability.wire.records import (
    AccountChange,
    DeliveryHead,
    DeliveryRecord,
    NotificationRecord,
    format_timestamp,
    from_millis,
    to_millis,
)
from portability.wire.schemas import schema_dir

__all__ = [
    "DELTA_EVENT_TYPE",
    "EVENT_SCHEMA_FILE",
    "UNVERSIONED",
    "Delta",
    "DeltaEvent",
    "PayloadError",
    "UnknownEventTypeError",
    "delivery_head",
    "delta_event",
    "event_schema",
    "event_schema_path",
    "format_timestamp",
    "head_delta_event",
    "message_id",
    "notification_event",
    "parse_delta_event",
    "render_change",
    "render_delta",
    "rendered_delta",
]

DELTA_EVENT_TYPE: Final = "portability.delta"
# The policy version of a delta whose Delivery record predates policy versions.
UNVERSIONED: Final = "unversioned"
# Relative to the schema folder (``schemas/`` in a checkout, ``wire/avro/`` when installed).
EVENT_SCHEMA_FILE: Final = "webhooks/events.schema.json"
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
        policy_version: Version of the privacy rules the delta was produced under;
            ``"unversioned"`` when the body does not say (it predates policy versions).
    """

    id: str
    sequence: int
    change_id: str
    category: str
    operation: Literal["upsert", "delete"]
    record_id: str
    occurred_at: datetime
    record: dict[str, Any] | None
    policy_version: str = UNVERSIONED


@dataclass(frozen=True, slots=True)
class DeltaEvent:
    """One delivery request: deltas of one consent, in ascending sequence.

    Attributes:
        timestamp: When the event was created (the last delta's match time, aware UTC); None
            for a body from a sender that predates the field.
    """

    consent_id: str
    app_id: str
    user_id: str
    deltas: tuple[Delta, ...]
    timestamp: datetime | None = None


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
        The webhook message id and the compact UTF-8 JSON body. The body's ``timestamp`` is the
        last record's ``matched_at``, so rebuilding it for a retry gives the same bytes.

    Raises:
        ValueError: ``records`` is empty, mixes consents, or is not in ascending sequence.
    """
    _check_batch(records)
    return message_id(record["delta_id"] for record in records), _delta_body(
        records[0],
        format_timestamp(records[-1]["matched_at"]),
        [rendered_delta(record) for record in records],
    )


def head_delta_event(heads: Sequence[DeliveryHead]) -> tuple[str, bytes]:
    """:func:`delta_event` of deliveries read as heads (:meth:`AvroCodec.delivery_head`).

    The deltas' JSON is the heads' rendering, so the body is the one :func:`delta_event`
    builds of the same records, byte for byte, without rendering anything again.
    """
    _check_batch(heads)
    return message_id(head["delta_id"] for head in heads), _delta_body(
        heads[0],
        format_timestamp(from_millis(heads[-1]["matched_at_ms"])),
        [head["rendered"] for head in heads],
    )


def _delta_body(first: DeliveryRecord | DeliveryHead, timestamp: str, deltas: list[bytes]) -> bytes:
    """The event around already rendered deltas, copied in (``orjson.Fragment``), not parsed:
    each delta is rendered once, by the matcher, whatever retries and replays follow."""
    document = {
        "type": DELTA_EVENT_TYPE,
        "timestamp": timestamp,
        "data": {
            "consent_id": first["consent_id"],
            "app_id": first["app_id"],
            "user_id": first["user_id"],
            "deltas": [orjson.Fragment(delta) for delta in deltas],
        },
    }
    return _encode(document)


def render_change(change: AccountChange, policy_version: str) -> bytes:
    """The JSON of a change as every delta of it carries it: a delta object without its id
    and sequence, which :func:`render_delta` adds per consent. The matcher renders a change
    once, however many consents it matches."""
    return _encode(_change_object(change, policy_version))


def render_delta(delta_id: str, sequence: int, change_json: bytes) -> bytes:
    """A delta's JSON object, as ``data.deltas`` carries it, from :func:`render_change`'s."""
    # Same bytes as encoding the whole object: the id and sequence are its first keys.
    return b"".join(
        (b'{"id":', _encode(delta_id), b',"sequence":', b"%d," % sequence, change_json[1:])
    )


def rendered_delta(delivery: DeliveryRecord) -> bytes:
    """The delivery's delta object: the matcher's rendering if it has one, else rendered here."""
    rendered = delivery.get("rendered")
    if rendered is not None:
        return rendered
    change_json = render_change(delivery["change"], delivery.get("policy_version", UNVERSIONED))
    return render_delta(delivery["delta_id"], delivery["sequence"], change_json)


def delivery_head(delivery: DeliveryRecord) -> DeliveryHead:
    """The head of a decoded delivery, for a record :meth:`AvroCodec.delivery_head` cannot read.

    The same head as that reads: every field but the change, datetimes as epoch milliseconds
    under the field's name with ``_ms``, the change's ``record_id`` and ``occurred_at_ms``, and
    the rendering (rendered here if the record has none).

    Raises:
        TypeError: The change's record holds a value JSON cannot carry.
    """
    head: dict[str, Any] = {
        f"{key}_ms" if isinstance(value, datetime) else key: (
            to_millis(value) if isinstance(value, datetime) else value
        )
        for key, value in delivery.items()
        if key != "change"
    }
    head.setdefault("policy_version", UNVERSIONED)  # a record built in process may lack them
    head.setdefault("source_offset", -1)
    head.setdefault("snapshot_epoch", 0)
    head["rendered"] = rendered_delta(delivery)
    change = delivery["change"]
    head["record_id"] = change["record_id"]
    head["occurred_at_ms"] = to_millis(change["occurred_at"])
    return cast(DeliveryHead, head)


def notification_event(notification: NotificationRecord) -> tuple[str, bytes]:
    """Build the body of a notification, e.g. ``authorization.removed``::

        {"type": "authorization.removed", "timestamp": "2025-01-31T12:00:00.123Z",
         "data": {"consent_id": "...", "app_id": "...", "user_id": "...",
                  "occurred_at": "2025-01-31T12:00:00.123Z", "reason": "user_revoked"}}

    Returns:
        The webhook message id (the notification's stable event id) and the JSON body, whose
        ``timestamp`` is the notification's ``occurred_at``.
    """
    occurred_at = format_timestamp(notification["occurred_at"])
    data: dict[str, Any] = {
        "consent_id": notification["consent_id"],
        "app_id": notification["app_id"],
        "user_id": notification["user_id"],
        "occurred_at": occurred_at,
    }
    # Event-specific fields never replace the common ones an app routes on.
    data.update(
        (key, _typed_attribute(key, value))
        for key, value in notification["attributes"].items()
        if key not in data
    )
    records = notification.get("records")
    if records is not None:
        # A snapshot page's records were rendered by the builder: copied in, not re-parsed.
        data["records"] = orjson.Fragment(records)
    document = {"type": notification["event_type"], "timestamp": occurred_at, "data": data}
    return notification["event_id"], _encode(document)


_INTEGER_ATTRIBUTES: Final = frozenset({"size_bytes", "epoch", "page", "record_count"})
_BOOLEAN_ATTRIBUTES: Final = frozenset({"last"})


def _typed_attribute(key: str, value: str) -> object:
    """Attributes travel as strings; the contract gives some as numbers, flags and lists."""
    if key in _INTEGER_ATTRIBUTES:
        return int(value)
    if key in _BOOLEAN_ATTRIBUTES:
        return value == "true"
    if key == "categories":
        return value.split(",")
    return value


def parse_delta_event(body: bytes) -> DeltaEvent:
    """Read a delivery request body.

    Fields the contract added later (``timestamp``, ``policy_version``) may be absent, as in
    bodies from older senders; fields this version does not know are ignored.

    Args:
        body: The request body as received.

    Returns:
        The event, with its timestamps parsed to aware UTC datetimes.

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
    timestamp = _get_optional(event, "timestamp", str, "body")
    return DeltaEvent(
        consent_id=_get(data, "consent_id", str, "data"),
        app_id=_get(data, "app_id", str, "data"),
        user_id=_get(data, "user_id", str, "data"),
        deltas=tuple(_parse_delta(item, index) for index, item in enumerate(deltas)),
        timestamp=None if timestamp is None else _parse_timestamp(timestamp, "body.timestamp"),
    )


def event_schema_path() -> Path:
    """Where the JSON Schema of webhook bodies is: beside the Avro schemas.

    That is ``schemas/webhooks/`` in a checkout and ``portability/wire/avro/webhooks/`` when
    installed from a wheel, which ships the whole ``schemas/`` folder.
    """
    return schema_dir() / EVENT_SCHEMA_FILE


def event_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of every webhook body this build sends.

    Returns:
        The parsed schema; a fresh object on every call, so the caller may modify it.

    Raises:
        FileNotFoundError: The schema file is not where the package keeps it (a broken install).
    """
    schema: dict[str, Any] = json.loads(_event_schema_text())
    return schema


@functools.cache
def _event_schema_text() -> str:
    path = event_schema_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"webhook event schema not found at {path}: reinstall the package, whose wheel "
            f"ships it as portability/wire/avro/{EVENT_SCHEMA_FILE}"
        )
    return path.read_text(encoding="utf-8")


def _check_batch(records: Sequence[DeliveryRecord] | Sequence[DeliveryHead]) -> None:
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


def _change_object(change: AccountChange, policy_version: str) -> dict[str, Any]:
    """A delta object without ``id`` and ``sequence`` (see :func:`render_delta`)."""
    record = change["record"]
    if record is not None and _RECORD_TYPE_KEY in record:
        # A shallow copy without the hint; the caller's record stays as it was.
        record = {key: value for key, value in record.items() if key != _RECORD_TYPE_KEY}
    return {
        "change_id": change["change_id"],
        "category": change["category"],
        "operation": change["operation"],
        "record_id": change["record_id"],
        "occurred_at": format_timestamp(change["occurred_at"]),
        "record": record,
        "policy_version": policy_version,
    }


def _json_default(value: object) -> str:
    """Encode what JSON lacks; called only for values inside records (e.g. a Post's created_at)."""
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, orjson.Fragment):  # only the fallback encoder gets here
        return json.loads(value.contents)  # type: ignore[no-any-return]
    raise TypeError(f"a delta record holds a {type(value).__name__}, which JSON cannot carry")


# The fallback encoder, built once: json.dumps with options would build a new one per call.
_ASCII_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=_json_default)


# orjson: about twice as fast as the standard encoder on delta bodies, which the worker builds
# for every request. Datetimes are passed to the default so they keep the contract's format.
_ORJSON_OPTIONS: Final = orjson.OPT_PASSTHROUGH_DATETIME


def _encode(document: object) -> bytes:
    try:
        return orjson.dumps(document, default=_json_default, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        # A lone surrogate cannot be UTF-8 (orjson refuses it); JSON escapes carry it, so a
        # recipient still parses it. Also reports any value JSON cannot carry, as before.
        try:
            return _ASCII_ENCODER.encode(document).encode("ascii")
        except (TypeError, ValueError) as error:
            raise TypeError(str(error)) from error


def _parse_delta(item: object, index: int) -> Delta:
    where = f"data.deltas[{index}]"
    delta = _expect(item, dict, where)
    operation = _get(delta, "operation", str, where)
    if operation not in _OPERATIONS:
        raise PayloadError(f"{where}.operation is {operation!r}, not 'upsert' or 'delete'")
    record = delta.get("record")
    if record is not None and not isinstance(record, dict):
        raise PayloadError(f"{where}.record must be an object or null")
    policy_version = _get_optional(delta, "policy_version", str, where)
    return Delta(
        id=_get(delta, "id", str, where),
        sequence=_parse_sequence(_get(delta, "sequence", int, where), where),
        change_id=_get(delta, "change_id", str, where),
        category=_get(delta, "category", str, where),
        operation="upsert" if operation == "upsert" else "delete",
        record_id=_get(delta, "record_id", str, where),
        occurred_at=_parse_timestamp(
            _get(delta, "occurred_at", str, where), f"{where}.occurred_at"
        ),
        record=record,
        policy_version=UNVERSIONED if policy_version is None else policy_version,
    )


def _parse_sequence(sequence: int, where: str) -> int:
    if sequence < 1:
        raise PayloadError(f"{where}.sequence is {sequence}; sequences start at 1")
    return sequence


def _parse_timestamp(text: str, where: str) -> datetime:
    """Parse the timestamp at ``where`` (its full path, e.g. ``data.deltas[0].occurred_at``)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PayloadError(f"{where} is not an ISO-8601 timestamp: {text!r}") from exc
    if moment.tzinfo is None:
        raise PayloadError(f"{where} has no time zone: {text!r}")
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


def _get_optional(container: Mapping[str, Any], key: str, kind: type[_T], where: str) -> _T | None:
    """A field the contract added later: absent in older bodies, but checked when present."""
    if key not in container:
        return None
    return _expect(container[key], kind, f"{where}.{key}")


_KIND_NAMES: Final[dict[type, str]] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "an integer",
}
