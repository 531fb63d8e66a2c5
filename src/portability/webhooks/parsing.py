"""Reading a webhook request body: the delta event as a recipient parses it.

The reading half of the contract (:mod:`portability.webhooks.payload` builds the bodies): the
reference receiver, the demo and the tests parse what the worker sends with it. It is strict
about what the contract requires and lenient about what it added later (``timestamp``,
``policy_version``) or does not know, so that a recipient keeps reading bodies from older and
newer senders.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

from portability.webhooks.errors import WebhooksError
from portability.webhooks.payload import DELTA_EVENT_TYPE, UNVERSIONED

__all__ = ["Delta", "DeltaEvent", "PayloadError", "UnknownEventTypeError", "parse_delta_event"]

_OPERATIONS: Final = frozenset({"upsert", "delete"})

_T = TypeVar("_T")


class PayloadError(WebhooksError, ValueError):
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
