"""A reader of AccountChange bodies generated from the schema, for the matcher's hot path.

The matcher decodes the change of every consenting user's record. fastavro takes some 10 µs a
change (Cython, but generic: it walks the schema for every record, looks named types up and
calls a reader per field). :class:`ChangeReader` reads the same bytes with one function
generated at start from this build's parsed schema, as
:mod:`portability.wire.change_encoder_source` generates the writer: every field's code inline,
in schema order. It is used only for values written with this build's schema (the reader
then equals the writer: there is nothing to resolve), and returns exactly what fastavro's
``schemaless_reader`` returns for them: a dict per record with the fields in schema order, an
enum's symbol, None for null, a list for an array, a dict for a map, an aware UTC
``datetime`` for a ``timestamp-millis``.

Its checks are as strict as fastavro's or stricter, and where one fails it returns None and
the caller decodes with the codec (fastavro), whose value or error is the answer: a length or
an index out of range, a negative length, a boolean byte other than 0 or 1, a varint longer
than ten bytes or beyond 64 bits, bytes that are not UTF-8, a body shorter than its fields.
Like fastavro it ignores bytes after the record. A schema with a type it does not read
(float, double, fixed, a logical type other than ``timestamp-millis`` on a long, a recursive
record) gets no reader (:meth:`ChangeReader.of` is None).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from portability.wire.codec import AvroCodec
from portability.wire.records import AccountChange
from portability.wire.schemas import SchemaName, parsed_schema

__all__ = ["ChangeReader", "change_reader"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_LONG: Final = (1 << 64) - 1
_PRIMITIVE: Final = frozenset({"null", "boolean", "int", "long", "string", "bytes"})


class _UnsupportedError(Exception):
    """The schema uses a type the generator does not read."""


class _RefusedError(Exception):
    """The bytes are not read by the fast path (fastavro decides)."""


def _long(data: bytes, pos: int) -> tuple[int, int]:
    """The zigzag long at ``pos`` (a varint of at most ten bytes and 64 bits) and the position
    after it. Unrolled to six bytes: epoch milliseconds take six, one or two a change."""
    byte = data[pos]
    value = byte & 0x7F
    if byte > 0x7F:
        byte = data[pos + 1]
        value |= (byte & 0x7F) << 7
        if byte > 0x7F:
            byte = data[pos + 2]
            value |= (byte & 0x7F) << 14
            if byte > 0x7F:
                byte = data[pos + 3]
                value |= (byte & 0x7F) << 21
                if byte > 0x7F:
                    byte = data[pos + 4]
                    value |= (byte & 0x7F) << 28
                    if byte > 0x7F:
                        byte = data[pos + 5]
                        value |= (byte & 0x7F) << 35
                        if byte > 0x7F:
                            return _longer(data, pos + 6, value)
                        return (value >> 1) ^ -(value & 1), pos + 6
                    return (value >> 1) ^ -(value & 1), pos + 5
                return (value >> 1) ^ -(value & 1), pos + 4
            return (value >> 1) ^ -(value & 1), pos + 3
        return (value >> 1) ^ -(value & 1), pos + 2
    return (value >> 1) ^ -(value & 1), pos + 1


def _longer(data: bytes, pos: int, value: int) -> tuple[int, int]:
    """:func:`_long` past its sixth byte (``value`` holds the first six's bits)."""
    shift = 42
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift >= 70:
            raise _RefusedError("varint longer than ten bytes")
    if value > _MAX_LONG:
        raise _RefusedError("varint beyond 64 bits")
    return (value >> 1) ^ -(value & 1), pos


def _count(data: bytes, pos: int) -> tuple[int, int]:
    """A length or an index at ``pos`` (never negative) and the position after it."""
    value, pos = _long(data, pos)
    if value < 0:
        raise _RefusedError("negative length or index")
    return value, pos


def _block(data: bytes, pos: int) -> tuple[int, int]:
    """An array's or a map's block count at ``pos`` (its byte size skipped if given)."""
    count, pos = _long(data, pos)
    if count < 0:
        count = -count
        _, pos = _long(data, pos)
    return count, pos


def _millis(value: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=value)  # as fastavro: its epoch plus a timedelta


class _Source:
    """The generated function's lines, locals and constants."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, object] = {}
        self.named: dict[str, Any] = {}
        self._next = 0
        self._open: set[str] = set()  # records being generated (a recursive one is refused)
        self._collect(schema)

    def local(self) -> str:
        self._next += 1
        return f"v{self._next}"

    def constant(self, value: object) -> str:
        name = f"C{len(self.constants)}"
        self.constants[name] = value
        return name

    def add(self, indent: int, *lines: str) -> None:
        self.lines.extend("    " * indent + line for line in lines)

    def _collect(self, schema: Any) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self._collect(branch)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind in ("record", "error", "enum", "fixed"):
                self.named.setdefault(schema["name"], schema)
            for field in schema.get("fields", ()):
                self._collect(field["type"])
            for key in ("items", "values"):
                if key in schema:
                    self._collect(schema[key])

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVE:
            if schema not in self.named:
                raise _UnsupportedError(f"unknown named type {schema}")
            return self.named[schema]
        return schema

    def value(self, schema: Any, indent: int) -> str:
        """Lines reading a value of ``schema`` at ``pos``; the local (or literal) holding it."""
        schema = self.resolve(schema)
        if isinstance(schema, list):
            return self._union(schema, indent)
        kind = schema if isinstance(schema, str) else schema["type"]
        if isinstance(schema, dict) and "logicalType" in schema:
            return self._timestamp(schema, kind, indent)
        if kind == "null":
            return "None"
        if kind in ("int", "long"):
            return self._long(indent)
        if kind == "boolean":
            v = self.local()
            self.add(
                indent,
                f"{v} = data[pos]",
                "pos += 1",
                f"if {v} > 1:",
                "    raise _RefusedError('boolean')",
                f"{v} = {v} == 1",
            )
            return v
        if kind in ("string", "bytes"):
            return self._sized(indent, decode=kind == "string")
        if kind == "enum":
            symbols = self.constant(tuple(schema["symbols"]))
            index = self._index(indent)
            v = self.local()
            self.add(indent, f"{v} = {symbols}[{index}]")
            return v
        if kind in ("record", "error"):
            return self._record(schema, indent)
        if kind in ("array", "map"):
            return self._repeated(schema, kind, indent)
        raise _UnsupportedError(f"type {kind}")

    def _timestamp(self, schema: dict[str, Any], kind: str, indent: int) -> str:
        if schema["logicalType"] != "timestamp-millis" or kind != "long":
            raise _UnsupportedError(f"logical type {schema['logicalType']} on {kind}")
        v = self._long(indent)
        self.add(indent, f"{v} = _millis({v})")
        return v

    def _long(self, indent: int) -> str:
        v = self.local()
        self.add(
            indent,
            f"{v} = data[pos]",
            f"if {v} < 0x80:",
            "    pos += 1",
            f"    {v} = ({v} >> 1) ^ -({v} & 1)",
            "else:",
            f"    {v}, pos = _long(data, pos)",
        )
        return v

    def _index(self, indent: int) -> str:
        """A union's or an enum's index: one byte, even (not negative), in the common case."""
        v = self.local()
        self.add(
            indent,
            f"{v} = data[pos]",
            f"if {v} & 0x81:",
            f"    {v}, pos = _count(data, pos)",
            "else:",
            "    pos += 1",
            f"    {v} >>= 1",
        )
        return v

    def _sized(self, indent: int, decode: bool) -> str:
        size = self._index(indent)
        v = self.local()
        self.add(
            indent,
            f"{size} += pos",
            f"if {size} > end:",
            "    raise _RefusedError('short body')",
            f"{v} = data[pos:{size}]" + (".decode()" if decode else ""),
            f"pos = {size}",
        )
        return v

    def _union(self, branches: list[Any], indent: int) -> str:
        index = self._index(indent)
        v = self.local()
        for number, branch in enumerate(branches):
            self.add(indent, f"{'if' if number == 0 else 'elif'} {index} == {number}:")
            self.add(indent + 1, f"{v} = {self.value(branch, indent + 1)}")
        self.add(indent, "else:", "    raise _RefusedError('union index')")
        return v

    def _record(self, schema: dict[str, Any], indent: int) -> str:
        name = schema["name"]
        if name in self._open:
            raise _UnsupportedError(f"recursive record {name}")
        self._open.add(name)
        fields = [(field["name"], self.value(field["type"], indent)) for field in schema["fields"]]
        self._open.discard(name)
        v = self.local()
        self.add(indent, f"{v} = {{{', '.join(f'{n!r}: {f}' for n, f in fields)}}}")
        return v

    def _repeated(self, schema: dict[str, Any], kind: str, indent: int) -> str:
        v = self.local()
        count = self.local()
        self.add(
            indent,
            f"{v} = {'[]' if kind == 'array' else '{}'}",
            "while True:",
            f"    {count}, pos = _block(data, pos)",
            f"    if not {count}:",
            "        break",
            f"    for _ in range({count}):",
        )
        if kind == "array":
            item = self.value(schema["items"], indent + 2)
            self.add(indent + 2, f"{v}.append({item})")
        else:
            key = self._sized(indent + 2, decode=True)
            item = self.value(schema["values"], indent + 2)
            self.add(indent + 2, f"{v}[{key}] = {item}")
        return v


def _compiled(schema: dict[str, Any]) -> Callable[[bytes, int], dict[str, Any]]:
    source = _Source(schema)
    result = source.value(schema, 1)
    text = "\n".join(["def read(data, pos):", "    end = len(data)", *source.lines])
    text += f"\n    return {result}\n"
    scope: dict[str, Any] = {
        "_RefusedError": _RefusedError,
        "_long": _long,
        "_count": _count,
        "_block": _block,
        "_millis": _millis,
        **source.constants,
    }
    exec(compile(text, "<account change reader>", "exec"), scope)  # noqa: S102  # generated
    return scope["read"]  # type: ignore[no-any-return]


class ChangeReader:
    """Reads AccountChange bodies written with one schema as fastavro reads them, faster."""

    def __init__(self, schema: dict[str, Any], frame: bytes) -> None:
        """The reader of values framed with ``frame`` (magic byte and schema id), written
        with ``schema`` (fastavro-parsed, a record).

        Raises:
            ValueError: The schema uses a type the generator does not read.
        """
        if not isinstance(schema, dict) or schema.get("type") != "record":
            raise ValueError("not a record schema")
        try:
            self._read = _compiled(schema)
        except _UnsupportedError as error:
            raise ValueError(f"no generated reader: {error}") from error
        self._frame = frame

    @classmethod
    def of(cls, schema: Any, frame: bytes) -> ChangeReader | None:
        """The reader of ``schema``; None if the generator cannot read it (use the codec)."""
        try:
            return cls(schema, frame)
        except ValueError:
            return None

    def read(self, value: bytes | None) -> dict[str, Any] | None:
        """The record ``value`` holds; None for a value of another frame, or one the fast
        path refuses: decode it with the codec (fastavro) then."""
        if value is None or not value.startswith(self._frame):
            return None
        try:
            return self._read(value, len(self._frame))
        # Any failure (a refusal, an index or a slice out of range, bytes that are not UTF-8)
        # hands the value to the codec, whose answer is the reference.
        except Exception:  # noqa: BLE001
            return None


def _no_reader(value: bytes | None) -> AccountChange | None:
    return None


def change_reader(codec: AvroCodec) -> Callable[[bytes | None], AccountChange | None]:
    """The read of the changes ``codec`` writes with this build's schema (its schema id), as it
    decodes them; it returns None for any other value (decode it with the codec then)."""
    frame = b"\x00" + codec.schema_id(SchemaName.ACCOUNT_CHANGE).to_bytes(4, "big")
    reader = ChangeReader.of(parsed_schema(SchemaName.ACCOUNT_CHANGE), frame)
    return _no_reader if reader is None else reader.read  # type: ignore[return-value]
