"""The generated AccountChange writer writes fastavro's bytes, by its fast path or fastavro's.

Every comparison is with ``fastavro.schemaless_writer`` on this build's parsed schema, the
writer the codec used before; the tests of the fast path also check that it, not the
fallback, wrote the bytes.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portability.privacy import current_policy, for_subject
from portability.privacy.audience import AUDIENCE_RECORD_TYPE
from portability.simulation.platform import ChangeFactory
from portability.wire import CATEGORIES, AvroCodec, Category, SchemaName, WireFormatError
from portability.wire.change_encoder import ChangeEncoder
from portability.wire.records import AccountChange
from portability.wire.schemas import parsed_schema

from .samples import MOMENT, change, tagged

SCHEMA = parsed_schema(SchemaName.ACCOUNT_CHANGE)
ENCODER = ChangeEncoder(SCHEMA)
CONTEXT = {
    "actor_private": True,
    "shares_visible": False,
    "off_platform": False,
    "activity": {"kind": "share", "post_id": "p-1", "post_owner_id": "u-2"},
}
AUDIENCE = {
    "source_partition": 3,
    "entries": [
        {
            "post_owner_id": "u-2",
            "post_id": "p-1",
            "kind": "share",
            "delta": -1,
            "source_offset": 1_234_567,
            "occurred_at": MOMENT,
        },
        {
            "post_owner_id": "u-3",
            "post_id": "p-2",
            "kind": "view",
            "delta": 1,
            "source_offset": 0,
            "occurred_at": MOMENT,
        },
    ],
}


def fastavro_bytes(record: Mapping[str, Any], schema: Any = SCHEMA) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def assert_fast(record: Mapping[str, Any], codec: AvroCodec | None = None) -> None:
    """Written by the fast path, as fastavro writes it (and by the codec's encode_body)."""
    expected = fastavro_bytes(record)
    assert ENCODER.try_encode(record) == expected
    if codec is not None:
        assert codec.encode_body(SchemaName.ACCOUNT_CHANGE, record) == expected


def assert_fallback(record: Mapping[str, Any]) -> None:
    """Refused by the fast path, and written by fastavro."""
    assert ENCODER.try_encode(record) is None
    assert ENCODER.encode(record) == fastavro_bytes(record)


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("delete", [False, True], ids=["upsert", "delete"])
@pytest.mark.parametrize("context", [None, CONTEXT, {}], ids=["no-context", "context", "empty"])
@pytest.mark.parametrize("audience", [None, AUDIENCE], ids=["no-audience", "audience"])
def test_every_category_is_written_as_fastavro_writes_it(
    codec: AvroCodec,
    category: Category,
    delete: bool,
    context: dict[str, Any] | None,
    audience: dict[str, Any] | None,
) -> None:
    record: dict[str, Any] = dict(tagged(change(category, delete=delete)))
    record.update(context=copy.deepcopy(context), audience=copy.deepcopy(audience))

    assert_fast(record, codec)
    assert_fast({**record, "record": change(category, delete=delete)["record"]})  # untagged


def test_post_audience_figures_and_missing_defaults_are_written_fast(codec: AvroCodec) -> None:
    figures = {"-type": AUDIENCE_RECORD_TYPE, "post_id": "p-1", "share_count": 12}
    profile = {"-type": "portability.v1.Profile", "username": "a", "display_name": "A"}
    profile["region"] = "GB"  # bio and is_private missing: their defaults
    post = dict(tagged(change("post"))["record"] or {})
    del post["visibility"]
    base = change("post")
    del base["context"], base["audience"]  # as from a platform that predates them

    for record in (figures, profile, post, {**figures, "view_count": -(2**63)}):
        assert_fast({**base, "record": record}, codec)


def test_thousands_of_shaped_changes_are_written_fast_as_fastavro_writes_them(
    codec: AvroCodec,
) -> None:
    factory = ChangeFactory([f"u-{n}" for n in range(200)], seed=19)
    policy = current_policy()
    for _ in range(2_000):
        raw = factory.random_change()
        shaped = for_subject(policy, raw, tagged=True)
        assert shaped is not None
        assert_fast(shaped, codec)
        assert_fast(raw)  # untagged, with the platform's context


# Hypothesis bounds aware moments by naive ones; a day in from datetime's ends, for the offsets.
moments = st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11))]
    ),
)
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(),
    other=st.text(max_size=70),
    moment=moments,
    created=moments,
    count=longs,
    offset=longs,
    millis=longs,
    delta=st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
