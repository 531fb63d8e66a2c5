"""The webhook contract: what the code sends is what the JSON Schema and docs/webhooks.md promise.

* Every body the delivery worker builds validates against ``schemas/webhooks/events.schema.json``
  (with format checking), and against a *closed* copy of it that forbids undocumented fields, so
  a field added to the bodies without documenting it fails here.
* The schema rejects what the contract forbids (one mutation of a valid body at a time).
* The schema agrees with the Avro schemas and the code's enums it was derived from.
* The contract page's JSON examples validate, every event type has one, and its verification example
  works with the unmodified ``standardwebhooks`` package.
"""

from __future__ import annotations

import copy
import io
import json
import re
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import fastavro
import pytest
from jsonschema import Draft202012Validator

from portability.matching import delta_id
from portability.privacy import current_policy
from portability.simulation.platform import ChangeFactory, user_ids
from portability.transfers.archive import shipped_record_json
from portability.transfers.render import StoredRecord, state_change
from portability.webhooks.event_schema import event_schema
from portability.webhooks.parsing import parse_delta_event
from portability.webhooks.payload import (
    UNVERSIONED,
    delivery_head,
    delta_event,
    head_delta_event,
    notification_event,
    rendered_delta,
)
from portability.webhooks.ping import ping_event
from portability.webhooks.signing import generate_secret, webhook_headers
from portability.wire import AvroCodec, InProcessSchemaRegistry, SchemaName, notifications
from portability.wire.notifications import authorization_removed
from portability.wire.records import (
    CATEGORIES,
    AccountChange,
    DeliveryRecord,
    RemovalReason,
    with_record_type,
)
from portability.wire.schemas import schema_dir, schema_text
from wire.samples import previous_delivery_schema

Document = dict[str, Any]

SCHEMA = event_schema()
MATCHED = datetime(2026, 11, 23, 9, 41, 7, 412_000, tzinfo=UTC)
DOCS = Path(__file__).resolve().parents[2] / "docs"
WEBHOOKS_DOC = DOCS / "webhooks.md"
VERIFY_EXAMPLE = DOCS / "examples" / "webhooks" / "verify.py"
OPERATIONS = ("upsert", "delete")


def closed(schema: Any) -> Any:
    """A copy of ``schema`` in which every described object forbids properties it does not list.

    The published schema leaves objects open so that apps accept fields added later; this copy
    checks the other direction: that nothing is sent which the schema does not describe.
    ``if``/``then`` subschemas declare no ``type`` and so stay open, as they must.
    """
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) for key, value in schema.items()}
    if result.get("type") == "object" and "properties" in result:
        result.setdefault("additionalProperties", False)
    return result


