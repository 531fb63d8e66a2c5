"""Audience figures on the creator's side: each entry one account starting (+1) or stopping
(-1) to count (the actor's side, ``test_ledger``, decides that), counted once, released at the
minimum group size of accounts, restored exactly, and their records readable by every reader
the schema promises."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from jsonschema import Draft202012Validator

from portability.privacy import (
    ActivityLedger,
    AudienceFigures,
    audience_marker,
    figures_change,
    load_policy,
    platform_headers,
    update_change,
)
from portability.simulation import ChangeFactory, UserSettings
from portability.webhooks.event_schema import event_schema
from portability.webhooks.parsing import parse_delta_event
from portability.webhooks.payload import delta_event
from portability.wire import AvroCodec, InProcessSchemaRegistry, SchemaName, WireFormatError
from portability.wire.headers import AUDIENCE_HEADER
from portability.wire.records import AudienceEntry, MatcherCheckpoint, with_record_type
from portability.wire.schemas import parsed_schema, schema_text

POLICY = load_policy()
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def entry(offset: int, delta: int = 1, kind: str = "share", post: str = "p1") -> AudienceEntry:
    """One account starting (+1) or stopping (-1) to count toward the post's ``kind``."""
    return {
        "post_owner_id": "creator",
        "post_id": post,
        "kind": kind,
        "delta": delta,
        "source_offset": offset,
        "occurred_at": T0 + timedelta(seconds=offset),
    }


@pytest.fixture
async def codec() -> AvroCodec:
    started = AvroCodec(InProcessSchemaRegistry())
    await started.start()
    return started


def test_figures_are_withheld_below_the_minimum_and_coalesced_per_update() -> None:
    figures = AudienceFigures()
    assert figures.apply(POLICY, 0, [entry(i) for i in range(4)]) == []  # 4 accounts < 5
    [release] = figures.apply(POLICY, 0, [entry(4), entry(5), entry(6, kind="view")])
    assert release.figures == {"share": 6, "view": None}  # one release for three entries
    assert release.occurred_at == T0 + timedelta(seconds=6)
    [release] = figures.apply(POLICY, 1, [entry(0, -1), entry(1, -1)])
    assert release.figures == {"share": None, "view": None}  # 4 accounts again: withheld
    assert figures.apply(POLICY, 1, [entry(2, -1)]) == []  # still withheld: nothing new
    assert figures.count("creator", "p1", "share") == 3


def test_entries_sent_again_are_counted_once() -> None:
    figures = AudienceFigures()
    figures.apply(POLICY, 2, [entry(i) for i in range(10, 16)])
    again = figures.apply(POLICY, 2, [entry(i) for i in range(12, 18)])  # 12-15 seen
    assert figures.count("creator", "p1", "share") == 8
    assert figures.duplicates == 4
    assert [r.figures["share"] for r in again] == [8]
    # Another source partition's offsets are its own.
    figures.apply(POLICY, 0, [entry(3)])
    assert figures.count("creator", "p1", "share") == 9


def test_a_removal_never_takes_a_count_below_zero() -> None:
    figures = AudienceFigures()
    figures.apply(POLICY, 0, [entry(0, -1), entry(1, -1)])
    assert figures.count("creator", "p1", "share") == 0
    assert len(figures) == 0  # nothing counted, nothing shown: no state kept


async def test_the_figures_survive_a_checkpoint_through_avro(codec: AvroCodec) -> None:
    figures = AudienceFigures()
    figures.apply(POLICY, 1, [entry(i, post=f"p{i % 2}") for i in range(12)])
    factory = ChangeFactory(["fan", "creator"], seed=2)
    ledger = ActivityLedger()  # the same partition's actor side, written beside the figures
    for offset in range(3):
        ledger.apply(POLICY, factory.activity("fan", "view", "p9", "creator"), offset)
    checkpoint: MatcherCheckpoint = {
        "source_partition": 1,
        "next_offset": 99,
        "sequences": {"c1": 4},
        "written_at": T0,
        "audience": figures.checkpoint(),
        "counted_activity": ledger.checkpoint(),
    }
    decoded: Any = codec.decode(
        SchemaName.MATCHER_CHECKPOINT, codec.encode(SchemaName.MATCHER_CHECKPOINT, dict(checkpoint))
    )
    restored = AudienceFigures.restore(decoded["audience"])
    assert restored.checkpoint() == figures.checkpoint()
    assert ActivityLedger.restore(decoded["counted_activity"]).checkpoint() == ledger.checkpoint()
    # Restored, it goes on exactly as the original would.
    more = [entry(12, post="p0"), entry(13, post="p0"), entry(11, post="p1")]
    assert restored.apply(POLICY, 1, more) == figures.apply(POLICY, 1, more)
    assert AudienceFigures().checkpoint() is None


