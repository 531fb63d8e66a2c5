"""The generated AccountChange reader reads what fastavro reads, or leaves the value to it.

Every comparison is with ``fastavro.schemaless_reader`` on this build's parsed schema, the
reader the codec uses for this build's schema id.
"""

from __future__ import annotations

import io
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portability.matching.change_reader import ChangeReader
from portability.privacy import update_change
from portability.simulation.platform import ChangeFactory, user_ids
from portability.wire import CATEGORIES, SchemaName
from portability.wire.records import AudienceEntry, with_record_type
from portability.wire.schemas import parsed_schema

SCHEMA = parsed_schema(SchemaName.ACCOUNT_CHANGE)
FRAME = b"\x00\x00\x00\x00\x07"
READER = ChangeReader(SCHEMA, FRAME)
MOMENT = datetime(2024, 5, 1, 12, 30, 45, 123_000, tzinfo=UTC)


def framed(record: Mapping[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, SCHEMA, record)
    return FRAME + buffer.getvalue()


def fastavro_read(value: bytes) -> Any:
    body = io.BytesIO(value)
    body.seek(len(FRAME))
    return fastavro.schemaless_reader(body, SCHEMA, None)


def assert_same(value: bytes) -> None:
    read = READER.read(value)
    expected = fastavro_read(value)
    assert read == expected
    assert repr(read) == repr(expected)  # the same types, keys in the same order


def changes(count: int, seed: int) -> list[dict[str, Any]]:
    factory = ChangeFactory(user_ids(200), seed=seed)
    return [dict(with_record_type(factory.random_change())) for _ in range(count)]


def test_reads_every_kind_of_change_as_fastavro() -> None:
    made = changes(3_000, seed=11)
    assert {c["category"] for c in made} == set(CATEGORIES)
    for change in made:
        assert_same(framed(change))


def test_reads_an_audience_update_as_fastavro() -> None:
    entries: list[AudienceEntry] = [
        {
            "post_owner_id": f"u-{i}",
            "post_id": f"p-{i}",
            "kind": "share",
            "delta": (-1) ** i * i * 1_000_003,
            "source_offset": i * 2**40,
            "occurred_at": MOMENT,
        }
        for i in range(300)  # more than one block's worth of varint-sized counts
    ]
    assert_same(framed(dict(update_change(2**31 - 1, entries))))


@given(
    text=st.text(max_size=300),
    millis=st.integers(min_value=-(2**41), max_value=2**45),
    big=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
@settings(max_examples=200, deadline=None)
def test_reads_any_text_time_and_long_as_fastavro(text: str, millis: int, big: int) -> None:
    change = changes(1, seed=3)[0] | {"record_id": text}
    change["occurred_at"] = datetime.fromtimestamp(millis / 1000, UTC)
    change["record"] = {
        "-type": "portability.v1.PostAudience",
        "post_id": text,
        "share_count": big,
        "view_count": None,
    }
    assert_same(framed(change))


def test_leaves_other_frames_and_no_value_to_the_codec() -> None:
    value = framed(changes(1, seed=5)[0])
    assert READER.read(b"\x00\x00\x00\x00\x08" + value[5:]) is None
    assert READER.read(None) is None
    assert READER.read(FRAME) is None  # empty body: too short


def test_corrupt_bodies_are_read_as_fastavro_reads_them_or_left_to_it() -> None:
    rnd = random.Random(5)
    left = 0
    for change in changes(3_000, seed=17):
        value = bytearray(framed(change))
        for _ in range(rnd.randint(1, 3)):
            value[rnd.randrange(len(FRAME), len(value))] = rnd.randrange(256)
        if rnd.random() < 0.3:
            value = value[: rnd.randint(len(FRAME), len(value))]
        read = READER.read(bytes(value))
        if read is None:
            left += 1
            continue
        assert read == fastavro_read(bytes(value))
    assert left > 300  # the corruptions the fast path refuses went to fastavro


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\x03", "a negative length"),
        (b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", "a varint of eleven bytes"),
        (b"\x04ab", "a string longer than the body"),
    ],
)
def test_refuses_what_fastavro_must_judge(body: bytes, why: str) -> None:
    assert READER.read(FRAME + body) is None, why


def test_refuses_a_boolean_byte_other_than_zero_or_one() -> None:
    change = changes(1, seed=9)[0]
    change["category"] = "profile"
    change["record"] = {
        "-type": "portability.v1.Profile",
        "username": "a",
        "display_name": "b",
        "bio": "c",
        "region": "d",
        "is_private": True,
    }
    change["context"] = None
    change["audience"] = None
    value = framed(change)
    assert READER.read(value) is not None
    # The Profile's is_private is the byte before the two nulls (context, audience).
    assert value[-3:] == b"\x01\x00\x00"
    assert READER.read(value[:-3] + b"\x02\x00\x00") is None


def test_a_schema_with_a_type_it_does_not_read_gets_no_reader() -> None:
    schema = fastavro.parse_schema(
        {"type": "record", "name": "X", "fields": [{"name": "f", "type": "double"}]}
    )
    assert ChangeReader.of(schema, FRAME) is None
    assert ChangeReader.of({"type": "string"}, FRAME) is None
