"""Reading the head of a Delivery record without decoding its change.

The delivery worker needs a delta's ids, sequence, timestamps and the JSON the matcher
rendered for it, not the nested change, which a full fastavro decode (with its datetimes)
turns into some thirty Python objects: about 35 us of the worker's ~100 us per delta. This
build's Delivery schema puts ``change`` last, so :class:`HeadReader` reads every field before
it and the first six of the change (up to its ``occurred_at``) straight off the Avro bytes,
and never looks at the rest.

The reader is built from a writer schema (:meth:`HeadReader.of`) and refuses any schema it
cannot read this way: ``change`` not last, a field before it of a type other than string,
long or ``["null", "bytes"]``, or a change that does not start as :data:`CHANGE_PREFIX`. The
codec builds one for this build's Delivery schema and uses it for that schema id only; other
writer schemas go through fastavro's resolution as before. What it does not read is not
checked either: a record whose change is corrupt past ``occurred_at`` is delivered from its
rendering rather than dead-lettered (Kafka's record CRC already guards the bytes between
matcher and worker).

A head holds every Delivery field but the change, under the field's name, except that a
``timestamp-millis`` field is kept as epoch milliseconds under its name with ``_ms`` (the
worker formats one per request, if any); from the change it holds ``category``,
``operation``, ``record_id`` and ``occurred_at_ms``.
:func:`portability.webhooks.payload.delivery_head` makes the same head of a record decoded in
full.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from portability.wire.errors import WireFormatError
from portability.wire.records import CATEGORIES, DeliveryHead

__all__ = ["CHANGE_PREFIX", "HeadReader"]

# The change's first fields, which the reader reads (or skips) to reach occurred_at.
CHANGE_PREFIX: Final = (
    ("change_id", "string"),
    ("user_id", "string"),
    ("category", "enum"),
    ("operation", "enum"),
    ("record_id", "string"),
    ("occurred_at", "long"),
)
# The enums' symbols in this build's schema order (the reader reads this build's schema only).
_CATEGORIES: Final = CATEGORIES
_OPERATIONS: Final = ("upsert", "delete")
_FROM_CHANGE: Final = frozenset({"category", "operation", "record_id", "occurred_at_ms"})
_CHANGE: Final = "change"
_RENDERED: Final = "rendered"
_TIMESTAMP: Final = "timestamp-millis"

_Reader = Callable[[bytes, int], tuple[Any, int]]


class HeadReader:
    """Reads heads of Delivery records written with one schema."""

    def __init__(self, plan: tuple[tuple[str, _Reader], ...]) -> None:
        self._plan = plan

    @classmethod
    def of(cls, schema: dict[str, Any]) -> HeadReader | None:
        """The reader of a self-contained (expanded) Delivery schema; None if it cannot be."""
        fields: list[dict[str, Any]] = schema.get("fields", [])
        change = fields[-1]["type"] if fields and fields[-1]["name"] == _CHANGE else None
        if not isinstance(change, dict) or change.get("type") != "record":
            return None  # change not last (or not expanded)
        prefix = change.get("fields", [])[: len(CHANGE_PREFIX)]
        if tuple((f["name"], _kind(f["type"])) for f in prefix) != CHANGE_PREFIX:
            return None
        plan = []
        for field in fields[:-1]:
            kind = _kind(field["type"])
            reader = _READERS.get(kind)
            if reader is None:
                return None
            logical = isinstance(field["type"], dict) and field["type"].get("logicalType")
            plan.append((field["name"] + ("_ms" if logical == _TIMESTAMP else ""), reader))
        names = {name for name, _ in plan}
        if not names >= set(DeliveryHead.__required_keys__) - _FROM_CHANGE:
            return None
        return cls(tuple(plan))

    def read(self, data: bytes, start: int) -> DeliveryHead | None:
        """The head of the record whose Avro body starts at ``data[start]``.

        Returns:
            The head, or None if the record carries no rendering (its writer did not render):
            the caller then decodes it fully and renders its change.

        Raises:
            WireFormatError: The body ends too soon or is not valid Avro where it was read.
        """
        try:
            return self._read(data, start)
        except (IndexError, UnicodeDecodeError, ValueError) as error:
            raise WireFormatError(f"undecodable delivery head: {error!r}") from error

    def _read(self, data: bytes, pos: int) -> DeliveryHead | None:
        head: dict[str, Any] = {}
        for name, reader in self._plan:
            head[name], pos = reader(data, pos)
        if head.get(_RENDERED) is None:
            return None
        # The change: change_id, user_id (skipped), category, operation (enums), record_id,
        # occurred_at.
        pos = _skip(data, _skip(data, pos))
        category, pos = _long(data, pos)
        operation, pos = _long(data, pos)
        head["category"] = _CATEGORIES[category]
        head["operation"] = _OPERATIONS[operation]
        head["record_id"], pos = _string(data, pos)
        head["occurred_at_ms"], _ = _long(data, pos)
        return head  # type: ignore[return-value]  # its keys are checked by HeadReader.of


def _kind(avro_type: object) -> object:
    """How a type is encoded: a logical type as its underlying type, a union by its branches."""
    if isinstance(avro_type, list):
        return tuple(_kind(branch) for branch in avro_type)
    if isinstance(avro_type, dict):
        return avro_type["type"]
    return avro_type


def _long(data: bytes, pos: int) -> tuple[int, int]:
    """An Avro int or long (zig-zag varint) at ``pos``, and the position after it."""
    byte = data[pos]
    if byte < 0x80:  # one byte: the common case, lengths and small numbers
        return (byte >> 1) ^ -(byte & 1), pos + 1
    value, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), pos + 1
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than ten bytes")


# The helpers below read a length of one varint byte inline (strings under 64 bytes): they
# run for every delta, and a call per varint would double their cost.


def _size(data: bytes, pos: int) -> tuple[int, int]:
    """The length of a string or bytes at ``pos``, and where its content starts."""
    byte = data[pos]
    if byte < 0x80:
        size, pos = (byte >> 1) ^ -(byte & 1), pos + 1
    else:
        size, pos = _long(data, pos)
    if size < 0 or pos + size > len(data):  # a slice past the end would not say
        raise ValueError(f"{size} bytes at {pos} run past the end ({len(data)} bytes)")
    return size, pos


def _skip(data: bytes, pos: int) -> int:
    """Where the string or bytes at ``pos`` ends."""
    size, pos = _size(data, pos)
    return pos + size


def _string(data: bytes, pos: int) -> tuple[str, int]:
    byte = data[pos]
    if byte < 0x80:
        size, pos = (byte >> 1) ^ -(byte & 1), pos + 1
    else:
        size, pos = _long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise ValueError(f"{size} bytes at {pos} run past the end ({len(data)} bytes)")
    return data[pos:end].decode(), end


def _nullable_string(data: bytes, pos: int) -> tuple[str | None, int]:
    branch = data[pos]
    if branch == 0:  # zig-zag 0: the null branch
        return None, pos + 1
    if branch != 2:  # zig-zag 1: the string branch
        raise ValueError(f"union branch byte {branch} (null or string)")
    return _string(data, pos + 1)


def _nullable_bytes(data: bytes, pos: int) -> tuple[bytes | None, int]:
    branch = data[pos]
    if branch == 0:  # zig-zag 0: the null branch
        return None, pos + 1
    if branch != 2:  # zig-zag 1: the bytes branch
        raise ValueError(f"union branch byte {branch} (null or bytes)")
    size, pos = _size(data, pos + 1)
    return data[pos : pos + size], pos + size


_READERS: Final[dict[object, _Reader]] = {
    "string": _string,
    "long": _long,
    "int": _long,
    ("null", "bytes"): _nullable_bytes,
    ("null", "string"): _nullable_string,
}