async def test_updates_and_figures_encode_and_carry_no_identity(codec: AvroCodec) -> None:
    update = update_change(4, [entry(7), entry(9, kind="view")])
    assert update["user_id"] == ""
    assert (update["category"], update["operation"], update["record_id"]) == (
        "post",
        "delete",
        "audience",
    )
    decoded = codec.decode(
        SchemaName.ACCOUNT_CHANGE, codec.encode(SchemaName.ACCOUNT_CHANGE, dict(update))
    )
    assert decoded == update

    [release] = AudienceFigures().apply(POLICY, 4, [entry(i) for i in range(5)])
    figures = figures_change(release, update["change_id"])
    assert figures == figures_change(release, update["change_id"])  # the same id every time
    assert figures["record_id"] == "p1/audience"
    delivery = {
        "delta_id": "d",
        "consent_id": "c",
        "app_id": "a",
        "user_id": "creator",
        "sequence": 1,
        "change": figures,
        "matched_at": T0,
        "policy_version": POLICY.version,
    }
    got: Any = codec.decode(SchemaName.DELIVERY, codec.encode(SchemaName.DELIVERY, delivery))
    assert got["change"]["record"] == {"post_id": "p1", "share_count": 5, "view_count": None}


def test_the_platform_marks_only_activity_on_someone_elses_post() -> None:
    factory = ChangeFactory(["a", "b"], seed=1)
    share = factory.activity("a", "share", "p", "b")
    assert platform_headers(share) == [(AUDIENCE_HEADER, b"share")]
    assert audience_marker(platform_headers(share)) == b"share"
    assert platform_headers(factory.activity("a", "view", "p", "a")) == []  # own post
    unshare = factory.remove_activity("a", share["record_id"])
    assert unshare["record"] is None
    context = unshare.get("context")
    assert context is not None
    assert context["activity"] == {"kind": "share", "post_id": "p", "post_owner_id": "b"}
    assert platform_headers(unshare) == [(AUDIENCE_HEADER, b"share")]
    assert platform_headers(factory.random_change("a", "post")) == []
    assert audience_marker([("other", b"x")]) is None


def test_a_removal_carries_the_settings_its_activity_was_made_under() -> None:
    factory = ChangeFactory(["a", "b"], seed=1)
    share = factory.activity("a", "share", "p", "b")
    factory.set_settings("a", UserSettings(private=True))
    context = factory.remove_activity("a", share["record_id"]).get("context")
    assert context is not None
    assert not context["actor_private"]  # counted when made, so uncounted when removed


# --- schema evolution of the fields this issue added --------------------------------------------


def _without(schema: dict[str, Any], *names: str) -> dict[str, Any]:
    """``schema`` (an AccountChange) as a writer that predates ``names`` (fields or branches)."""
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in names]
    for field in schema["fields"]:
        if field["name"] == "record":
            field["type"] = [
                b for b in field["type"] if not isinstance(b, dict) or b["name"] not in names
            ]
    return schema


def _old_account_change() -> dict[str, Any]:
    current = json.loads(schema_text(SchemaName.ACCOUNT_CHANGE))
    return _without(current, "context", "audience", "portability.v1.PostAudience")


async def test_an_old_writers_change_reads_with_no_context_and_no_audience(
    codec: AvroCodec,
) -> None:
    old = _old_account_change()
    registry = codec.registry
    schema_id = await registry.register(codec.subject(SchemaName.ACCOUNT_CHANGE), json.dumps(old))
    change = ChangeFactory(["a", "b"]).random_change("a", "follow")
    written = {k: v for k, v in with_record_type(change).items() if k != "context"}
    body = io.BytesIO()
    body.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(body, fastavro.parse_schema(old), written)

    decoded = await codec.decode_fetching(SchemaName.ACCOUNT_CHANGE, body.getvalue())

    assert decoded["context"] is None
    assert decoded["audience"] is None
    assert decoded["record"] == change["record"]


