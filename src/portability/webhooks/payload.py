"""The JSON contract of webhook events: building the bodies an app's webhook receives.

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
(:mod:`portability.webhooks.event_schema`); the contract tests validate what this module builds
against it. Reading a body back is :mod:`portability.webhooks.parsing`.

Each delta's JSON object is rendered once, by the matcher (:func:`render_change`,
:func:`render_delta`), and travels in the Delivery record's ``rendered`` field; a request's
body is then spliced around the rendered deltas, byte for byte what encoding the whole document
would give. A record without a rendering (from an older writer) is rendered from its change
when it is read. Rendering converts datetimes nested in a record as the JSON encoder meets them,
and shallow-copies a record only when it carries fastavro's ``-type`` union hint, which must not
leak into the contract.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final, cast

import orjson

from portability.webhooks.ledger import (
    LEDGER_FIELD,
    change_digest_of_rendered,
    delta_digest,
    event_digest,
)
from portability.wire.delivery_log_encoder import logged_record
from portability.wire.records import (
    AccountChange,
    DeliveryHead,
    DeliveryRecord,
    NotificationRecord,
    format_timestamp,
    from_millis,
    to_millis,
)

__all__ = [
    "DELTA_EVENT_TYPE",
    "UNVERSIONED",
    "delivery_head",
    "delta_event",
    "head_delta_event",
    "ledger_digest",
    "message_id",
    "notification_digest",
    "notification_event",
    "render_change",
    "render_delta",
    "rendered_delta",
    "with_ledger",
]

DELTA_EVENT_TYPE: Final = "portability.delta"
# The policy version of a delta whose Delivery record predates policy versions.
UNVERSIONED: Final = "unversioned"
_RECORD_TYPE_KEY: Final = "-type"


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


def head_delta_event(
    heads: Sequence[DeliveryHead], ledgers: Sequence[str] | None = None
) -> tuple[str, bytes]:
    """:func:`delta_event` of deliveries read as heads (:meth:`AvroCodec.delivery_head`).

    The deltas' JSON is the heads' rendering, so the body is the one :func:`delta_event`
    builds of the same records, byte for byte, without rendering anything again; with
    ``ledgers`` (one chain value per delta, see :mod:`portability.webhooks.ledger`), each
    delta object ends with its ``ledger``.
    """
    _check_batch(heads)
    rendered = [head["rendered"] for head in heads]
    if ledgers is not None:
        rendered = [
            with_ledger(delta, value) for delta, value in zip(rendered, ledgers, strict=True)
        ]
    return message_id(head["delta_id"] for head in heads), _delta_body(
        heads[0], format_timestamp(from_millis(heads[-1]["matched_at_ms"])), rendered
    )


def with_ledger(rendered: bytes, value: str) -> bytes:
    """A rendered delta object with ``"ledger"`` added as its last key."""
    return b"".join((rendered[:-1], b',"ledger":"', value.encode(), b'"}'))


def ledger_digest(head: DeliveryHead) -> str:
    """The digest the delta extends its consent's ledger with: the matcher's, or computed."""
    digest = head["ledger_digest"]
    if digest is not None:
        return digest
    change = change_digest_of_rendered(head["rendered"])
    return delta_digest(head["delta_id"], head["sequence"], change)


def notification_digest(notification: NotificationRecord) -> str:
    """The digest a notification extends its consent's ledger with (its ``data`` as sent)."""
    data = _notification_data(notification)
    records = notification.get("records")
    if records is not None:
        data["records"] = orjson.loads(records)  # hashed as the app parses it
    return event_digest(notification["event_type"], data)


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
    under the field's name with ``_ms``, the change's ``category``, ``operation``,
    ``record_id`` and ``occurred_at_ms``, and the rendering (rendered here if the record has
    none).

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
    head.setdefault("ledger_digest", None)
    change = delivery["change"]
    head["record_id"] = change["record_id"]
    head["category"] = change["category"]
    head["operation"] = change["operation"]
    head["occurred_at_ms"] = to_millis(change["occurred_at"])
    head["logged"] = logged_record(
        head["delta_id"],
        head["record_id"],
        head["category"],
        head["operation"],
        head["sequence"],
        head["policy_version"],
    )
    return cast(DeliveryHead, head)


def notification_event(
    notification: NotificationRecord, ledger: str | None = None
) -> tuple[str, bytes]:
    """Build the body of a notification, e.g. ``authorization.removed``::

        {"type": "authorization.removed", "timestamp": "2025-01-31T12:00:00.123Z",
         "data": {"consent_id": "...", "app_id": "...", "user_id": "...",
                  "occurred_at": "2025-01-31T12:00:00.123Z", "reason": "user_revoked"}}

    Returns:
        The webhook message id (the notification's stable event id) and the JSON body, whose
        ``timestamp`` is the notification's ``occurred_at``.
    """
    data = _notification_data(notification)
    records = notification.get("records")
    if records is not None:
        # A snapshot page's records were rendered by the builder: copied in, not re-parsed.
        data["records"] = orjson.Fragment(records)
    if ledger is not None:
        data[LEDGER_FIELD] = ledger
    occurred_at = data["occurred_at"]
    document = {"type": notification["event_type"], "timestamp": occurred_at, "data": data}
    return notification["event_id"], _encode(document)


def _notification_data(notification: NotificationRecord) -> dict[str, Any]:
    data: dict[str, Any] = {
        "consent_id": notification["consent_id"],
        "app_id": notification["app_id"],
        "user_id": notification["user_id"],
        "occurred_at": format_timestamp(notification["occurred_at"]),
    }
    # Event-specific fields never replace the common ones an app routes on.
    data.update(
        (key, _typed_attribute(key, value))
        for key, value in notification["attributes"].items()
        if key not in data
    )
    return data


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
