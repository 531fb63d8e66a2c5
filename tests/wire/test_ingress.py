"""The producer contract's checks (``portability.wire.ingress``) record by record, with the
in-process registry and this build's codec: each fault, its short reason, and the verdicts
every stage must agree on."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portability.wire import AvroCodec, InProcessSchemaRegistry, SchemaName
from portability.wire.dead_letters import DeadLetter
from portability.wire.errors import WireFormatError
from portability.wire.ingress import (
    BODY_FAULTS,
    DOOR_FAULTS,
    UNKNOWN_ID_TTL_S,
    Door,
    Fault,
    TimeWindow,
)
from portability.wire.records import AccountChange
from portability.wire.topics import partition_for_user

from .samples import change as sample_change
from .samples import tagged

PARTITIONS = 6
NOW_MS = 1_780_000_000_000  # a record timestamp (2026)


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes | None
    value: bytes | None
    partition: int
    timestamp: int = NOW_MS


@pytest.fixture
async def codec() -> AvroCodec:
    codec = AvroCodec(InProcessSchemaRegistry())
    await codec.start()
    return codec


def _change(user_id: str = "u_ada", **overrides: Any) -> AccountChange:
    change = dict(tagged(sample_change("post", user_id=user_id)))
    change["occurred_at"] = datetime.fromtimestamp(NOW_MS / 1000, UTC) - timedelta(seconds=2)
    change.update(overrides)
    return change  # type: ignore[return-value]


def _record(codec: AvroCodec, user_id: str = "u_ada", **overrides: Any) -> Record:
    value = codec.encode(SchemaName.ACCOUNT_CHANGE, dict(_change(user_id, **overrides)))
    return Record(user_id.encode(), value, partition_for_user(user_id, PARTITIONS))


async def test_a_good_record_passes_the_door_and_its_body(codec: AvroCodec) -> None:
    door = Door(codec, PARTITIONS)
    record = _record(codec)
    assert await door.verdict(record) is None
    change = codec.decode(SchemaName.ACCOUNT_CHANGE, record.value)
    assert door.body_fault(record, change) is None


@pytest.mark.parametrize(
    ("mutate", "fault"),
    [
        (lambda r, c: Record(r.key, None, r.partition), Fault.NO_VALUE),
        (lambda r, c: Record(r.key, b"\x00\x00", r.partition), Fault.NOT_FRAMED),
        (lambda r, c: Record(r.key, b"{}" + (r.value or b""), r.partition), Fault.NOT_FRAMED),
        (lambda r, c: Record(r.key, b"\x00\x7f\xff\xff\xfe" + b"body", r.partition), None),
        (lambda r, c: Record(None, r.value, r.partition), Fault.NO_KEY),
        (lambda r, c: Record(b"", r.value, r.partition), Fault.NO_KEY),
        (lambda r, c: Record(b"\xff\xfe", r.value, r.partition), Fault.BAD_KEY),
        (lambda r, c: Record(r.key, r.value, (r.partition + 1) % PARTITIONS), None),
    ],
    ids=[
        "no-value",
        "short",
        "json",
        "unknown-id",
        "no-key",
        "empty-key",
        "not-utf8",
        "wrong-partition",
    ],
)
async def test_door_faults(codec: AvroCodec, mutate: Any, fault: Fault | None) -> None:
    door = Door(codec, PARTITIONS)
    record = mutate(_record(codec), codec)
    rejection = await door.verdict(record)
    assert rejection is not None
    expected = fault or (
        Fault.UNKNOWN_SCHEMA_ID if record.value.startswith(b"\x00\x7f") else Fault.WRONG_PARTITION
    )
    assert rejection.fault is expected
    assert rejection.at_door
    assert rejection.reason.startswith(f"{expected}: ")


async def test_a_schema_id_of_another_record_type_is_the_wrong_schema(codec: AvroCodec) -> None:
    door = Door(codec, PARTITIONS)
    app = {
        "app_id": "a",
        "name": "n",
        "webhook_url": "https://x.example",
        "signing_secrets": [],
        "enabled": True,
        "version": 1,
    }
    value = codec.encode(SchemaName.APP, app)
    rejection = await door.verdict(Record(b"u_ada", value, partition_for_user("u_ada", 6)))
    assert rejection is not None
    assert rejection.fault is Fault.WRONG_SCHEMA
    assert "portability.v1.App" in rejection.detail


async def test_body_faults(codec: AvroCodec) -> None:
    door = Door(codec, PARTITIONS)
    mislabelled = _record(codec, "u_mallory")
    mislabelled = Record(b"u_ada", mislabelled.value, partition_for_user("u_ada", PARTITIONS))
    seconds = _record(
        codec, occurred_at=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=NOW_MS // 1000)
    )
    ahead = _record(codec, occurred_at=datetime.fromtimestamp(NOW_MS / 1000 + 7200, UTC))
    reserved = _record(codec, audience={"source_partition": 0, "entries": []})
    cases = {
        Fault.KEY_MISMATCH: mislabelled,
        Fault.IMPLAUSIBLE_TIME: seconds,
        Fault.RESERVED_FIELD: reserved,
    }
    for fault, record in cases.items():
        assert await door.verdict(record) is None, "the door passes it: only the body fails"
        change = codec.decode(SchemaName.ACCOUNT_CHANGE, record.value)
        rejection = door.body_fault(record, change)
        assert rejection is not None
        assert rejection.fault is fault
        assert not rejection.at_door
    later = door.body_fault(ahead, codec.decode(SchemaName.ACCOUNT_CHANGE, ahead.value))
    assert later is not None
    assert later.fault is Fault.IMPLAUSIBLE_TIME
    assert "7200 s after" in later.detail


def test_the_window_is_judged_against_the_records_own_timestamp() -> None:
    window = TimeWindow(datetime(2000, 1, 1, tzinfo=UTC), timedelta(hours=1))
    old = datetime(2019, 5, 1, tzinfo=UTC)  # a backfill, or a replay next week: still fine
    assert window.fault(old, NOW_MS) is None
    assert window.fault(datetime(1999, 12, 31, tzinfo=UTC), NOW_MS) is not None
    at = datetime.fromtimestamp(NOW_MS / 1000, UTC)
    assert window.fault(at + timedelta(minutes=59), NOW_MS) is None
    assert window.fault(at + timedelta(minutes=61), NOW_MS) is not None


def test_door_and_body_faults_split_every_fault() -> None:
    assert set(Fault) == DOOR_FAULTS | BODY_FAULTS
    assert not DOOR_FAULTS & BODY_FAULTS


async def test_an_unknown_id_is_asked_once_then_again_after_its_time(codec: AvroCodec) -> None:
    asked: list[int] = []

    class Counting:
        """The codec the door learns through, counting what it is asked."""

        async def load_schema_id(self, schema_id: int) -> bool:
            asked.append(schema_id)
            return await codec.load_schema_id(schema_id)

        def writer_name(self, schema_id: int) -> str | None:
            return codec.writer_name(schema_id)

    door = Door(Counting(), PARTITIONS)
    record = Record(b"u_ada", b"\x00\x00\x00\x00\x63body", partition_for_user("u_ada", 6))
    for _ in range(100):
        assert (await door.verdict(record)).fault is Fault.UNKNOWN_SCHEMA_ID  # type: ignore[union-attr]
    assert asked == [99]
    door.expire_unknown(now=0.0)  # long before the TTL ends: nothing forgotten
    assert door.check(record) is not Door.UNRESOLVED
    door.expire_unknown(now=float("inf"))
    assert door.check(record) is Door.UNRESOLVED
    assert UNKNOWN_ID_TTL_S > 0


def test_a_reason_fits_a_dead_letter() -> None:
    letter = DeadLetter(
        topic="t", partition=0, offset=1, key=None, value=None, reason="x" * 25_000, stage="s"
    )
    reason = dict(letter.headers())["dlq.reason"].decode()
    assert len(reason) < 300
    assert reason.endswith("...")


async def test_an_unresolvable_writer_schema_gives_a_short_reason(codec: AvroCodec) -> None:
    """A schema resolution error's repr holds both schemas whole (about 25 KB)."""
    foreign = {
        "type": "record",
        "name": "AccountChange",
        "namespace": "portability.v1",
        "fields": [{"name": "change_id", "type": "long"}],
    }
    registry = codec.registry
    schema_id = await registry.register("account.changes-value", json.dumps(foreign))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(foreign), {"change_id": 5})
    framed = b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()
    with pytest.raises(WireFormatError) as caught:
        await codec.decode_fetching(SchemaName.ACCOUNT_CHANGE, framed)
    assert len(str(caught.value)) < 300
    assert str(caught.value).startswith("undecodable account_change body: ")


_USER_IDS = st.text(min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(key_user=_USER_IDS, value_user=_USER_IDS, partitions=st.integers(1, 24))
def test_only_a_record_keyed_by_its_own_user_passes_both_checks(
    key_user: str, value_user: str, partitions: int
) -> None:
    """Random keys and values: a record passes the door and the body checks exactly when its
    key is its value's user id in UTF-8, in that key's partition; so no change can be
    matched against another user's consents (the matcher looks consents up by the key)."""
    codec = AvroCodec(InProcessSchemaRegistry())
    asyncio.run(codec.start())
    door = Door(codec, partitions)
    asyncio.run(door.learn(codec.schema_id(SchemaName.ACCOUNT_CHANGE)))
    value = codec.encode(SchemaName.ACCOUNT_CHANGE, dict(_change(value_user)))
    record = Record(key_user.encode(), value, partition_for_user(key_user, partitions))
    assert door.check(record) is None
    change = codec.decode(SchemaName.ACCOUNT_CHANGE, value)
    fault = door.body_fault(record, change)
    if key_user == value_user:
        assert fault is None
    else:
        assert fault is not None
        assert fault.fault is Fault.KEY_MISMATCH
