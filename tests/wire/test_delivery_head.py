"""The delivery head: read off the Avro bytes, it must equal what a full decode gives."""

from __future__ import annotations

import io
import json
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portability.webhooks.payload import delivery_head, rendered_delta
from portability.wire import CATEGORIES, AvroCodec, Category, SchemaName, WireFormatError
from portability.wire.delivery_head import HeadReader
from portability.wire.records import AccountChange, DeliveryRecord
from portability.wire.schemas import schema_text

from .samples import change, delivery, previous_delivery_schema, tagged


def rendered(record: DeliveryRecord) -> DeliveryRecord:
    """The record as the matcher writes it: tagged for Avro, with its delta rendered."""
    return {**record, "change": tagged(record["change"]), "rendered": rendered_delta(record)}


def through_fastavro(codec: AvroCodec, data: bytes) -> Any:
    return delivery_head(codec.decode(SchemaName.DELIVERY, data))


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("delete", [False, True], ids=["upsert", "delete"])
def test_the_head_is_what_a_full_decode_gives(
    codec: AvroCodec, category: Category, delete: bool
) -> None:
    data = codec.encode(
        SchemaName.DELIVERY, dict(rendered(delivery(change(category, delete=delete))))
    )

    head = codec.delivery_head(data)

    assert head is not None
    assert head == through_fastavro(codec, data)
    assert head["rendered"] == rendered_delta(delivery(change(category, delete=delete)))
    assert head["record_id"] == f"r-{category}"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(max_size=300),
    sequence=st.integers(min_value=1, max_value=2**62),
    source_offset=st.integers(min_value=-1, max_value=2**62),
    millis=st.integers(min_value=-(2**40), max_value=2**42),
)
def test_any_strings_and_numbers_read_as_fastavro_reads_them(
    codec: AvroCodec, text: str, sequence: int, source_offset: int, millis: int
) -> None:
    """Multi-byte varints (long strings, big and negative numbers) and any UTF-8."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    nested: AccountChange = {
        **change("post"),
        "change_id": text,
        "record_id": text + "/r",
        "occurred_at": moment,
    }
    record: DeliveryRecord = {
        **delivery(nested),
        "delta_id": text,
        "user_id": text * 2,
        "sequence": sequence,
        "matched_at": moment,
        "policy_version": text[:5],
        "source_offset": source_offset,
    }
    try:
        data = codec.encode(SchemaName.DELIVERY, dict(rendered(record)))
    except WireFormatError:
        return  # a lone surrogate cannot be UTF-8: no writer can send it

    assert codec.delivery_head(data) == through_fastavro(codec, data)


def test_a_record_without_a_rendering_is_left_to_a_full_decode(codec: AvroCodec) -> None:
    data = codec.encode(SchemaName.DELIVERY, dict(delivery(tagged(change("post")))))

    assert codec.delivery_head(data) is None
    # What the worker does then: the same head, rendered from the change.
    assert through_fastavro(codec, data) == codec.delivery_head(
        codec.encode(SchemaName.DELIVERY, dict(rendered(delivery(change("post")))))
    )


async def test_another_writer_schema_is_left_to_a_full_decode(codec: AvroCodec) -> None:
    """A record of another schema id (here: the layout before ``rendered``) is not read
    with this build's layout, even where its fields would happen to line up."""
    previous = previous_delivery_schema()
    schema_id = await codec.registry.register(
        codec.subject(SchemaName.DELIVERY), json.dumps(previous)
    )
    framed = struct.pack(">bI", 0, schema_id) + avro_body(
        previous, delivery(tagged(change("post")))
    )

    assert codec.delivery_head(framed) is None


def test_a_truncated_record_is_refused_unless_cut_past_what_the_head_reads(
    codec: AvroCodec,
) -> None:
    """The head does not read the change past ``occurred_at``: a cut there goes unnoticed
    (Kafka's CRC guards the bytes), a cut anywhere before is a wire format error."""
    record = rendered(delivery(change("direct_message")))
    data = codec.encode(SchemaName.DELIVERY, dict(record))
    whole = codec.delivery_head(data)
    assert whole is not None
    rendering_ends = data.index(whole["rendered"]) + len(whole["rendered"])

    for cut in range(len(data)):
        try:
            head = codec.delivery_head(data[:cut])
        except WireFormatError:
            continue
        assert cut > rendering_ends
        assert head == whole


def test_an_unknown_union_branch_is_a_wire_format_error(codec: AvroCodec) -> None:
    record = rendered(delivery(change("post")))
    data = codec.encode(SchemaName.DELIVERY, dict(record))
    # Past the frame and the fields before the rendering: its union branch byte.
    head = codec.delivery_head(data)
    assert head is not None
    branch_at = data.index(b"\x02" + _varint(len(head["rendered"])) + head["rendered"])

    with pytest.raises(WireFormatError, match="union branch"):
        codec.delivery_head(data[:branch_at] + b"\x04" + data[branch_at + 1 :])


@pytest.mark.parametrize("length", [b"\x03", b"\x81\x01"], ids=["one byte", "two bytes"])
def test_a_negative_length_is_a_wire_format_error(codec: AvroCodec, length: bytes) -> None:
    data = codec.encode(SchemaName.DELIVERY, dict(rendered(delivery(change("post")))))
    # Past the 5-byte frame: the delta id's length byte; an odd zig-zag value is negative.
    with pytest.raises(WireFormatError, match="negative length"):
        codec.delivery_head(data[:5] + length + data[6:])


def test_the_reader_refuses_a_schema_whose_change_is_not_last() -> None:
    assert HeadReader.of(json.loads(schema_text(SchemaName.DELIVERY))) is not None
    assert HeadReader.of(previous_delivery_schema()) is None


def test_the_reader_refuses_a_field_it_cannot_read_before_the_change() -> None:
    schema = json.loads(schema_text(SchemaName.DELIVERY))
    schema["fields"].insert(0, {"name": "tags", "type": {"type": "array", "items": "string"}})

    assert HeadReader.of(schema) is None


def test_a_new_long_field_before_the_change_is_read_under_its_name() -> None:
    """A field added later (with a default) before the change needs no change here."""
    schema = json.loads(schema_text(SchemaName.DELIVERY))
    schema["fields"].insert(-1, {"name": "epoch", "type": "long", "default": 0})
    record = {**rendered(delivery(change("post"))), "epoch": 300}
    reader = HeadReader.of(schema)

    assert reader is not None
    head = reader.read(avro_body(schema, record), 0)
    assert head is not None
    assert head["epoch"] == 300  # type: ignore[typeddict-item]


def avro_body(schema: dict[str, Any], record: Any) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return buffer.getvalue()


def _varint(value: int) -> bytes:
    zigzag, out = (value << 1) ^ (value >> 63), bytearray()
    while zigzag >= 0x80:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)
