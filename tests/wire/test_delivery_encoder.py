"""The hand-written Delivery encoder writes fastavro's bytes, for changes of every category."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portability.webhooks.payload import rendered_delta
from portability.wire import CATEGORIES, AvroCodec, Category, SchemaName, WireFormatError
from portability.wire.delivery_encoder import DeliveryEncoder
from portability.wire.records import DeliveryRecord, to_millis
from portability.wire.schemas import schema_text

from .samples import change, delivery, tagged


def _as_the_matcher_writes(record: DeliveryRecord) -> DeliveryRecord:
    return {
        **record,
        "change": tagged(record["change"]),
        "rendered": rendered_delta(record),
        "ledger_digest": "ab" * 32,
    }


def _by_hand(codec: AvroCodec, record: DeliveryRecord) -> bytes:
    assert record["rendered"] is not None
    assert record["ledger_digest"] is not None
    return codec.delivery_encoder.encode(
        delta_id=record["delta_id"],
        consent_id=record["consent_id"],
        app_id=record["app_id"],
        user_id=record["user_id"],
        sequence=record["sequence"],
        matched_at_ms=to_millis(record["matched_at"]),
        policy_version=record["policy_version"],
        source_offset=record["source_offset"],
        snapshot_epoch=record["snapshot_epoch"],
        rendered=record["rendered"],
        ledger_digest=record["ledger_digest"],
        change=codec.encode_body(SchemaName.ACCOUNT_CHANGE, record["change"]),
    )


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("delete", [False, True], ids=["upsert", "delete"])
def test_a_delivery_is_written_as_fastavro_writes_it(
    codec: AvroCodec, category: Category, delete: bool
) -> None:
    record = _as_the_matcher_writes(delivery(change(category, delete=delete)))

    data = _by_hand(codec, record)

    assert data == codec.encode(SchemaName.DELIVERY, dict(record))
    assert codec.decode(SchemaName.DELIVERY, data)["change"]["record_id"] == f"r-{category}"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(max_size=300),
    sequence=st.integers(min_value=1, max_value=2**62),
    source_offset=st.integers(min_value=-1, max_value=2**62),
    epoch=st.integers(min_value=0, max_value=2**40),
    micros=st.integers(min_value=-(2**50), max_value=2**52),
)
def test_any_strings_numbers_and_moments_are_written_as_fastavro_writes_them(
    codec: AvroCodec, text: str, sequence: int, source_offset: int, epoch: int, micros: int
) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + micros * (datetime.resolution)
    record: DeliveryRecord = {
        **_as_the_matcher_writes(delivery(change("post"))),
        "delta_id": text,
        "consent_id": text[::-1],
        "app_id": text + "-app",
        "user_id": text,
        "sequence": sequence,
        "matched_at": moment,
        "policy_version": text,
        "source_offset": source_offset,
        "snapshot_epoch": epoch,
        "rendered": text.encode(),
        "ledger_digest": text,
    }

    assert _by_hand(codec, record) == codec.encode(SchemaName.DELIVERY, dict(record))


def test_a_schema_with_other_fields_is_refused() -> None:
    schema: dict[str, Any] = json.loads(schema_text(SchemaName.DELIVERY))
    schema["fields"].insert(-1, {"name": "priority", "type": "long", "default": 0})

    with pytest.raises(WireFormatError, match=r"change portability\.wire\.delivery_encoder"):
        DeliveryEncoder(schema, 1)
