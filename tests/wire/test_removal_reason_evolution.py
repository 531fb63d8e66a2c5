"""Removal reasons added to ``consent.avsc`` (``completed``, ``duplicate``) stay compatible.

- BACKWARD: records of the schema before them (no such symbols, no enum default) read with
  this build's schema unchanged.
- The enum now has a default (``policy``): a reader on this build's schema reads a reason a
  later writer adds as ``policy`` instead of failing, so the next symbol needs no lockstep
  upgrade. A reader from before this build has no default: consumers of the consents topic
  are upgraded before the relay publishes the new reasons (README, webhook contract).
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro
import pytest

from portability.wire import AvroCodec, InProcessSchemaRegistry, SchemaName
from portability.wire.schemas import parsed_schema, schema_text

from .samples import consent

NEW_REASONS = ("completed", "duplicate")


def reason_enum(schema: dict[str, Any]) -> dict[str, Any]:
    [field] = [f for f in schema["fields"] if f["name"] == "removal_reason"]
    [enum] = [branch for branch in field["type"] if isinstance(branch, dict)]
    assert enum["name"].rsplit(".", 1)[-1] == "RemovalReason"
    return enum


def variant(*, drop: tuple[str, ...] = (), add: tuple[str, ...] = (), default: bool = True) -> Any:
    """This build's consent schema with reasons dropped or added, with or without the default."""
    schema: dict[str, Any] = json.loads(schema_text(SchemaName.CONSENT))
    enum = reason_enum(schema)
    enum["symbols"] = [s for s in enum["symbols"] if s not in drop] + list(add)
    if not default:
        enum.pop("default")
    return schema


def read(data: bytes, writer: Any, reader: Any) -> Any:
    return fastavro.schemaless_reader(
        io.BytesIO(data), fastavro.parse_schema(writer), fastavro.parse_schema(reader)
    )


def write(schema: Any, record: Any) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return buffer.getvalue()


def test_the_enum_has_a_default_among_its_symbols() -> None:
    enum = reason_enum(json.loads(schema_text(SchemaName.CONSENT)))
    assert enum["default"] == "policy"
    assert set(NEW_REASONS) <= set(enum["symbols"])


async def test_records_of_the_schema_before_read_with_this_one(
    registry: InProcessSchemaRegistry, codec: AvroCodec
) -> None:
    before = variant(drop=NEW_REASONS, default=False)
    record = dict(consent(status="revoked", removal_reason="policy"))
    schema_id = await registry.register(codec.subject(SchemaName.CONSENT), json.dumps(before))
    framed = struct.pack(">bI", 0, schema_id) + write(before, record)

    assert await codec.decode_fetching(SchemaName.CONSENT, framed) == record


@pytest.mark.parametrize("reason", NEW_REASONS)
def test_this_builds_records_with_a_new_reason_decode(codec: AvroCodec, reason: str) -> None:
    record = consent(status="expired", removal_reason=reason)

    assert codec.decode(SchemaName.CONSENT, codec.encode(SchemaName.CONSENT, record)) == record


def test_a_reason_added_later_reads_as_the_default() -> None:
    later = variant(add=("court_order",))
    data = write(later, dict(consent(status="revoked", removal_reason="court_order")))

    decoded = read(data, later, json.loads(schema_text(SchemaName.CONSENT)))

    assert decoded["removal_reason"] == "policy"
    assert decoded["status"] == "revoked"


def test_a_reader_without_the_default_cannot_read_a_new_reason() -> None:
    """Why the default is there now, and why consumers upgrade before the relay this time."""
    data = write(parsed_schema(SchemaName.CONSENT), dict(consent(removal_reason="completed")))

    with pytest.raises(fastavro.read.SchemaResolutionError):
        read(
            data,
            json.loads(schema_text(SchemaName.CONSENT)),
            variant(drop=NEW_REASONS, default=False),
        )
