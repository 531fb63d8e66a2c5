"""The generator of :mod:`portability.wire.change_encoder`'s writer, and what it runs with.

:func:`compiled_writer` generates the source of one function writing a record of a parsed
schema, and compiles it; the module :mod:`~portability.wire.change_encoder` says what the
function writes and what it refuses (raising, for fastavro to decide).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from portability.wire.avro_binary import SMALL_LONGS, avro_long
from portability.wire.errors import WireError
from portability.wire.records import to_millis

__all__ = ["UnsupportedSchemaError", "compiled_writer"]

_RANGES: Final = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


class UnsupportedSchemaError(WireError):
    """The schema uses a type the generator does not write."""


class _RefusedError(Exception):
    """The fast path does not write this value: fastavro decides (the generated code's own
    control flow, caught by :meth:`ChangeEncoder.encode
    <portability.wire.change_encoder.ChangeEncoder.encode>` with any other error)."""


_UNTAGGED: Final = object()
_CHOICES_KEPT: Final = 256  # key sets whose untagged branch is remembered, per union


def _most_fields(records: list[dict[str, Any]]) -> Callable[[dict[str, Any]], str]:
    """The branch fastavro picks for an untagged record of a union of records where it takes
    the record: fastavro picks, of the branches that validate it, the first naming most of its
    keys. Where the fast path writes the branch named here, fastavro validates it too; where
    it refuses it, fastavro decides (another branch may validate)."""
    branches = [
        (record["name"], frozenset(f["name"] for f in record["fields"])) for record in records
    ]
    chosen: dict[tuple[object, ...], str] = {}  # by the record's keys, which alone decide

    def choose(record: dict[str, Any]) -> str:
        keys = tuple(record)
        name = chosen.get(keys)
        if name is None:
            name = max(branches, key=lambda branch: len(branch[1].intersection(keys)))[0]
            if len(chosen) < _CHOICES_KEPT:
                chosen[keys] = name
        return name

    return choose


def _wide_long(value: int) -> bytes:
    """:func:`avro_long`, without its loop for six-byte varints: epoch milliseconds from 1970
    to 2039, one or two a change (0.35 µs of a shaped change's 2.6 with the loop)."""
    zigzag = (value << 1) ^ (value >> 63)
    if 0x800000000 <= zigzag < 0x40000000000:
        return bytes(
            (
                (zigzag & 0x7F) | 0x80,
                ((zigzag >> 7) & 0x7F) | 0x80,
                ((zigzag >> 14) & 0x7F) | 0x80,
                ((zigzag >> 21) & 0x7F) | 0x80,
                ((zigzag >> 28) & 0x7F) | 0x80,
                zigzag >> 35,
            )
        )
    return avro_long(value)


# The writer is one function generated for the schema: each type's code below, inline, with
# the value in ``{v}``, appending to the bytearray ``out``. Per-type writer functions called
# in turn, as fastavro's are, cost a call and a dispatch per field, and this runs for every
# change the matcher delivers. Only this code, generated local names, integers and bytes of
# our own, and the schema's names as repr() literals go into the source; the schema's other
# values (defaults, enum symbols) are constants of the function's namespace.

_REFUSE = "raise _RefusedError\n"
_NULL = "if {v} is not None:\n    raise _RefusedError\n"
_BOOLEAN = """\
if {v} is True:
    out += b'\\x01'
elif {v} is False:
    out += b'\\x00'
else:
    raise _RefusedError
"""
_NUMBER = """\
if {check}not {low} <= {v} <= {high}:
    raise _RefusedError
out += _SMALL[{v}] if 0 <= {v} < 64 else _long({v})
"""
_CHECK_INT = "type({v}) is not _int or "
# An aware datetime as fastavro converts it (the same integer as to_millis); a naive one goes
# to fastavro, which takes it as local time.
_TIMESTAMP = """\
if type({v}) is _datetime and {v}.tzinfo is not None:
    out += _wide_long(_to_millis({v}))
elif type({v}) is _int and {low} <= {v} <= {high}:
    out += _SMALL[{v}] if 0 <= {v} < 64 else _long({v})
else:
    raise _RefusedError
"""
_CHECK_STRING = "if type({v}) is not _str:\n    raise _RefusedError\n"
_SIZED = "n = len({v})\nout += _SMALL[n] if n < 64 else _long(n)\nout += {v}\n"
_STRING = "{v} = {v}.encode()\n" + _SIZED
_BYTES = "if type({v}) is not _bytes:\n    raise _RefusedError\n" + _SIZED
_ENUM = "out += {symbols}[{v}]\n"  # KeyError for an unknown symbol: fastavro decides
_CHECK_DICT = "if type({v}) is not _dict:\n    raise _RefusedError\n"
# fastavro validates a union's branch whole, refusing a record in it tagged with another name
# than its own; it ignores tags outside unions, where refusing one only hands it to fastavro.
_CHECK_TAG = "if '-type' in {v} and {v}['-type'] != {name}:\n    raise _RefusedError\n"
_ARRAY = """\
if type({v}) is not _list:
    raise _RefusedError
if {v}:
    out += _long(len({v}))
    for {item} in {v}:
{items}out += b'\\x00'
"""
_MAP = """\
if type({v}) is not _dict:
    raise _RefusedError
if {v}:
    out += _long(len({v}))
    for {key}, {item} in {v}.items():
{keys}{values}out += b'\\x00'
"""
# The check of a value's Python type that picks a union's branch, by the branch's kind, and
# the types it lets through: branches letting one type through cannot be told apart this way.
_SHAPES: Final = {
    "boolean": ("{v} is True or {v} is False", {"bool"}),
    "int": ("type({v}) is _int", {"int"}),
    "long": ("type({v}) is _int", {"int"}),
    "timestamp": ("type({v}) is _int or type({v}) is _datetime", {"int", "datetime"}),
    "string": ("type({v}) is _str", {"str"}),
    "enum": ("type({v}) is _str", {"str"}),
    "bytes": ("type({v}) is _bytes", {"bytes"}),
    "array": ("type({v}) is _list", {"list"}),
    "map": ("type({v}) is _dict", {"dict"}),
    "record": ("type({v}) is _dict", {"dict"}),
}


class _Source:
    """The generated function's locals, constants and named types, while it is generated."""

    def __init__(self) -> None:
        self.constants: dict[str, object] = {}
        self.named: dict[str, Any] = {}
        self.open: set[str] = set()  # records being generated: a recursive one is unsupported
        self._locals = 0

    def local(self) -> str:
        self._locals += 1
        return f"v{self._locals}"

    def constant(self, value: object) -> str:
        name = f"_C{len(self.constants)}"
        self.constants[name] = value
        return name

    def resolve(self, schema: Any) -> Any:
        """A named type's definition for a reference to it by name; the schema otherwise."""
        if isinstance(schema, str) and schema in self.named:
            return self.named[schema]
        if isinstance(schema, dict) and "name" in schema:
            self.named.setdefault(schema["name"], schema)
        return schema


def _kind(schema: Any) -> str:
    """How a (resolved) type is written: its type, ``timestamp`` or ``union``."""
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    logical = schema.get("logicalType")
    if logical is not None:
        if logical == "timestamp-millis" and schema["type"] == "long":
            return "timestamp"
        raise UnsupportedSchemaError(f"logical type {logical!r} on {schema['type']!r}")
    return str(schema["type"])


def _value(source: _Source, schema: Any, v: str) -> str:
    """The code writing the value in local ``v`` as ``schema``."""
    schema = source.resolve(schema)
    kind = _kind(schema)
    if kind == "union":
        return _union(source, schema, v)
    if kind == "record":
        tag = _CHECK_TAG.format(v=v, name=repr(schema["name"]))
        return _CHECK_DICT.format(v=v) + tag + _fields(source, schema, v)
    return _plain(source, schema, kind, v)


def _plain(source: _Source, schema: Any, kind: str, v: str, checked: bool = False) -> str:
    """The code writing a value of a type that is neither a union nor a record; ``checked``:
    the value is known to be of the type's Python type (a union's branch was picked by it)."""
    if kind == "null":
        return _NULL.format(v=v)
    if kind == "boolean":
        return _BOOLEAN.format(v=v)
    if kind in ("int", "long"):
        low, high = _RANGES[kind]
        check = "" if checked else _CHECK_INT.format(v=v)
        return _NUMBER.format(v=v, low=low, high=high, check=check)
    if kind == "timestamp":
        low, high = _RANGES["long"]
        return _TIMESTAMP.format(v=v, low=low, high=high)
    if kind == "string":
        return ("" if checked else _CHECK_STRING.format(v=v)) + _STRING.format(v=v)
    if kind == "bytes":
        return _BYTES.format(v=v)
    if kind == "enum":
        symbols = {symbol: avro_long(i) for i, symbol in enumerate(schema["symbols"])}
        return _ENUM.format(v=v, symbols=source.constant(symbols))
    if kind == "array":
        item = source.local()
        items = textwrap.indent(_value(source, schema["items"], item), " " * 8)
        return _ARRAY.format(v=v, item=item, items=items)
    if kind == "map":
        key, item = source.local(), source.local()
        keys = textwrap.indent(_CHECK_STRING.format(v=key) + _STRING.format(v=key), " " * 8)
        values = textwrap.indent(_value(source, schema["values"], item), " " * 8)
        return _MAP.format(v=v, key=key, item=item, keys=keys, values=values)
    raise UnsupportedSchemaError(f"type {kind!r}")


def _fields(source: _Source, schema: dict[str, Any], v: str) -> str:
    """The code writing the fields of the record in ``v`` (a dict: the caller checked)."""
    name = schema["name"]
    if name in source.open:
        raise UnsupportedSchemaError(f"recursive record {name!r}")
    source.open.add(name)
    code = []
    for field in schema["fields"]:
        value = source.local()
        if "default" in field:
            default = field["default"]
            fallback = "" if default is None else ", " + source.constant(default)
            code.append(f"{value} = {v}.get({field['name']!r}{fallback})\n")
        # fastavro's own test (a substring test for a type's name): a missing field of such a
        # type is written as None, which the type's code then refuses unless it is nullable.
        elif "null" in field["type"]:
            code.append(f"{value} = {v}.get({field['name']!r})\n")
        else:  # KeyError if missing: fastavro raises "no value and no default"
            code.append(f"{value} = {v}[{field['name']!r}]\n")
        code.append(_value(source, field["type"], value))
    source.open.discard(name)
    return "".join(code)


def _union(source: _Source, branches: list[Any], v: str) -> str:
    """fastavro writes a union's first branch that validates the value (of several records:
    the one naming most of its keys). The fast path writes null for None, the record branch
    that a record's tag names, and the branch that is the only one of the value's type."""
    null, records, others = None, [], []
    for index, branch in enumerate(branches):
        resolved = source.resolve(branch)
        kind = _kind(resolved)
        if kind == "null":
            null = index
        elif kind == "record":
            records.append((index, resolved))
        elif kind in _SHAPES:
            others.append((index, resolved, kind))
        else:
            raise UnsupportedSchemaError(f"type {kind!r}")
    code = [f"if {v} is None:\n"]
    code.append(f"    out += {avro_long(null)!r}\n" if null is not None else "    " + _REFUSE)
    shapes = [_SHAPES[kind][1] for _, _, kind in others] + [_SHAPES["record"][1]] * bool(records)
    if sum(map(len, shapes)) != len(set().union(*shapes)):
        return "".join(code) + "else:\n    " + _REFUSE  # branches of one Python type
    for index, branch, kind in others:
        code.append(f"elif {_SHAPES[kind][0].format(v=v)}:\n    out += {avro_long(index)!r}\n")
        code.append(textwrap.indent(_plain(source, branch, kind, v, checked=True), "    "))
    if len(records) == 1:
        index, record = records[0]
        code.append(f"elif type({v}) is _dict:\n")
        code.append(textwrap.indent(_CHECK_TAG.format(v=v, name=repr(record["name"])), "    "))
        code.append(f"    out += {avro_long(index)!r}\n")
        code.append(textwrap.indent(_fields(source, record, v), "    "))
    elif records:
        name = source.local()
        choose = source.constant(_most_fields([record for _, record in records]))
        code.append(f"elif type({v}) is _dict:\n    {name} = {v}.get('-type', _UNTAGGED)\n")
        code.append(f"    if {name} is _UNTAGGED:\n        {name} = {choose}({v})\n")
        for position, (index, record) in enumerate(records):
            keyword = "if" if position == 0 else "elif"
            code.append(f"    {keyword} {name} == {record['name']!r}:\n")
            code.append(f"        out += {avro_long(index)!r}\n")
            code.append(textwrap.indent(_fields(source, record, v), " " * 8))
        code.append("    else:  # a name no branch has: fastavro decides\n")
        code.append("        " + _REFUSE)
    return "".join(code) + "else:\n    " + _REFUSE


def compiled_writer(schema: Any) -> Callable[[Any], Any]:
    """The writer of records of ``schema`` (fastavro-parsed): a function of the record returning
    its bytes, or raising (its own refusal or another error) where fastavro decides.

    Raises:
        UnsupportedSchemaError: The schema uses a type the generator does not write.
    """
    source = _Source()
    if _kind(source.resolve(schema)) != "record":
        raise UnsupportedSchemaError("not a record")
    source.named.update(schema.get("__named_schemas", {}))  # types defined in other schemas
    body = _CHECK_DICT.format(v="record") + _fields(source, schema, "record")
    text = "def write(record):\n" + textwrap.indent(
        "out = bytearray()\n" + body + "return bytes(out)\n", "    "
    )
    namespace: dict[str, Any] = {
        "_str": str,
        "_int": int,
        "_bytes": bytes,
        "_dict": dict,
        "_list": list,
        "_datetime": datetime,
        "_SMALL": SMALL_LONGS,
        "_long": avro_long,
        "_wide_long": _wide_long,
        "_to_millis": to_millis,
        "_RefusedError": _RefusedError,
        "_UNTAGGED": _UNTAGGED,
        **source.constants,
    }
    exec(compile(text, "<account change writer>", "exec"), namespace)  # noqa: S102  # see above
    write: Callable[[Any], Any] = namespace["write"]
    return write
