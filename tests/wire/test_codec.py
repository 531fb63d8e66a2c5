"""AvroCodec with the in-process registry: round trips, the Confluent frame, bad input."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from portability.wire import (
    CATEGORIES,
    AvroCodec,
    Category,
    InProcessSchemaRegistry,
    SchemaName,
    SchemaRegistryError,
    UnknownSchemaIdError,
    WireFormatError,
)
from portability.wire.schemas import schema_text

from .samples import app, change, consent, delivery, tagged

# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("delete", [False, True], ids=["upsert", "delete"])
def test_account_change_round_trips(codec: AvroCodec, category: Category, delete: bool) -> None:
    original = change(category, delete=delete)

    decoded = codec.decode(
        SchemaName.ACCOUNT_CHANGE, codec.encode(SchemaName.ACCOUNT_CHANGE, dict(tagged(original)))
    )

    assert decoded == original
    if delete:
        assert decoded["record"] is None


def test_union_branch_follows_the_category(codec: AvroCodec) -> None:
    """Follow and DirectMessage share field names; the tag keeps each in its own branch."""
    for category in ("follow", "direct_message"):
        value = change(category)
        data = codec.encode(SchemaName.ACCOUNT_CHANGE, dict(tagged(value)))
        record = codec.decode(SchemaName.ACCOUNT_CHANGE, data)["record"]
        assert record is not None
        assert set(record) == set(value["record"] or {})


@pytest.mark.parametrize(
    "record",
    [
        consent(),
        consent(status="revoked", revoked_at=consent()["expires_at"], expires_at=None),
        consent(mode="one_time", categories=[], version=0),
    ],
    ids=["active", "revoked", "one-time-no-categories"],
)
def test_consent_round_trips(codec: AvroCodec, record: dict[str, Any]) -> None:
    assert codec.decode(SchemaName.CONSENT, codec.encode(SchemaName.CONSENT, record)) == record


@pytest.mark.parametrize(
    "record",
    [app(), app(enabled=False, signing_secrets=["whsec_b2xk"], sealed_signing_secrets=[])],
    ids=["enabled", "disabled-written-before-sealing"],
)
def test_app_round_trips(codec: AvroCodec, record: dict[str, Any]) -> None:
    assert codec.decode(SchemaName.APP, codec.encode(SchemaName.APP, record)) == record


@pytest.mark.parametrize(
    "nested",
    [change("direct_message"), change("post"), change("follow", delete=True)],
    ids=["direct-message", "post", "delete"],
)
def test_delivery_round_trips_with_nested_change(codec: AvroCodec, nested: Any) -> None:
    original = delivery(nested)
    to_send = delivery(tagged(nested))

    decoded = codec.decode(SchemaName.DELIVERY, codec.encode(SchemaName.DELIVERY, dict(to_send)))

    assert decoded == original


# --- the frame ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "record"),
    [
        (SchemaName.ACCOUNT_CHANGE, tagged(change("profile"))),
        (SchemaName.CONSENT, consent()),
        (SchemaName.APP, app()),
        (SchemaName.DELIVERY, delivery(tagged(change("activity")))),
    ],
)
def test_frame_header_is_magic_zero_and_big_endian_schema_id(
    codec: AvroCodec, name: SchemaName, record: Any
) -> None:
    data = codec.encode(name, record)

    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == codec.schema_id(name)
    assert AvroCodec.frame_schema_id(data) == codec.schema_id(name)
    assert len(data) > 5


def test_each_schema_has_its_own_id(codec: AvroCodec) -> None:
    ids = {codec.schema_id(name) for name in SchemaName}
    assert len(ids) == len(SchemaName)


async def test_start_is_idempotent_and_ids_are_shared(
    codec: AvroCodec, registry: InProcessSchemaRegistry
) -> None:
    again = AvroCodec(registry)
    await again.start()
    await again.start()
    assert {n: again.schema_id(n) for n in SchemaName} == {
        n: codec.schema_id(n) for n in SchemaName
    }


def test_schema_id_above_255_is_framed_in_four_bytes() -> None:
    data = struct.pack(">bI", 0, 0x01020304) + b"\x02"
    assert AvroCodec.frame_schema_id(data) == 0x01020304


# --- bad input -------------------------------------------------------------------------------


def _valid(codec: AvroCodec) -> bytes:
    return codec.encode(SchemaName.ACCOUNT_CHANGE, dict(tagged(change("profile"))))


def test_none_is_a_wire_format_error(codec: AvroCodec) -> None:
    with pytest.raises(WireFormatError, match="no value"):
        codec.decode(SchemaName.ACCOUNT_CHANGE, None)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00\x00\x01"], ids=["0", "1", "4"])
def test_bytes_shorter_than_the_header_are_a_wire_format_error(
    codec: AvroCodec, data: bytes
) -> None:
    with pytest.raises(WireFormatError, match="shorter than the frame header"):
        codec.decode(SchemaName.ACCOUNT_CHANGE, data)


@pytest.mark.parametrize("magic", [1, 0x7F, -1])
def test_bad_magic_byte_is_a_wire_format_error(codec: AvroCodec, magic: int) -> None:
    data = bytearray(_valid(codec))
    data[0] = magic & 0xFF

    with pytest.raises(WireFormatError, match="bad magic byte"):
        codec.decode(SchemaName.ACCOUNT_CHANGE, bytes(data))


def test_plain_json_is_a_wire_format_error(codec: AvroCodec) -> None:
    with pytest.raises(WireFormatError, match="bad magic byte"):
        codec.decode(SchemaName.ACCOUNT_CHANGE, b'{"change_id": "x"}')


@pytest.mark.parametrize("keep", [5, 6, 20, -1], ids=["header-only", "1-byte", "20-bytes", "-1"])
def test_truncated_body_is_a_wire_format_error(codec: AvroCodec, keep: int) -> None:
    data = _valid(codec)[:keep]

    with pytest.raises(WireFormatError, match="undecodable account_change body") as caught:
        codec.decode(SchemaName.ACCOUNT_CHANGE, data)
    assert not isinstance(caught.value, UnknownSchemaIdError)


def test_corrupt_body_is_a_wire_format_error(codec: AvroCodec) -> None:
    # A valid App header, then a body whose first string length is a negative varint.
    header = struct.pack(">bI", 0, codec.schema_id(SchemaName.APP))
    with pytest.raises(WireFormatError, match="undecodable app body"):
        codec.decode(SchemaName.APP, header + b"\xff\xff\xff\xff\x0f")


def test_record_of_another_type_is_a_wire_format_error(codec: AvroCodec) -> None:
    """A frame with a known id but a schema that does not resolve to the reader's."""
    data = codec.encode(SchemaName.APP, dict(app()))

    with pytest.raises(WireFormatError, match="undecodable consent body"):
        codec.decode(SchemaName.CONSENT, data)