OPEN = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
CLOSED = Draft202012Validator(closed(SCHEMA), format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_valid(document: Document) -> None:
    """Valid against both the published schema and its closed copy, with readable errors."""
    for validator in (OPEN, CLOSED):
        errors = [
            f"{error.json_path}: {error.message}" for error in validator.iter_errors(document)
        ]
        assert errors == [], json.dumps(document, indent=1)


def assert_invalid(document: Document) -> None:
    assert not OPEN.is_valid(document), json.dumps(document, indent=1)


# --- the schema itself ---------------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_formats_are_really_checked() -> None:
    """Without its optional dependencies jsonschema silently skips date-time and uri."""
    checkers = Draft202012Validator.FORMAT_CHECKER.checkers
    assert {"date-time", "uri"} <= checkers.keys()


def test_event_types_are_told_apart_by_type() -> None:
    branches = [SCHEMA["$defs"][ref["$ref"].rsplit("/", 1)[-1]] for ref in SCHEMA["oneOf"]]
    types = {branch["properties"]["type"]["const"]: branch for branch in branches}

    assert set(types) == set(SCHEMA["discriminator"]["mapping"])
    assert set(types) == {
        "portability.delta",
        "authorization.removed",
        "portability.download.ready",
        "portability.snapshot",
        "portability.ping",
    }


def test_a_test_event_validates_and_is_new_each_time() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    first_id, first = ping_event("app_1", now)
    second_id, second = ping_event("app_1", now)
    for body in (first, second):
        Draft202012Validator(SCHEMA).validate(json.loads(body))
    assert json.loads(first)["type"] == "portability.ping"
    assert json.loads(first)["data"]["app_id"] == "app_1"
    # A ping is never taken for a redelivery.
    assert first_id != second_id
    assert first != second


def test_enums_match_the_code() -> None:
    defs = SCHEMA["$defs"]
    assert tuple(defs["Category"]["enum"]) == CATEGORIES
    assert tuple(defs["RemovalReason"]["enum"]) == get_args(RemovalReason)
    assert tuple(defs["Delta"]["properties"]["operation"]["enum"]) == OPERATIONS


def avro_records() -> Iterator[Document]:
    """The record types of ``AccountChange.record``, the union the per-category shapes mirror."""
    account_change = json.loads((schema_dir() / "account_change.avsc").read_text())
    (field,) = [f for f in account_change["fields"] if f["name"] == "record"]
    yield from (branch for branch in field["type"] if branch != "null")


@pytest.mark.parametrize("avro", list(avro_records()), ids=lambda avro: avro["name"])
def test_record_shapes_match_the_avro_schema(avro: Document) -> None:
    """Every Avro field is a required property (the codec fills in defaults), enums alike."""
    shape = SCHEMA["$defs"][avro["name"]]

    assert list(shape["properties"]) == [field["name"] for field in avro["fields"]]
    assert shape["required"] == [field["name"] for field in avro["fields"]]
    for field in avro["fields"]:
        if isinstance(field["type"], dict) and field["type"]["type"] == "enum":
            assert shape["properties"][field["name"]]["enum"] == field["type"]["symbols"]


# --- every body the code builds validates --------------------------------------------------------


@pytest.fixture
async def codec() -> AsyncIterator[AvroCodec]:
    registry = InProcessSchemaRegistry()
    started = AvroCodec(registry)
    await started.start()
    yield started
    await registry.close()


def every_kind_of_change(per_kind: int = 3) -> list[AccountChange]:
    """Simulated changes: ``per_kind`` of every category and operation the platform makes.

    Activities come in four kinds and follows in two directions, so a few of each keep the
    records varied; more would only slow the (pure-Python) validation down.
    """
    # The simulated platform never deletes a profile (its record_id is always "profile").
    wanted = {(c, o) for c in CATEGORIES for o in OPERATIONS} - {("profile", "delete")}
    factory = ChangeFactory(user_ids(3), seed=11)
    kept: dict[tuple[str, str], list[AccountChange]] = {}
    for _ in range(500):  # deletes are rare (about one change in ten): bounded, not endless
        for category in CATEGORIES:
            change = factory.random_change("u00000001", category)
            same_kind = kept.setdefault((category, change["operation"]), [])
            if len(same_kind) < per_kind:
                same_kind.append(change)
        if all(len(kept.get(kind, [])) == per_kind for kind in wanted):
            break
    assert set(kept) == wanted, "the simulated platform no longer makes every kind of change"
    profile_delete = factory.random_change("u00000002", "profile")
    profile_delete["operation"], profile_delete["record"] = "delete", None
    return [*(change for changes in kept.values() for change in changes), profile_delete]


async def through_the_topic(codec: AvroCodec, delivery: DeliveryRecord) -> DeliveryRecord:
    """The record as the delivery worker gets it: encoded by the matcher, decoded from Kafka."""
    framed = codec.encode(
        SchemaName.DELIVERY, {**delivery, "change": with_record_type(delivery["change"])}
    )
    return codec.decode(SchemaName.DELIVERY, framed)


def as_deliveries(changes: list[AccountChange], policy_version: str) -> list[DeliveryRecord]:
    consent_id = "cns_1f0e5a9c3b7d2e48"
    return [
        {
            "delta_id": delta_id(consent_id, change["change_id"]),
            "consent_id": consent_id,
            "app_id": "app_5c2a9e1d7b3f",
            "user_id": change["user_id"],
            "sequence": sequence,
            "change": change,
            "matched_at": MATCHED + timedelta(milliseconds=sequence),
            "policy_version": policy_version,
        }
        for sequence, change in enumerate(changes, start=1)
    ]


async def test_delta_bodies_of_every_category_and_operation_validate(codec: AvroCodec) -> None:
    changes = every_kind_of_change()
    deliveries = [
        await through_the_topic(codec, delivery)
        for delivery in as_deliveries(changes, "2026-11-privacy-v3")
    ]
    seen: set[tuple[str, str]] = set()

    for start in range(0, len(deliveries), 4):  # requests of up to four deltas, as batched
        _, body = delta_event(deliveries[start : start + 4])
        document = json.loads(body)
        assert_valid(document)
        seen |= {(d["category"], d["operation"]) for d in document["data"]["deltas"]}
        assert {d["policy_version"] for d in document["data"]["deltas"]} == {"2026-11-privacy-v3"}

    assert seen == {(category, operation) for category in CATEGORIES for operation in OPERATIONS}
    _, everything = delta_event(deliveries)  # one request with all of them, too
    assert_valid(json.loads(everything))


async def test_a_delivery_from_a_writer_without_policy_version_is_unversioned(
    codec: AvroCodec,
) -> None:
    """An old matcher's Delivery (no policy_version) decodes with the default and validates."""
    old_writer = json.loads(schema_text(SchemaName.DELIVERY))
    old_writer["fields"] = [f for f in old_writer["fields"] if f["name"] != "policy_version"]
    schema_id = await codec.registry.register(
        codec.subject(SchemaName.DELIVERY), json.dumps(old_writer)
    )
    (delivery,) = as_deliveries(every_kind_of_change()[:1], "ignored")
    del delivery["policy_version"]
    framed = io.BytesIO()
    framed.write(struct.pack(">bI", 0, schema_id))
    written = {**delivery, "change": with_record_type(delivery["change"])}
    fastavro.schemaless_writer(framed, fastavro.parse_schema(old_writer), written)

    decoded: Any = await codec.decode_fetching(SchemaName.DELIVERY, framed.getvalue())

    assert decoded["policy_version"] == UNVERSIONED
    document = json.loads(delta_event([decoded])[1])
    assert_valid(document)
    assert document["data"]["deltas"][0]["policy_version"] == UNVERSIONED


async def test_a_consumer_on_the_old_schema_reads_this_builds_deliveries(
    codec: AvroCodec,
) -> None:
    (delivery,) = as_deliveries(every_kind_of_change()[:1], "2026-11-privacy-v3")
    old_reader = json.loads(schema_text(SchemaName.DELIVERY))
    old_reader["fields"] = [f for f in old_reader["fields"] if f["name"] != "policy_version"]
    framed = codec.encode(
        SchemaName.DELIVERY, {**delivery, "change": with_record_type(delivery["change"])}
    )

    body = io.BytesIO(framed[5:])  # past the Confluent frame: magic byte and schema id
    current = fastavro.parse_schema(json.loads(schema_text(SchemaName.DELIVERY)))
    decoded = fastavro.schemaless_reader(body, current, fastavro.parse_schema(old_reader))

    assert isinstance(decoded, dict)
    assert "policy_version" not in decoded
    assert decoded["delta_id"] == delivery["delta_id"]


async def test_bodies_of_matcher_rendered_deltas_are_the_bodies_rendered_by_the_worker(
    codec: AvroCodec,
) -> None:
    """The worker builds bodies of the matcher's renderings, read without decoding the change
    (a head): byte for byte the bodies it renders itself of records without one."""
    deliveries = as_deliveries(every_kind_of_change(), "2026-11-privacy-v3")
    plain = [await through_the_topic(codec, delivery) for delivery in deliveries]
    heads = []
    for delivery in deliveries:
        written = {**delivery, "change": with_record_type(delivery["change"])}
        head = codec.delivery_head(
            codec.encode(SchemaName.DELIVERY, {**written, "rendered": rendered_delta(delivery)})
        )
        assert head is not None
        heads.append(head)

    for start in range(0, len(deliveries), 4):
        built = head_delta_event(heads[start : start + 4])
        assert built == delta_event(plain[start : start + 4])
        assert_valid(json.loads(built[1]))
    assert head_delta_event(heads) == delta_event(plain)


async def test_a_delivery_from_a_writer_before_renderings_is_rendered_by_the_worker(
    codec: AvroCodec,
) -> None:
    """An old matcher's Delivery (no rendering, the change in the middle) decodes by field
    name; the worker renders it, and the body is the one a rendering would have given."""
    old_writer = previous_delivery_schema()
    schema_id = await codec.registry.register(
        codec.subject(SchemaName.DELIVERY), json.dumps(old_writer)
    )
    (delivery,) = as_deliveries(every_kind_of_change()[:1], "2026-11-privacy-v3")
    framed = io.BytesIO()
    framed.write(struct.pack(">bI", 0, schema_id))
    written = {**delivery, "change": with_record_type(delivery["change"])}
    fastavro.schemaless_writer(framed, fastavro.parse_schema(old_writer), written)

    assert codec.delivery_head(framed.getvalue()) is None  # not this build's layout
    decoded: Any = await codec.decode_fetching(SchemaName.DELIVERY, framed.getvalue())

    assert decoded["rendered"] is None
    head = delivery_head(decoded)
    assert head["rendered"] == rendered_delta(delivery)
    assert head_delta_event([head]) == delta_event([delivery])
    assert_valid(json.loads(head_delta_event([head])[1]))


async def test_a_consumer_before_renderings_reads_this_builds_deliveries(
    codec: AvroCodec,
) -> None:
    (delivery,) = as_deliveries(every_kind_of_change()[:1], "2026-11-privacy-v3")
    written = {**delivery, "change": with_record_type(delivery["change"])}
    framed = codec.encode(SchemaName.DELIVERY, {**written, "rendered": rendered_delta(delivery)})

    body = io.BytesIO(framed[5:])  # past the Confluent frame: magic byte and schema id
    current = fastavro.parse_schema(json.loads(schema_text(SchemaName.DELIVERY)))
    old = fastavro.parse_schema(previous_delivery_schema())
    decoded = fastavro.schemaless_reader(body, current, old)

    assert isinstance(decoded, dict)
    assert "rendered" not in decoded
    for key in ("delta_id", "sequence", "matched_at", "policy_version"):
        assert decoded[key] == delivery[key]
    assert decoded["change"]["record"] == delivery["change"]["record"]


@pytest.mark.parametrize("reason", get_args(RemovalReason))
def test_authorization_removed_validates_for_every_reason(reason: RemovalReason) -> None:
    notification = authorization_removed(
        consent_id="cns_1f0e5a9c3b7d2e48",
        app_id="app_5c2a9e1d7b3f",
        user_id="u00000042",
        reason=reason,
        removed_at=MATCHED,
        version=9,
    )

    document = json.loads(notification_event(notification)[1])

    assert_valid(document)
    assert document["data"]["reason"] == reason
    assert document["timestamp"] == document["data"]["occurred_at"]


def download_ready() -> Document:
    """A ``portability.download.ready`` event as the transfers issue will send it."""
    return {
        "type": "portability.download.ready",
        "timestamp": "2026-11-23T10:02:13.500Z",
        "data": {
            "consent_id": "cns_77b0c1d2e3f40516",
            "app_id": "app_5c2a9e1d7b3f",
            "user_id": "u00000042",
            "transfer_id": "trf_3c9d1e2f4a5b6c7d",
            "download_url": "https://downloads.example/transfers/trf_3c9d1e2f4a5b6c7d.zip",
            "expires_at": "2026-11-27T10:02:13.500Z",
            "size_bytes": 48_213_377,
            "sha256": "0eb3e36bfb24dcd9bb1d1bece1531216b59539a8fde17ee80224af0653c92aa3",
            "categories": ["profile", "post", "direct_message"],
        },
    }


def snapshot_body(last: bool = True) -> Document:
    """A ``portability.snapshot`` page as the builder and worker make it, from real records."""
    factory = ChangeFactory(["u00000042"], seed=5)
    changes = [factory.random_change("u00000042", c) for c in ("profile", "post", "follow")]
    policy = current_policy()
    stored = [state_change(c, offset) for offset, c in enumerate(changes)]
    texts = [
        text
        for record in stored
        if isinstance(record, StoredRecord)
        and (text := shipped_record_json(record, policy, ["profile", "post", "follow"]))
    ]
    record = notifications.snapshot_page(
        consent_id="cns_77b0c1d2e3f40516",
        app_id="app_5c2a9e1d7b3f",
        user_id="u00000042",
        page=notifications.SnapshotPage("trf_3c9d1e2f4a5b6c7d", 1, 2, last, 4, 1234),
        categories=["profile", "post", "follow"],
        policy_version=policy.version,
        records=("[" + ",".join(texts) + "]").encode(),
        record_count=len(texts),
        taken_at=datetime(2026, 11, 23, 10, 2, 13, 500_000, tzinfo=UTC),
    )
    _, body = notification_event(record)
    document: Document = json.loads(body)
    return document


def test_snapshot_pages_as_the_builder_makes_them_validate() -> None:
    document = snapshot_body()

    assert_valid(document)
    data = document["data"]
    assert (data["epoch"], data["page"], data["last"], data["record_count"]) == (1, 2, True, 3)
    assert [r["category"] for r in data["records"]] == ["profile", "post", "follow"]
    assert data["position"] == "4:1234"
    assert data["categories"] == ["profile", "post", "follow"]
    assert_valid(snapshot_body(last=False))


def test_download_ready_example_validates() -> None:
    assert_valid(download_ready())


def test_download_ready_as_the_transfer_store_builds_it_validates() -> None:
    ready_at = datetime(2026, 11, 23, 10, 2, 13, 500_000, tzinfo=UTC)
    record = notifications.download_ready(
        consent_id="cns_77b0c1d2e3f40516",
        app_id="app_5c2a9e1d7b3f",
        user_id="u00000042",
        transfer_id="trf_3c9d1e2f4a5b6c7d",
        download_url="http://127.0.0.1:8080/v1/transfers/trf_3c9d1e2f4a5b6c7d/archive",
        expires_at=ready_at + timedelta(days=4),
        size_bytes=48_213_377,
        sha256="0eb3e36bfb24dcd9bb1d1bece1531216b59539a8fde17ee80224af0653c92aa3",
        categories=["profile", "post"],
        ready_at=ready_at,
    )

    msg_id, body = notification_event(record)

    document = json.loads(body)
    assert_valid(document)
    assert document["data"]["size_bytes"] == 48_213_377
    assert document["data"]["categories"] == ["profile", "post"]
    assert document["data"]["expires_at"] == "2026-11-27T10:02:13.500Z"
    assert msg_id == record["event_id"]


# --- what the schema rejects ---------------------------------------------------------------------


def delta_body() -> Document:
    """A valid delta body: a post upsert and a follow delete."""
    factory = ChangeFactory(user_ids(2), seed=3)
    post = factory.random_change("u00000001", "post")
    follow = factory.random_change("u00000001", "follow")
    follow["operation"], follow["record"] = "delete", None
    document: Document = json.loads(delta_event(as_deliveries([post, follow], "v1"))[1])
    return document


def removal_body() -> Document:
    notification = authorization_removed(
        consent_id="c",
        app_id="a",
        user_id="u",
        reason="expired",
        removed_at=MATCHED,
        version=1,
    )
    document: Document = json.loads(notification_event(notification)[1])
    return document


Mutation = Callable[[Document], None]


def _node(document: Document, where: str) -> Document:
    """The object to change: the body, its ``data``, its first delta or that delta's record."""
    if where == "body":
        return document
    data: Document = document["data"]
    if where == "data":
        return data
    delta: Document = data["deltas"][0]
    if where == "delta":
        return delta
    record: Document = delta["record"]
    return record


def put(where: str, **fields: object) -> Mutation:
    return lambda document: _node(document, where).update(fields)


def drop(where: str, key: str) -> Mutation:
    return lambda document: _node(document, where).__delitem__(key)


_INVALID = [
    # Delta events.
    pytest.param(delta_body, put("delta", category="follow"), id="post record as a follow"),
    pytest.param(delta_body, put("delta", category="profile"), id="post record as a profile"),
    pytest.param(delta_body, put("delta", category="podcast"), id="unknown category"),
    pytest.param(delta_body, drop("delta", "sequence"), id="missing sequence"),
    pytest.param(delta_body, put("delta", sequence=0), id="sequence 0"),
    pytest.param(delta_body, put("delta", sequence="1"), id="sequence as a string"),
    pytest.param(delta_body, put("delta", operation="update"), id="unknown operation"),
    pytest.param(delta_body, drop("delta", "policy_version"), id="missing policy_version"),
    pytest.param(delta_body, put("delta", record=[1]), id="record as an array"),
    pytest.param(delta_body, put("record", visibility="secret"), id="visibility not in enum"),
    pytest.param(delta_body, drop("record", "caption"), id="record missing a field"),
    pytest.param(
        delta_body, put("delta", occurred_at="2026-11-23T09:41:07.123"), id="occurred_at no zone"
    ),
    pytest.param(
        delta_body, put("delta", occurred_at="2026-13-45T09:41:07.123Z"), id="occurred_at no date"
    ),
    pytest.param(delta_body, put("data", deltas=[]), id="no deltas"),
    pytest.param(delta_body, drop("data", "consent_id"), id="missing consent_id"),
    pytest.param(
        delta_body, put("body", timestamp="2026-11-23T09:41:07+00:00"), id="timestamp not Z/ms"
    ),
    pytest.param(delta_body, put("body", type="portability.snapshot.page"), id="unknown type"),
    pytest.param(delta_body, drop("body", "data"), id="no data"),
    # authorization.removed.
    pytest.param(removal_body, drop("data", "reason"), id="removal without reason"),
    pytest.param(removal_body, put("data", reason="bored"), id="removal with unknown reason"),
    pytest.param(removal_body, drop("data", "occurred_at"), id="removal without occurred_at"),
    # portability.download.ready.
    pytest.param(download_ready, drop("data", "sha256"), id="download without sha256"),
    pytest.param(download_ready, put("data", sha256="AB" * 32), id="uppercase sha256"),
    pytest.param(download_ready, put("data", download_url="not a url"), id="url no URI"),
    pytest.param(download_ready, put("data", size_bytes=-1), id="negative size"),
    pytest.param(snapshot_body, drop("data", "records"), id="snapshot without records"),
    pytest.param(snapshot_body, put("data", page=0), id="snapshot page 0"),
    pytest.param(snapshot_body, put("data", last="yes"), id="snapshot last not boolean"),
    pytest.param(download_ready, put("data", categories=[]), id="no categories"),
    pytest.param(download_ready, put("data", categories=["post", "post"]), id="repeated category"),
]


@pytest.mark.parametrize(("make", "mutate"), _INVALID)
def test_schema_rejects(make: Callable[[], Document], mutate: Mutation) -> None:
    """Each case changes one thing in a valid document; the schema must notice."""
    document = make()
    assert_valid(document)
    broken = copy.deepcopy(document)

    mutate(broken)

    assert_invalid(broken)


def test_bodies_without_the_optional_timestamp_validate() -> None:
    for document in (delta_body(), removal_body(), download_ready()):
        del document["timestamp"]
        assert_valid(document)


def test_fields_added_later_are_allowed_by_the_published_schema() -> None:
    """Apps validating with the published schema keep working when the contract grows."""
    document = delta_body()
    document["trace_id"] = "abc"
    document["data"]["deltas"][0]["record"]["location"] = "Paris"

    assert OPEN.is_valid(document)
    assert not CLOSED.is_valid(document)


# --- the contract page (docs/webhooks.md) and its example ------------------------------------


def readme_contract_section() -> str:
    return WEBHOOKS_DOC.read_text(encoding="utf-8")


def fenced(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", readme_contract_section(), re.S | re.M)


def test_readme_points_to_the_schema() -> None:
    assert "schemas/webhooks/events.schema.json" in readme_contract_section()


def readme_events() -> list[Document]:
    """The section's JSON examples that are events (they have a ``type``)."""
    documents = [json.loads(block) for block in fenced("json")]
    return [document for document in documents if "type" in document]


def test_readme_json_examples_validate_and_cover_every_event_type() -> None:
    examples = readme_events()

    for example in examples:
        assert_valid(example)
    assert {example["type"] for example in examples} == set(SCHEMA["discriminator"]["mapping"])


def test_readme_delta_example_parses() -> None:
    (delta_example,) = [event for event in readme_events() if event["type"] == "portability.delta"]

    event = parse_delta_event(json.dumps(delta_example).encode())

    assert [delta.sequence for delta in event.deltas] == [17, 18]


def test_readme_removal_reasons_table_lists_every_reason() -> None:
    section = readme_contract_section()
    for reason in get_args(RemovalReason):
        assert f"| `{reason}` |" in section


def test_readme_verification_snippet_works_with_standardwebhooks() -> None:
    """The snippet, run as written, accepts a real delivery signed during a rotation."""
    snippet = VERIFY_EXAMPLE.read_text(encoding="utf-8")
    assert [block for block in fenced("python") if "def verified_event(" in block] == [snippet]
    namespace: dict[str, Any] = {}
    exec(compile(snippet, str(VERIFY_EXAMPLE), "exec"), namespace)  # noqa: S102 - our own example
    verified_event = namespace["verified_event"]
    old, new, stranger = generate_secret(), generate_secret(), generate_secret()
    msg_id, body = delta_event(as_deliveries(every_kind_of_change()[:3], "v1"))
    headers = webhook_headers([new, old], msg_id, body)

    assert verified_event(new, body, headers) == json.loads(body)
    assert verified_event(old, body, headers) == json.loads(body)
    assert verified_event(stranger, body, headers) is None
    assert verified_event(new, body.replace(b"u00000001", b"u00000002"), headers) is None
    assert_valid(verified_event(new, body, headers))
