"""The JSON form of an AccountChange: what ``portability changes publish`` reads and
``portability changes tail --json`` prints.

One object per change, with the fields of ``schemas/account_change.avsc``:

* timestamps (``occurred_at``, a post's ``created_at``) as RFC 3339 strings with an offset
  (``"2026-11-23T09:41:07.123Z"``, as the webhook contract writes them) or as integers of
  epoch milliseconds (as Avro ``timestamp-millis`` holds them); sub-millisecond digits are
  cut, as Avro keeps milliseconds;
* ``record`` as a plain object: its union branch follows from ``category`` (a post is a
  ``portability.v1.Post``...), so nobody writes fastavro's ``-type`` hints;
* a field the schema gives a default may be left out; any field the schema does not know is
  refused, so that a misspelt optional field does not vanish silently.

Conversion is driven by the schema itself (parsed once), so a field added to the ``.avsc``
is accepted here without a change to this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final

from portability.ops.errors import OpsError
from portability.wire.records import AccountChange, format_timestamp, from_millis
from portability.wire.schemas import SchemaName, schema_text

__all__ = ["RECORD_BRANCHES", "ChangeFormatError", "change_from_json", "change_to_json"]

# The union branch of ``record`` each category's records are written with. The matcher's
# PostAudience branch (category post) is not the platform's to write.
RECORD_BRANCHES: Final[Mapping[str, str]] = {
    "profile": "portability.v1.Profile",
    "post": "portability.v1.Post",
    "follow": "portability.v1.Follow",
    "activity": "portability.v1.Activity",
    "direct_message": "portability.v1.DirectMessage",
}
_INT_RANGE: Final = {"int": 2**31, "long": 2**63}
_SHOWN_CHARS: Final = 40


class ChangeFormatError(OpsError, ValueError):
    """A JSON value that is not an AccountChange; the message names the field and why."""


def change_from_json(document: object) -> AccountChange:
    """The AccountChange a JSON object describes, checked against the schema.

    Args:
        document: The parsed JSON (``json.loads`` of one line).

    Returns:
        The change as the codec encodes it: timestamps as aware UTC datetimes, defaults
        filled in, the record's union branch chosen by its category.

    Raises:
        ChangeFormatError: A field is missing, unknown or of the wrong type.
    """
    converter = _Converter(_schema())
    change: AccountChange = converter.record(_schema(), document, "", None)
    return change


def change_to_json(value: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded change (or any record) in the JSON form: datetimes as RFC 3339 strings."""
    return {name: _jsonable(item) for name, item in value.items()}


