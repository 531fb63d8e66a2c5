"""The hand-written delivery log encoder writes fastavro's bytes, for every kind of entry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from portability.wire import AvroCodec, InProcessSchemaRegistry, SchemaName
from portability.wire.delivery_log import DeliveryLogEntry
from portability.wire.delivery_log_encoder import LedgerHeadEncoder, LogEntryEncoder, logged_record


@pytest.fixture
async def codec() -> AvroCodec:
    started = AvroCodec(InProcessSchemaRegistry())
    await started.start()
    return started


def _entry(**changes: Any) -> DeliveryLogEntry:
    entry: dict[str, Any] = {
        "message_id": "msg_0123",
        "app_id": "app_1",
        "consent_id": "cns_1",
        "user_id": "u1",
        "event_type": "portability.delta",
        "endpoint_url": "https://app.example/webhooks",
        "origin": "worker",
        "attempt": 1,
        "attempted_at": datetime(2026, 12, 6, 12, 0, 0, 123000, tzinfo=UTC),
        "duration_ms": 42,
        "ok": True,
        "status": 200,
        "reason": "",
        "response_excerpt": "",
        "size": 2048,
        "body_sha256": "ab" * 32,
        "first_sequence": 1,
        "last_sequence": 2,
        "snapshot_epoch": None,
        "removal_reason": None,
        "records": [
            {
                "delta_id": "dlt_1",
                "record_id": "post_1",
                "category": "post",
                "operation": "upsert",
                "sequence": 1,
                "policy_version": "2026-11-01",
            },
            {
                "delta_id": "dlt_2",
                "record_id": "prof_ü",
                "category": "profile",
                "operation": "delete",
                "sequence": 2,
                "policy_version": "2026-11-01",
            },
        ],
        "sources": [
            {"topic": "deliveries", "partition": 0, "offset": 0},
            {"topic": "deliveries.retry", "partition": 11, "offset": 2**40},
        ],
        "ledger": {
            "before": "0" * 64,
            "after": "f" * 64,
            "events": 300,
            "deltas": 290,
            "pages": 9,
            "removals": 1,
        },
    }
    entry.update(changes)
    return entry  # type: ignore[return-value]  # the keys above are the TypedDict's


def _hand_encoded(encoder: LogEntryEncoder, entry: DeliveryLogEntry) -> bytes:
    return encoder.encode(
        strings=(
            entry["message_id"],
            entry["app_id"],
            entry["consent_id"],
            entry["user_id"],
            entry["event_type"],
            entry["endpoint_url"],
            entry["origin"],
        ),
        attempt=entry["attempt"],
        attempted_at_ms=int(entry["attempted_at"].timestamp() * 1000),
        duration_ms=entry["duration_ms"],
        ok=entry["ok"],
        status=entry["status"],
        reason=entry["reason"],
        response_excerpt=entry["response_excerpt"],
        size=entry["size"],
        body_sha256=entry["body_sha256"],
        sequences=(entry["first_sequence"], entry["last_sequence"]),
        snapshot_epoch=entry["snapshot_epoch"],
        removal_reason=entry["removal_reason"],
        records_and_sources=encoder.records_and_sources(
            [
                logged_record(
                    r["delta_id"],
                    r["record_id"],
                    r["category"],
                    r["operation"],
                    r["sequence"],
                    r["policy_version"],
                )
                for r in entry["records"]
            ],
            [(s["topic"], s["partition"], s["offset"]) for s in entry["sources"]],
        ),
        ledger=None
        if entry["ledger"] is None
        else (
            entry["ledger"]["before"],
            entry["ledger"]["after"],
            entry["ledger"]["events"],
            entry["ledger"]["deltas"],
            entry["ledger"]["pages"],
            entry["ledger"]["removals"],
        ),
    )


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"ok": False, "status": None, "reason": "connection refused", "attempt": 11},
        {"ok": False, "status": 503, "reason": "HTTP 503", "response_excerpt": "down ☂" * 50},
        {"attempt": 70, "duration_ms": 15_000, "size": 10**7, "first_sequence": 2**33},
        {
            "event_type": "authorization.removed",
            "removal_reason": "user_revoked",
            "first_sequence": None,
            "last_sequence": None,
            "records": [],
        },
        {
            "event_type": "portability.snapshot",
            "snapshot_epoch": 3,
            "first_sequence": None,
            "last_sequence": None,
            "records": [
                {
                    "delta_id": "",
                    "record_id": f"post_{index}",
                    "category": "post",
                    "operation": "snapshot",
                    "sequence": None,
                    "policy_version": "",
                }
                for index in range(200)  # more than one byte of count
            ],
        },
        {
            "consent_id": "",
            "user_id": "",
            "origin": "test",
            "records": [],
            "sources": [],
            "ledger": None,
        },
    ],
)
def test_the_hand_encoder_writes_what_fastavro_writes(
    codec: AvroCodec, changes: dict[str, Any]
) -> None:
    entry = _entry(**changes)
    encoder = LogEntryEncoder(codec.schema_id(SchemaName.DELIVERY_LOG_ENTRY))

    encoded = _hand_encoded(encoder, entry)

    assert encoded == codec.encode(SchemaName.DELIVERY_LOG_ENTRY, dict(entry))
    assert codec.decode(SchemaName.DELIVERY_LOG_ENTRY, encoded) == entry


# Each varint length's first and last value, both signs: the encoder writes up to four bytes
# without a loop and the rest with one.
_BOUNDARIES = sorted(
    {sign * (2**bits + step) for bits in range(0, 63) for step in (-1, 0, 1) for sign in (1, -1)}
    | {2**63 - 1, -(2**63)}
)


def test_longs_of_every_length_are_fastavros(codec: AvroCodec) -> None:
    encoder = LogEntryEncoder(codec.schema_id(SchemaName.DELIVERY_LOG_ENTRY))
    sources = [{"topic": "deliveries", "partition": 1, "offset": value} for value in _BOUNDARIES]
    entry = _entry(sources=sources, attempt=-5, duration_ms=2**27)

    assert _hand_encoded(encoder, entry) == codec.encode(SchemaName.DELIVERY_LOG_ENTRY, dict(entry))


@pytest.mark.parametrize(
    "order", [[0, 1, 7, 0], [3, 2, 2**40, 250], [], [-1] * 70], ids=["delta", "big", "none", "many"]
)
def test_the_ledger_head_encoder_writes_what_fastavro_writes(
    codec: AvroCodec, order: list[int]
) -> None:
    recorded_at = datetime(2026, 12, 6, 12, 0, 0, 123000, tzinfo=UTC)
    head: dict[str, Any] = {
        "consent_id": "cns_ü1",
        "app_id": "app_1",
        "head": "ab" * 32,
        "events": 300,
        "deltas": 2**33,
        "pages": 9,
        "removals": 0,
        "order": order,
        "identity": "dlt_0123",
        "recorded_at": recorded_at,
    }
    encoder = LedgerHeadEncoder(codec.schema_id(SchemaName.LEDGER_HEAD))

    encoded = encoder.encode(
        consent_id="cns_ü1",
        app_id="app_1",
        head="ab" * 32,
        counts=(300, 2**33, 9, 0),
        order=order,
        identity="dlt_0123",
        recorded_at_ms=int(recorded_at.timestamp() * 1000),
    )

    assert encoded == codec.encode(SchemaName.LEDGER_HEAD, head)
    assert codec.decode(SchemaName.LEDGER_HEAD, encoded) == head