def test_unknown_schema_id_is_reported_with_the_id(codec: AvroCodec) -> None:
    data = struct.pack(">bI", 0, 9999) + _valid(codec)[5:]

    with pytest.raises(UnknownSchemaIdError, match="unknown schema id 9999") as caught:
        codec.decode(SchemaName.ACCOUNT_CHANGE, data)
    assert caught.value.schema_id == 9999
    assert isinstance(caught.value, WireFormatError)


@pytest.mark.parametrize(
    "record",
    [
        {"app_id": "only"},
        {**app(), "version": "three"},
        {**app(), "signing_secrets": None},
    ],
    ids=["missing-fields", "wrong-type", "null-array"],
)
def test_encoding_an_invalid_record_is_a_wire_format_error(
    codec: AvroCodec, record: dict[str, Any]
) -> None:
    with pytest.raises(WireFormatError, match="cannot encode app"):
        codec.encode(SchemaName.APP, record)


# --- fetching writer schemas -------------------------------------------------------------------


async def test_decode_fetching_loads_an_id_another_codec_registered(
    codec: AvroCodec, registry: InProcessSchemaRegistry
) -> None:
    """A reader that never registered anything learns the writer's id from the registry."""
    original = change("post")
    data = codec.encode(SchemaName.ACCOUNT_CHANGE, dict(tagged(original)))
    reader = AvroCodec(registry)  # not started: knows no id

    with pytest.raises(UnknownSchemaIdError):
        reader.decode(SchemaName.ACCOUNT_CHANGE, data)
    assert await reader.decode_fetching(SchemaName.ACCOUNT_CHANGE, data) == original
    # Loaded once, then known without the registry.
    assert reader.decode(SchemaName.ACCOUNT_CHANGE, data) == original


async def test_decode_fetching_an_id_the_registry_lacks_raises_unknown_id(
    codec: AvroCodec,
) -> None:
    data = struct.pack(">bI", 0, 4242) + _valid(codec)[5:]

    with pytest.raises(UnknownSchemaIdError) as caught:
        await codec.decode_fetching(SchemaName.ACCOUNT_CHANGE, data)
    assert caught.value.schema_id == 4242
    assert await codec.load_schema_id(4242) is False