def _jsonable(value: object) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Mapping):
        return {str(name): _jsonable(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


@cache
def _schema() -> dict[str, Any]:
    """The AccountChange schema as registered (self-contained, full names)."""
    loaded: dict[str, Any] = json.loads(schema_text(SchemaName.ACCOUNT_CHANGE))
    return loaded


class _Converter:
    """Walks the schema and the JSON value together, converting as it goes."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._named: dict[str, Any] = {}
        self._collect(schema, "")

    def _collect(self, schema: Any, namespace: str) -> None:
        """Remember every named type, so a reference by name resolves."""
        if isinstance(schema, list):
            for branch in schema:
                self._collect(branch, namespace)
            return
        if not isinstance(schema, dict):
            return
        if schema.get("type") in ("record", "enum", "fixed"):
            name = _full_name(schema, namespace)
            self._named[name] = schema
            namespace = name.rpartition(".")[0]
        for field in schema.get("fields", ()):
            self._collect(field["type"], namespace)
        for key in ("items", "values"):
            if key in schema:
                self._collect(schema[key], namespace)

    def convert(self, schema: Any, value: object, path: str, category: object) -> Any:
        """``value`` read as ``schema``; ``category`` picks the branch of ``record``."""
        if isinstance(schema, str):
            schema = self._named.get(schema, {"type": schema})
        if isinstance(schema, list):
            return self._union(schema, value, path, category)
        kind = schema["type"]
        if isinstance(kind, dict | list):  # {"type": {...}} wraps a type
            return self.convert(kind, value, path, category)
        if kind == "record":
            return self.record(schema, value, path, category)
        if kind == "enum":
            return _enum(schema, value, path)
        if kind == "array":
            items = _expect(value, list, "an array", path)
            return [
                self.convert(schema["items"], v, f"{path}[{i}]", None) for i, v in enumerate(items)
            ]
        if kind == "map":
            entries = _expect(value, dict, "an object", path)
            return {
                k: self.convert(schema["values"], v, f"{path}.{k}", None)
                for k, v in entries.items()
            }
        if schema.get("logicalType") == "timestamp-millis":
            return _timestamp(value, path)
        return _primitive(kind, value, path)

    def record(self, schema: dict[str, Any], value: object, path: str, category: object) -> Any:
        """An object with exactly the record's fields (defaults fill the ones left out)."""
        document = _expect(value, dict, "an object", path)
        known = {field["name"] for field in schema["fields"]}
        unknown = sorted(set(document) - known)
        if unknown:
            hint = " (the branch follows from category: leave it out)" if "-type" in unknown else ""
            raise ChangeFormatError(f"{_at(path)}unknown field {unknown[0]!r}{hint}")
        if category is None and not path:
            category = document.get("category")
        converted: dict[str, Any] = {}
        for field in schema["fields"]:
            name = field["name"]
            where = f"{path}.{name}" if path else name
            if name in document:
                inner = category if name == "record" and not path else None
                converted[name] = self.convert(field["type"], document[name], where, inner)
            elif "default" in field:
                converted[name] = self.convert(field["type"], field["default"], where, None)
            else:
                raise ChangeFormatError(f"missing field {where!r}")
        return converted

    def _union(self, branches: list[Any], value: object, path: str, category: object) -> Any:
        if value is None:
            if "null" in branches:
                return None
            raise ChangeFormatError(f"{_at(path)}must not be null")
        others = [branch for branch in branches if branch != "null"]
        if category is not None and path == "record":
            return self._record_branch(others, value, category)
        errors = []
        for branch in others:
            try:
                return self.convert(branch, value, path, None)
            except ChangeFormatError as error:
                errors.append(str(error))
        raise ChangeFormatError(errors[0] if len(errors) == 1 else f"{_at(path)}matches no type")

    def _record_branch(self, branches: list[Any], value: object, category: object) -> Any:
        wanted = RECORD_BRANCHES.get(str(category))
        for branch in branches:
            resolved = self._named.get(branch, branch) if isinstance(branch, str) else branch
            if isinstance(resolved, dict) and _full_name(resolved, "") == wanted:
                return self.convert(resolved, value, "record", None)
        raise ChangeFormatError(f"record: no record type for category {category!r}")


def _full_name(schema: Mapping[str, Any], namespace: str) -> str:
    name = str(schema["name"])
    if "." in name:
        return name
    space = schema.get("namespace", namespace)
    return f"{space}.{name}" if space else name


def _expect(value: object, kind: type[Any], what: str, path: str) -> Any:
    if not isinstance(value, kind):
        raise ChangeFormatError(f"{_at(path)}expected {what}, got {_shown(value)}")
    return value


def _enum(schema: Mapping[str, Any], value: object, path: str) -> str:
    symbols = schema["symbols"]
    if not isinstance(value, str) or value not in symbols:
        raise ChangeFormatError(
            f"{_at(path)}expected one of {', '.join(symbols)}; got {_shown(value)}"
        )
    return value


def _primitive(kind: str, value: object, path: str) -> Any:
    if kind == "null":
        if value is not None:
            raise ChangeFormatError(f"{_at(path)}expected null, got {_shown(value)}")
        return None
    if kind == "string":
        text = _expect(value, str, "a string", path)
        try:
            text.encode()
        except UnicodeEncodeError:
            raise ChangeFormatError(
                f"{_at(path)}not valid Unicode (a lone surrogate escape such as \\ud800?)"
            ) from None
        return text
    if kind == "boolean":
        return _expect(value, bool, "true or false", path)
    if kind in _INT_RANGE:
        bound = _INT_RANGE[kind]
        if isinstance(value, bool) or not isinstance(value, int) or not -bound <= value < bound:
            raise ChangeFormatError(f"{_at(path)}expected an integer ({kind}), got {_shown(value)}")
        return value
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ChangeFormatError(f"{_at(path)}expected a number, got {_shown(value)}")
        return float(value)
    raise ChangeFormatError(f"{_at(path)}type {kind} cannot be written as JSON here")


def _timestamp(value: object, path: str) -> datetime:
    """An RFC 3339 string with an offset, or epoch milliseconds, as an aware UTC datetime."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return from_millis(value)
        except OverflowError:
            raise ChangeFormatError(f"{_at(path)}{value} ms is out of range") from None
    if not isinstance(value, str):
        raise ChangeFormatError(
            f"{_at(path)}expected an RFC 3339 time (like 2026-11-23T09:41:07.123Z) or epoch "
            f"milliseconds, got {_shown(value)}"
        )
    quoted = json.dumps(value[:_SHOWN_CHARS])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ChangeFormatError(
            f"{_at(path)}{quoted} is not an RFC 3339 time (like 2026-11-23T09:41:07.123Z)"
        ) from None
    if moment.tzinfo is None:
        raise ChangeFormatError(f"{_at(path)}{quoted} has no UTC offset (end it with Z)")
    return moment.astimezone(UTC)


def _at(path: str) -> str:
    return f"{path}: " if path else ""


def _shown(value: object) -> str:
    """A JSON value for a message: its type, and a short excerpt."""
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value)
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 3] + "..."
    return f"{kinds.get(type(value), type(value).__name__)} {text}"
