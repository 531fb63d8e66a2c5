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
``operation``, ``record_id`` and ``occurred_at_ms``; and ``logged``, the delta's record as
the message log's entry carries it (a ``LoggedRecord``), sliced off the record's own bytes
where the two encode a field alike: the worker's log then joins bytes instead of encoding.
:func:`portability.webhooks.payload.delivery_head` makes the same head of a record decoded in
full.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any, Final

from portability.wire.avro_binary import avro_string
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
_FROM_CHANGE: Final = frozenset({"category", "operation", "record_id", "occurred_at_ms", "logged"})
# The fields the message log's LoggedRecord of a delta carries as the Delivery record does.
_LOGGED: Final = frozenset({"delta_id", "record_id", "sequence", "policy_version"})
_CHANGE: Final = "change"
_RENDERED: Final = "rendered"
_TIMESTAMP: Final = "timestamp-millis"


class HeadReader:
    """Reads heads of Delivery records written with one schema."""

    def __init__(self, plan: tuple[tuple[str, object], ...]) -> None:
        self._plan = plan
        self._read = _compiled(plan)

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
            if kind not in _READS:
                return None
            logical = isinstance(field["type"], dict) and field["type"].get("logicalType")
            plan.append((field["name"] + ("_ms" if logical == _TIMESTAMP else ""), kind))
        names = {name for name, _ in plan}
        if (
            _RENDERED not in names
            or not names >= set(DeliveryHead.__required_keys__) - _FROM_CHANGE
        ):
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
            return self._read(data, start)  # type: ignore[no-any-return]  # see _compiled
        except (IndexError, UnicodeDecodeError, ValueError) as error:
            raise WireFormatError(f"undecodable delivery head: {error!r}") from error


# The reader is one function generated for the writer schema's fields (what _READS says for
# each kind, inline, and one dict built at the end): a loop over per-field reader functions,
# each returning a tuple, cost twice as much, and this runs for every delta a worker reads.
# Only the kinds' code below and field names (as repr() literals) go into the source.

# A number (zig-zag varint): one byte as a rule; a longer one (timestamps take six, offsets
# three or four, a rendering's length two) read inline too, without a call and its tuple.
_VARINT = """\
b = data[pos]
if b < 0x80:
    {target} = (b >> 1) ^ -(b & 1)
    pos += 1
else:
    value, shift = b & 0x7F, 7
    while True:
        pos += 1
        b = data[pos]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than ten bytes")
    {target} = (value >> 1) ^ -(value & 1)
    pos += 1
"""
# A length (a number; a negative one is refused); a string or bytes that runs past the end
# leaves ``pos`` beyond it, and the next read (there is always one: occurred_at comes last)
# raises IndexError, so its end is not compared with the data's length each time.
_SIZED = (
    _VARINT.format(target="size")
    + """\
if size < 0:
    raise ValueError(f"negative length at {{pos}}")
end = pos + size
{target}{slice}
pos = end
"""
)
_UNION = """\
b = data[pos]
pos += 1
if b == 0:  # zig-zag 0: the null branch
    {target} = None
elif b != 2:  # zig-zag 1: the other branch
    raise ValueError(f"union branch byte {{b}} (null or {what})")
else:
{other}"""


def _sized(target: str, decode: bool) -> str:
    if target == "_":  # skipped: no copy of the bytes
        return _SIZED.format(target="", slice="")
    return _SIZED.format(target=target, slice=" = data[pos:end]" + (".decode()" if decode else ""))


def _union(target: str, what: str, decode: bool) -> str:
    other = textwrap.indent(_sized(target, decode), "    ")
    return _UNION.format(target=target, what=what, other=other)


def _captured(name: str, read: str) -> str:
    """``read``, keeping the field's own bytes as ``logged_<name>`` if the log entry's record
    carries them as they are (same Avro encoding: a string, or a long behind a union byte)."""
    if name not in _LOGGED:
        return read
    return f"start = pos\n{read}logged_{name} = data[start:pos]\n"


_READS: Final[dict[object, Callable[[str], str]]] = {
    "string": lambda target: _sized(target, True),
    "long": lambda target: _VARINT.format(target=target),
    "int": lambda target: _VARINT.format(target=target),
    ("null", "bytes"): lambda target: _union(target, "bytes", False),
    ("null", "string"): lambda target: _union(target, "string", True),
}

# The change: change_id, user_id (skipped), category, operation (enums), record_id,
# occurred_at.
_CHANGE_READ: Final = "".join(
    (
        _sized("_", False),
        _sized("_", False),
        _VARINT.format(target="category"),
        _VARINT.format(target="operation"),
        _captured("record_id", _sized("record_id", True)),
        _VARINT.format(target="occurred_at_ms"),
    )
)


def _compiled(plan: tuple[tuple[str, object], ...]) -> Callable[[bytes, int], Any]:
    targets = [f"field_{index}" for index in range(len(plan))]
    rendered = targets[[name for name, _ in plan].index(_RENDERED)]
    body = "".join(
        _captured(name, _READS[kind](target))
        for (name, kind), target in zip(plan, targets, strict=True)
    )
    entries = ", ".join(
        f"{name!r}: {target}" for (name, _), target in zip(plan, targets, strict=True)
    )
    source = (
        "def read(data, pos):\n"
        + textwrap.indent(body, "    ")
        + f"    if {rendered} is None:\n        return None\n"
        + textwrap.indent(_CHANGE_READ, "    ")
        + f"    return {{{entries}, 'category': _CATEGORIES[category], "
        "'operation': _OPERATIONS[operation], 'record_id': record_id, "
        "'occurred_at_ms': occurred_at_ms, 'logged': b''.join((logged_delta_id, "
        "logged_record_id, _LOGGED_CATEGORIES[category], _LOGGED_OPERATIONS[operation], "
        "b'\\x02', logged_sequence, logged_policy_version))}\n"
    )
    namespace: dict[str, Any] = {
        "_CATEGORIES": _CATEGORIES,
        "_OPERATIONS": _OPERATIONS,
        "_LOGGED_CATEGORIES": tuple(avro_string(symbol) for symbol in _CATEGORIES),
        "_LOGGED_OPERATIONS": tuple(avro_string(symbol) for symbol in _OPERATIONS),
    }
    exec(compile(source, "<delivery head reader>", "exec"), namespace)  # noqa: S102  # see above
    reader: Callable[[bytes, int], Any] = namespace["read"]
    return reader


def _kind(avro_type: object) -> object:
    """How a type is encoded: a logical type as its underlying type, a union by its branches."""
    if isinstance(avro_type, list):
        return tuple(_kind(branch) for branch in avro_type)
    if isinstance(avro_type, dict):
        return avro_type["type"]
    return avro_type