def test_any_strings_longs_and_moments_are_written_as_fastavro_writes_them(
    text: str,
    other: str,
    moment: datetime,
    created: datetime,
    count: int,
    offset: int,
    millis: int,
    delta: int,
) -> None:
    base: AccountChange = {**tagged(change("post")), "change_id": text, "user_id": other}
    base["record_id"] = other + text
    base["occurred_at"] = moment
    post: dict[str, Any] = {"-type": "portability.v1.Post", "caption": text, "media_url": other}
    post["created_at"] = created
    entry = {**AUDIENCE["entries"][0], "kind": text, "delta": delta}  # type: ignore[index]
    entry.update(source_offset=offset, occurred_at=millis)
    figures = {"-type": AUDIENCE_RECORD_TYPE, "post_id": text, "share_count": count}

    assert_fast({**base, "record": post})
    assert_fast({**base, "record": {**figures, "view_count": offset}})
    assert_fast({**base, "audience": {"source_partition": delta, "entries": [entry] * 3}})
    assert_fast({**base, "occurred_at": millis})  # epoch milliseconds, as fastavro takes them


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("change_id", 5),  # a wrong type
        ("change_id", b"ch-1"),
        ("change_id", "\udc80"),  # not UTF-8
        ("category", "reel"),  # an unknown enum symbol
        ("operation", None),
        ("occurred_at", "2024-05-01"),
        ("occurred_at", 2**63),  # beyond a long (fastavro's OverflowError)
        ("record", {"-type": "portability.v1.Reel", "caption": "x"}),  # an unknown branch
        ("record", {"-type": "portability.v1.Profile", "username": "a"}),  # fields missing
        ("record", {"direction": "sent", "other_user_id": "u-2", "other_username": "b"}),
        ("context", {"actor_private": "yes"}),
        ("audience", {"source_partition": 2**31, "entries": []}),  # beyond an int
        ("audience", {"source_partition": 1, "entries": [{"-type": "x"}]}),
    ],
)
def test_what_fastavro_refuses_raises_wire_format_errors(
    codec: AvroCodec, field: str, value: object
) -> None:
    record = {**tagged(change("profile")), field: value}

    assert ENCODER.try_encode(record) is None
    with pytest.raises(WireFormatError, match="cannot encode account_change"):
        codec.encode_body(SchemaName.ACCOUNT_CHANGE, record)


@pytest.mark.parametrize("field", ["change_id", "occurred_at", "category"])
def test_a_missing_field_raises_a_wire_format_error(codec: AvroCodec, field: str) -> None:
    record = dict(tagged(change("follow")))
    del record[field]

    with pytest.raises(WireFormatError, match=f"no value and no default for {field}"):
        codec.encode_body(SchemaName.ACCOUNT_CHANGE, record)


def test_what_the_fast_path_refuses_fastavro_writes() -> None:
    sample = tagged(change("follow"))
    follow = sample["record"]
    assert follow is not None
    naive = datetime(2024, 5, 1, 12, 30)  # noqa: DTZ001 - the point: fastavro's local time

    # Untagged, Activity and PostAudience both name post_id: the first refuses it (no kind)
    assert_fallback({**sample, "record": {"post_id": "p-1"}})  # fastavro: PostAudience
    assert_fallback({**sample, "occurred_at": naive})  # fastavro: local time
    assert_fallback({**sample, "occurred_at": 1_700_000_000_000.0})  # a float for a long
    assert_fallback({**sample, "occurred_at": True})
    assert_fallback(MappingProxyType(dict(sample)))  # a Mapping, not a dict
    assert_fallback({**sample, "record": ("portability.v1.Follow", follow)})  # tuple notation
    assert_fallback({**sample, "audience": {"source_partition": 0, "entries": ()}})


def test_a_record_of_a_one_record_union_may_carry_its_own_tag_and_no_other() -> None:
    tagged_context = {**CONTEXT, "-type": "portability.v1.ChangeContext"}
    mistagged = {**change("profile"), "record": None, "context": {"-type": "Context"}}

    assert_fast({**change("profile"), "record": None, "context": tagged_context})
    assert ENCODER.try_encode(mistagged) is None
    with pytest.raises(WireFormatError, match="do not match"):  # fastavro refuses it too
        ENCODER.encode(mistagged)


KINDS = {
    "type": "record",
    "name": "test.Kinds",
    "fields": [
        {"name": "figures", "type": {"type": "map", "values": "long"}},
        {"name": "blob", "type": "bytes"},
        {"name": "either", "type": ["null", "boolean", "bytes", {"type": "array", "items": "int"}]},
        {"name": "symbol", "type": {"type": "enum", "name": "test.Letter", "symbols": ["a", "b"]}},
        {"name": "same_kind", "type": ["null", "string", "test.Letter"]},  # a str is either
        {"name": "stamp", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
        {"name": "nothing", "type": "null"},
        {"name": "it's", "type": "string", "default": "names go in as literals"},
    ],
}


def test_maps_bytes_and_other_unions_are_written_as_fastavro_writes_them() -> None:
    schema = fastavro.parse_schema(KINDS)
    encoder = ChangeEncoder(schema, "kinds")
    record: dict[str, Any] = {"figures": {"ä": -5, "b" * 70: 2**40}, "blob": b"\x00" * 70}
    record.update(either=[1, -(2**31)], symbol="b", same_kind=None, stamp=MOMENT, nothing=None)
    cases = [record, {**record, "figures": {}, "either": True, "stamp": 5, "it's": "x"}]
    cases += [{**record, "either": b"", "stamp": None}, {**record, "either": None}]

    for case in cases:
        assert encoder.try_encode(case) == fastavro_bytes(case, schema)
    for refused in ({**record, "same_kind": "a"}, {**record, "figures": {1: 1}}):
        assert encoder.try_encode(refused) is None
    assert encoder.encode({**record, "same_kind": "a"}) == fastavro_bytes(
        {**record, "same_kind": "a"}, schema
    )


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "record", "name": "F", "fields": [{"name": "x", "type": "double"}]},
        {"type": "record", "name": "N", "fields": [{"name": "next", "type": ["null", "N"]}]},
        {
            "type": "record",
            "name": "D",
            "fields": [{"name": "d", "type": {"type": "int", "logicalType": "date"}}],
        },
    ],
    ids=["double", "recursive", "date"],
)
def test_a_schema_the_generator_cannot_write_gets_no_writer(schema: dict[str, Any]) -> None:
    assert ChangeEncoder.of(fastavro.parse_schema(schema)) is None