def test_an_old_reader_reads_this_builds_changes_but_not_figures(codec: AvroCodec) -> None:
    old_reader = fastavro.parse_schema(_old_account_change())
    factory = ChangeFactory(["a", "b"])
    change = factory.activity("a", "share", "p", "b")
    data = codec.encode(SchemaName.ACCOUNT_CHANGE, dict(with_record_type(change)))
    read: Any = fastavro.schemaless_reader(
        io.BytesIO(data[5:]), parsed_schema(SchemaName.ACCOUNT_CHANGE), old_reader
    )
    assert read["record"] == change["record"]
    assert "context" not in read

    # A figures record is of a branch the old reader lacks: an error, never a wrong record
    # (upgrade readers before the matcher that writes figures).
    [release] = AudienceFigures().apply(POLICY, 0, [entry(i) for i in range(5)])
    figures = codec.encode(SchemaName.ACCOUNT_CHANGE, dict(figures_change(release, "u")))
    with pytest.raises(Exception, match=r"PostAudience|union|schema"):
        fastavro.schemaless_reader(
            io.BytesIO(figures[5:]), parsed_schema(SchemaName.ACCOUNT_CHANGE), old_reader
        )


@pytest.mark.parametrize(
    "predates", [("counted_activity",), ("audience", "counted_activity")], ids=["ledger", "both"]
)
async def test_an_old_checkpoint_reads_with_no_audience(
    codec: AvroCodec, predates: tuple[str, ...]
) -> None:
    """A checkpoint from a writer before the actor side (or before any figures) reads with
    null for what it lacks: the partition resumes with an empty ledger."""
    current = json.loads(schema_text(SchemaName.MATCHER_CHECKPOINT))
    current["fields"] = [f for f in current["fields"] if f["name"] not in predates]
    schema_id = await codec.registry.register(
        codec.subject(SchemaName.MATCHER_CHECKPOINT), json.dumps(current)
    )
    body = io.BytesIO()
    body.write(b"\x00" + schema_id.to_bytes(4, "big"))
    record = {"source_partition": 0, "next_offset": 3, "sequences": {}, "written_at": T0}
    fastavro.schemaless_writer(body, fastavro.parse_schema(current), record)
    decoded = await codec.decode_fetching(SchemaName.MATCHER_CHECKPOINT, body.getvalue())
    assert decoded["counted_activity"] is None
    assert ActivityLedger.restore(decoded["counted_activity"]).checkpoint() is None
    if "audience" in predates:
        assert decoded["audience"] is None


def test_an_undecodable_update_is_a_wire_format_error(codec: AvroCodec) -> None:
    framed = b"\x00" + codec.schema_id(SchemaName.ACCOUNT_CHANGE).to_bytes(4, "big")
    with pytest.raises(WireFormatError, match="undecodable account_change body"):
        codec.decode(SchemaName.ACCOUNT_CHANGE, framed + b"\xff")


async def test_a_figures_delta_is_a_valid_webhook_body(codec: AvroCodec) -> None:
    """Through the topic and the payload builder, a figures delta validates against the JSON
    Schema app developers validate against."""
    [release] = AudienceFigures().apply(POLICY, 0, [entry(i) for i in range(5)])
    delivery = {
        "delta_id": "dlt_1",
        "consent_id": "cns_1",
        "app_id": "app_1",
        "user_id": "creator",
        "sequence": 3,
        "change": figures_change(release, "aud_1"),
        "matched_at": T0,
        "policy_version": POLICY.version,
    }
    decoded: Any = codec.decode(SchemaName.DELIVERY, codec.encode(SchemaName.DELIVERY, delivery))
    _, body = delta_event([decoded])
    Draft202012Validator(event_schema()).validate(json.loads(body))
    [delta] = parse_delta_event(body).deltas
    assert (delta.category, delta.record_id, delta.policy_version) == (
        "post",
        "p1/audience",
        POLICY.version,
    )
    assert delta.record == {"post_id": "p1", "share_count": 5, "view_count": None}
