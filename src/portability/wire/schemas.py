"""The Avro schemas in ``schemas/``: located, parsed once, and named.

In a wheel the ``.avsc`` files are installed inside this package (``avro/``); in a source
checkout they are read from the repository's top-level ``schemas/`` folder.
"""

from __future__ import annotations

import enum
import json
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

__all__ = ["SchemaName", "parsed_schema", "schema_dir", "schema_text"]


class SchemaName(enum.StrEnum):
    """Each record type on a topic; the value is the file stem and the registry subject stem."""

    ACCOUNT_CHANGE = "account_change"
    CONSENT = "consent"
    APP = "app"
    DELIVERY = "delivery"
    MATCHER_CHECKPOINT = "matcher_checkpoint"
    DELIVERY_STATUS = "delivery_status"
    NOTIFICATION = "notification"
    DELIVERY_LOG_ENTRY = "delivery_log_entry"
    LEDGER_HEAD = "ledger_head"


# Schemas that refer to types defined in another file, by name.
_DEPENDS_ON: dict[SchemaName, tuple[SchemaName, ...]] = {
    SchemaName.DELIVERY: (SchemaName.ACCOUNT_CHANGE,),
}


def schema_dir() -> Path:
    """Where the ``.avsc`` files are."""
    installed = Path(__file__).parent / "avro"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[3] / "schemas"


def _load(name: SchemaName) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((schema_dir() / f"{name.value}.avsc").read_text())
    return loaded


@cache
def parsed_schema(name: SchemaName) -> Any:
    """The parsed (and fully expanded) schema, parsed once per process."""
    named: dict[str, Any] = {}
    for dependency in _DEPENDS_ON.get(name, ()):
        fastavro.parse_schema(_load(dependency), named_schemas=named)
    return fastavro.parse_schema(_load(name), named_schemas=named)


@cache
def schema_text(name: SchemaName) -> str:
    """The self-contained schema JSON, as registered with a schema registry."""
    # expand_schema inlines named references when it is given every definition in one list;
    # the last element is then the schema itself, self-contained.
    sources = [*(_load(d) for d in _DEPENDS_ON.get(name, ())), _load(name)]
    expanded = fastavro.schema.expand_schema(sources)[-1]
    return json.dumps(expanded, separators=(",", ":"), sort_keys=True)
