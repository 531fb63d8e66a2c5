"""Embedded-mode schema ids: a pure function of the schema that a producer computes itself.

The expected ids are computed here independently of the project: the CRC-64-AVRO (Rabin)
fingerprint is implemented from the Avro specification and checked against the
specification's test vectors, over the canonical form fastavro computes.
"""

from __future__ import annotations

import io
import json
import struct

import fastavro
import pytest

from portability.wire import (
    AvroCodec,
    InProcessSchemaRegistry,
    SchemaName,
    SchemaRegistryError,
    canonical_form,
    embedded_schema_id,
)
from portability.wire.schemas import schema_text

from .samples import app, change, tagged

# --- CRC-64-AVRO from the Avro specification ("Schema Fingerprints") --------------------------

_EMPTY = 0xC15D213AA4D7A795


def _table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _table()


def crc64_avro(data: bytes) -> int:
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def expected_id(text: str) -> int:
    """1 + fingerprint mod (2^31 - 1), over the canonical form fastavro computes."""
    form = fastavro.schema.to_parsing_canonical_form(json.loads(text))
    return 1 + crc64_avro(form.encode()) % (2**31 - 1)


# From Avro's share/test/data/schema-tests.txt: parsingFingerprint64, as a Java long.
_VECTORS = [
    ('"null"', 7195948357588979594),
    ('"int"', 8247732601305521295),
    ('"string"', -8142146995180207161),
]


@pytest.mark.parametrize(("schema", "java_long"), _VECTORS)
def test_the_fingerprint_matches_the_avro_test_vectors(schema: str, java_long: int) -> None:
    assert crc64_avro(schema.encode()) == java_long % 2**64


# --- the ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SchemaName))
def test_each_schema_id_is_computed_from_its_canonical_form(name: SchemaName) -> None:
    text = schema_text(name)
    assert embedded_schema_id(text) == expected_id(text)
    assert 1 <= embedded_schema_id(text) < 2**31


def test_the_canonical_form_is_the_specifications() -> None:
    text = json.dumps(
        {
            "type": "record",
            "namespace": "a.b",
            "name": "R",
            "doc": "dropped",
            "fields": [
                {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X"]}, "doc": "d"},
                {"name": "n", "type": ["null", "string"], "default": None},
            ],
        },
        indent=2,
    )
    assert canonical_form(text) == (
        '{"name":"a.b.R","type":"record","fields":[{"name":"at","type":"long"},'
        '{"name":"e","type":{"name":"a.b.E","type":"enum","symbols":["X"]}},'
        '{"name":"n","type":["null","string"]}]}'
    )


async def test_the_codec_frames_records_with_the_computable_ids(codec: AvroCodec) -> None:
    for name in SchemaName:
        assert codec.schema_id(name) == expected_id(schema_text(name))


async def test_ids_do_not_depend_on_registration_order(codec: AvroCodec) -> None:
    reversed_order = InProcessSchemaRegistry()
    ids = {
        name: await reversed_order.register(f"{name.value}-value", schema_text(name))
        for name in reversed(SchemaName)
    }
    assert ids == {name: codec.schema_id(name) for name in SchemaName}
    assert len(set(ids.values())) == len(SchemaName)
    # The tests and the demo frame undecodable records with id 99: no schema may have it.
    assert 99 not in ids.values()


async def test_a_platform_producer_computes_the_id_and_the_pipeline_reads_it(
    codec: AvroCodec,
) -> None:
    """An outside producer frames with its own computation, without asking any registry."""
    text = schema_text(SchemaName.ACCOUNT_CHANGE)
    body = io.BytesIO()
    body.write(struct.pack(">bI", 0, expected_id(text)))
    fastavro.schemaless_writer(
        body, fastavro.parse_schema(json.loads(text)), tagged(change("post"))
    )

    assert codec.decode(SchemaName.ACCOUNT_CHANGE, body.getvalue()) == change("post")


async def test_what_the_canonical_form_drops_does_not_change_the_id(
    registry: InProcessSchemaRegistry, codec: AvroCodec
) -> None:
    schema = json.loads(schema_text(SchemaName.APP))
    schema["doc"] = "another description"
    schema["fields"][0]["doc"] = "documented"
    variant = json.dumps(schema, indent=4)

    assert embedded_schema_id(variant) == codec.schema_id(SchemaName.APP)
    assert await registry.register("apps-value", variant) == codec.schema_id(SchemaName.APP)
    data = codec.encode(SchemaName.APP, app())
    assert codec.decode(SchemaName.APP, data) == app()


async def test_two_canonical_forms_with_one_id_are_refused(
    registry: InProcessSchemaRegistry,
) -> None:
    # Found by search: these two fixed types' canonical forms share an embedded id.
    first = json.dumps({"type": "fixed", "name": "F", "size": 65420})
    second = json.dumps({"type": "fixed", "name": "F", "size": 114412})
    assert expected_id(first) == expected_id(second) == 2038279794

    assert await registry.register("f-value", first) == 2038279794
    with pytest.raises(SchemaRegistryError, match="schema id 2038279794 collision") as caught:
        await registry.register("g-value", second)
    assert caught.value.retriable is False
    assert 'size":114412' in str(caught.value)
    # The first keeps its id and its schema.
    assert json.loads(await registry.fetch(2038279794))["size"] == 65420


def test_an_invalid_schema_has_no_id() -> None:
    with pytest.raises(ValueError, match="not a valid Avro schema"):
        embedded_schema_id('{"type": "record"}')