class _JunkRegistry(InProcessSchemaRegistry):
    """Answers every id with text that is not an Avro schema (a registry holding junk)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.fetches = 0

    async def fetch(self, schema_id: int) -> str:
        self.fetches += 1
        return self.text


@pytest.mark.parametrize("text", ['{"type": "record"}', "not json", '"no_such_type"'])
async def test_decode_fetching_rejects_a_schema_that_does_not_parse(
    codec: AvroCodec, text: str
) -> None:
    registry = _JunkRegistry(text)
    reader = AvroCodec(registry)

    for _ in range(3):
        with pytest.raises(UnknownSchemaIdError):
            await reader.decode_fetching(SchemaName.ACCOUNT_CHANGE, _valid(codec))
    assert registry.fetches == 1  # remembered as unusable, not asked for on every record


@pytest.mark.parametrize("text", ['{"type": "record"}', "not json", '"no_such_type"'])
async def test_the_in_process_registry_refuses_an_invalid_schema(
    registry: InProcessSchemaRegistry, text: str
) -> None:
    with pytest.raises(SchemaRegistryError, match="register junk-value: not a valid Avro schema"):
        await registry.register("junk-value", text)


class _FailingRegistry(InProcessSchemaRegistry):
    def __init__(self, retriable: bool) -> None:
        super().__init__()
        self.retriable = retriable
        self.fetches = 0

    async def fetch(self, schema_id: int) -> str:
        self.fetches += 1
        error = SchemaRegistryError(f"registry down while fetching {schema_id}")
        error.retriable = self.retriable
        raise error


async def test_decode_fetching_propagates_a_retriable_registry_error(codec: AvroCodec) -> None:
    """An unreachable registry is not an undecodable record: the caller may retry."""
    registry = _FailingRegistry(retriable=True)
    reader = AvroCodec(registry)

    with pytest.raises(SchemaRegistryError, match="registry down") as caught:
        await reader.decode_fetching(SchemaName.ACCOUNT_CHANGE, _valid(codec))
    assert caught.value.retriable
    assert not isinstance(caught.value, WireFormatError)
    assert registry.fetches == 1


async def test_decode_fetching_treats_a_non_retriable_registry_error_as_unknown_id(
    codec: AvroCodec,
) -> None:
    reader = AvroCodec(_FailingRegistry(retriable=False))

    with pytest.raises(UnknownSchemaIdError):
        await reader.decode_fetching(SchemaName.ACCOUNT_CHANGE, _valid(codec))


async def test_a_retriable_registry_error_is_not_remembered(codec: AvroCodec) -> None:
    """An outage says nothing about the id: the next record asks the registry again."""
    registry = _FailingRegistry(retriable=True)
    reader = AvroCodec(registry)

    for _ in range(3):
        with pytest.raises(SchemaRegistryError):
            await reader.decode_fetching(SchemaName.ACCOUNT_CHANGE, _valid(codec))
    assert registry.fetches == 3


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _CountingRegistry(InProcessSchemaRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.fetches: list[int] = []

    async def fetch(self, schema_id: int) -> str:
        self.fetches.append(schema_id)
        return await super().fetch(schema_id)


async def test_an_unknown_id_costs_one_registry_request_per_ttl(codec: AvroCodec) -> None:
    """An unknown id on every record must not cost a registry request per record; a schema
    registered later is found once the remembered answer expires."""
    registry = _CountingRegistry()
    clock = _Clock()
    reader = AvroCodec(registry, unknown_id_ttl_s=5.0, clock=clock)
    data = _valid(codec)  # written with an id this reader's registry does not hold yet
    schema_id = AvroCodec.frame_schema_id(data)

    for _ in range(100):
        with pytest.raises(UnknownSchemaIdError):
            await reader.decode_fetching(SchemaName.ACCOUNT_CHANGE, data)
    assert registry.fetches == [schema_id]

    await registry.register("late-value", schema_text(SchemaName.ACCOUNT_CHANGE))
    clock.now += 4.9
    with pytest.raises(UnknownSchemaIdError):
        await reader.decode_fetching(SchemaName.ACCOUNT_CHANGE, data)
    assert registry.fetches == [schema_id]

    clock.now += 0.2  # past the 5 s: asked again, and found
    assert await reader.decode_fetching(SchemaName.ACCOUNT_CHANGE, data)
    assert await reader.decode_fetching(SchemaName.ACCOUNT_CHANGE, data)
    assert registry.fetches == [schema_id, schema_id]


async def test_remembered_unknown_ids_stay_bounded(codec: AvroCodec) -> None:
    registry = _CountingRegistry()
    clock = _Clock()
    reader = AvroCodec(registry, clock=clock)
    body = _valid(codec)[5:]

    for schema_id in range(1, 10_001):  # corrupt frames: a new id each
        with pytest.raises(UnknownSchemaIdError):
            await reader.decode_fetching(
                SchemaName.ACCOUNT_CHANGE, struct.pack(">bI", 0, schema_id) + body
            )
    assert len(registry.fetches) == 10_000
    assert len(reader._unknown) <= 4096


async def test_decode_fetching_still_rejects_a_bad_frame(codec: AvroCodec) -> None:
    with pytest.raises(WireFormatError, match="no value"):
        await codec.decode_fetching(SchemaName.ACCOUNT_CHANGE, None)
    with pytest.raises(WireFormatError, match="bad magic byte"):
        await codec.decode_fetching(SchemaName.ACCOUNT_CHANGE, b"\x05" + _valid(codec)[1:])
