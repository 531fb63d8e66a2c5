"""The JSON contract of a delta delivery: building, stable ids, and strict parsing.

Validation against the JSON Schema is in ``test_contract.py``; these tests pin the exact bytes.
"""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from portability.errors import PortabilityError
from portability.webhooks.event_schema import EVENT_SCHEMA_FILE, event_schema, event_schema_path
from portability.webhooks.parsing import (
    Delta,
    DeltaEvent,
    PayloadError,
    UnknownEventTypeError,
    parse_delta_event,
)
from portability.webhooks.payload import UNVERSIONED, delta_event, message_id, notification_event
from portability.wire.notifications import AUTHORIZATION_REMOVED, authorization_removed, event_id
from portability.wire.records import (
    AccountChange,
    DeliveryRecord,
    NotificationRecord,
    format_timestamp,
)
from portability.wire.schemas import schema_dir

OCCURRED = datetime(2025, 1, 31, 12, 0, 0, 123_456, tzinfo=UTC)
CREATED = datetime(2025, 1, 30, 8, 30, 0, 5_000, tzinfo=UTC)


def delivery(
    sequence: int, *, consent_id: str = "consent-1", record: dict[str, Any] | None = None
) -> DeliveryRecord:
    """A post upsert at ``sequence``; ``record`` replaces the default Post (with its hint)."""
    change: AccountChange = {
        "change_id": f"change-{sequence}",
        "user_id": "user-1",
        "category": "post",
        "operation": "upsert",
        "record_id": f"post-{sequence}",
        "occurred_at": OCCURRED + timedelta(seconds=sequence),
        "record": record
        if record is not None
        else {
            "-type": "portability.v1.Post",
            "caption": f"caption {sequence}",
            "media_url": "https://cdn.example/v.mp4",
            "visibility": "public",
            "created_at": CREATED,
        },
    }
    return {
        "delta_id": f"{consent_id}/{sequence}",
        "consent_id": consent_id,
        "app_id": "app-1",
        "user_id": "user-1",
        "sequence": sequence,
        "change": change,
        "matched_at": OCCURRED,
    }


def deletion(sequence: int) -> DeliveryRecord:
    record = delivery(sequence)
    record["change"]["operation"] = "delete"
    record["change"]["record"] = None
    return record


def test_body_has_the_documented_shape() -> None:
    _, body = delta_event([delivery(7)])

    assert json.loads(body) == {
        "type": "portability.delta",
        "timestamp": "2025-01-31T12:00:00.123Z",
        "data": {
            "consent_id": "consent-1",
            "app_id": "app-1",
            "user_id": "user-1",
            "deltas": [
                {
                    "id": "consent-1/7",
                    "sequence": 7,
                    "change_id": "change-7",
                    "category": "post",
                    "operation": "upsert",
                    "record_id": "post-7",
                    "occurred_at": "2025-01-31T12:00:07.123Z",
                    "record": {
                        "caption": "caption 7",
                        "media_url": "https://cdn.example/v.mp4",
                        "visibility": "public",
                        "created_at": "2025-01-30T08:30:00.005Z",
                    },
                    "policy_version": "unversioned",
                }
            ],
        },
    }


def test_body_is_compact_utf8() -> None:
    record = {"caption": "crème brûlée 🎂", "media_url": "m", "visibility": "public"}

    _, body = delta_event([delivery(1, record=record)])

    assert b", " not in body
    assert b'": ' not in body
    assert "crème brûlée 🎂".encode() in body


def test_round_trip() -> None:
    records = [delivery(3), deletion(4), delivery(5)]

    _, body = delta_event(records)
    event = parse_delta_event(body)

    assert isinstance(event, DeltaEvent)
    assert (event.consent_id, event.app_id, event.user_id) == ("consent-1", "app-1", "user-1")
    assert [delta.sequence for delta in event.deltas] == [3, 4, 5]
    assert event.deltas[1] == Delta(
        id="consent-1/4",
        sequence=4,
        change_id="change-4",
        category="post",
        operation="delete",
        record_id="post-4",
        occurred_at=datetime(2025, 1, 31, 12, 0, 4, 123_000, tzinfo=UTC),
        record=None,
    )
    assert event.deltas[0].record is not None
    assert event.deltas[0].record["created_at"] == "2025-01-30T08:30:00.005Z"


def test_record_type_hint_is_dropped_without_touching_the_input() -> None:
    records = [delivery(1), delivery(2)]
    before = copy.deepcopy(records)

    _, body = delta_event(records)

    assert b"-type" not in body
    assert records == before


def test_lone_surrogate_still_gives_valid_json() -> None:
    record = {"caption": "broken \ud800 text", "media_url": "m", "visibility": "public"}

    _, body = delta_event([delivery(1, record=record)])

    body.decode("utf-8")  # valid UTF-8, so a verifier can read it
    delta = parse_delta_event(body).deltas[0]
    assert delta.record is not None
    assert delta.record["caption"] == "broken \ud800 text"


def test_message_id_is_derived_from_the_delta_ids() -> None:
    records = [delivery(1), delivery(2)]
    digest = hashlib.sha256(b"consent-1/1\nconsent-1/2").hexdigest()

    msg_id, _ = delta_event(records)

    assert msg_id == "msg_" + digest[:32]
    assert msg_id == message_id(["consent-1/1", "consent-1/2"])


def test_same_deltas_always_give_the_same_message_id() -> None:
    first_id, _ = delta_event([delivery(1), delivery(2)])
    retried = [delivery(1), delivery(2)]
    retried[0]["matched_at"] = OCCURRED + timedelta(hours=1)

    second_id, _ = delta_event(retried)

    assert first_id == second_id
    assert delta_event([delivery(1)])[0] != first_id
    assert delta_event([delivery(2)])[0] != first_id


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([], "at least one"),
        ([delivery(1), delivery(2, consent_id="consent-2")], "one consent"),
        ([delivery(2), delivery(1)], "ascending"),
        ([delivery(2), delivery(2)], "ascending"),
    ],
)
def test_refuses_a_batch_that_is_not_one_consent_in_order(
    records: list[DeliveryRecord], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        delta_event(records)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2025, 1, 31, 12, 0, 0, 999_999, tzinfo=UTC), "2025-01-31T12:00:00.999Z"),
        (datetime(2025, 1, 31, 12, 0, tzinfo=UTC), "2025-01-31T12:00:00.000Z"),
        (
            datetime(2025, 1, 31, 14, 0, 0, 1_000, tzinfo=timezone(timedelta(hours=2))),
            "2025-01-31T12:00:00.001Z",
        ),
        (datetime(2025, 1, 31, 12, 0, tzinfo=timezone(timedelta(0))), "2025-01-31T12:00:00.000Z"),
        (datetime(2025, 1, 31, 12, 0), "2025-01-31T12:00:00.000Z"),  # noqa: DTZ001 - naive on purpose
    ],
)
def test_timestamps_are_utc_milliseconds_with_z(moment: datetime, expected: str) -> None:
    assert format_timestamp(moment) == expected


def valid_document() -> dict[str, Any]:
    return json.loads(delta_event([delivery(1)])[1])  # type: ignore[no-any-return]


def mutated(change: Any) -> bytes:
    document = valid_document()
    change(document)
    return json.dumps(document).encode()


def delta_field(name: str, value: object) -> bytes:
    return mutated(lambda document: document["data"]["deltas"][0].__setitem__(name, value))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[]", "body must be an object"),
        (b'{"data": {}}', "body.type is missing"),
        (mutated(lambda document: document.pop("data")), "body.data is missing"),
        (mutated(lambda document: document["data"].pop("app_id")), "data.app_id is missing"),
        (
            mutated(lambda document: document["data"].__setitem__("deltas", [])),
            "data.deltas is empty",
        ),
        (
            mutated(lambda document: document["data"].__setitem__("deltas", {})),
            "data.deltas must be an array",
        ),
        (delta_field("sequence", "1"), r"data.deltas\[0\].sequence must be an integer"),
        (delta_field("sequence", True), "sequence must be an integer"),
        (delta_field("sequence", 0), "sequences start at 1"),
        (delta_field("operation", "update"), "not 'upsert' or 'delete'"),
        (delta_field("occurred_at", "yesterday"), "not an ISO-8601"),
        (delta_field("occurred_at", "2025-01-31T12:00:00"), "no time zone"),
        (delta_field("record", [1, 2]), "record must be an object or null"),
        (delta_field("id", None), "id must be a string"),
    ],
)
def test_malformed_bodies_raise_payload_error(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_delta_event(body)


def test_other_event_types_are_told_apart() -> None:
    body = b'{"type": "authorization.removed", "data": {"consent_id": "c-1"}}'

    with pytest.raises(UnknownEventTypeError) as raised:
        parse_delta_event(body)

    assert raised.value.event_type == "authorization.removed"
    assert raised.value.document["data"] == {"consent_id": "c-1"}


def test_payload_error_is_a_portability_value_error() -> None:
    assert issubclass(PayloadError, PortabilityError)
    assert issubclass(PayloadError, ValueError)


def test_authorization_removed_event_carries_the_reason_and_a_stable_id() -> None:
    record = authorization_removed(
        consent_id="consent-1",
        app_id="app-1",
        user_id="user-1",
        reason="app_disabled",
        removed_at=OCCURRED,
        version=42,
    )

    msg_id, body = notification_event(record)

    assert msg_id == event_id(AUTHORIZATION_REMOVED, "consent-1", 42)
    assert msg_id != event_id(AUTHORIZATION_REMOVED, "consent-1", 43)
    assert msg_id.startswith("evt_")
    assert len(msg_id) == 36
    assert json.loads(body) == {
        "type": "authorization.removed",
        "timestamp": "2025-01-31T12:00:00.123Z",
        "data": {
            "consent_id": "consent-1",
            "app_id": "app-1",
            "user_id": "user-1",
            "occurred_at": "2025-01-31T12:00:00.123Z",
            "reason": "app_disabled",
        },
    }
    with pytest.raises(UnknownEventTypeError) as raised:
        parse_delta_event(body)
    assert raised.value.event_type == "authorization.removed"


def test_event_attributes_never_replace_the_common_fields() -> None:
    record: NotificationRecord = {
        "event_id": "evt_1",
        "event_type": "portability.example",
        "consent_id": "consent-1",
        "app_id": "app-1",
        "user_id": "user-1",
        "occurred_at": OCCURRED,
        "attributes": {"consent_id": "forged", "detail": "x"},
    }

    data = json.loads(notification_event(record)[1])["data"]

    assert (data["consent_id"], data["detail"]) == ("consent-1", "x")


def test_timestamp_is_when_the_last_delta_was_matched() -> None:
    records = [delivery(1), delivery(2), delivery(3)]
    for offset, record in enumerate(records):
        record["matched_at"] = OCCURRED + timedelta(minutes=offset)

    document = json.loads(delta_event(records)[1])

    assert document["timestamp"] == "2025-01-31T12:02:00.123Z"
    assert parse_delta_event(json.dumps(document).encode()).timestamp == datetime(
        2025, 1, 31, 12, 2, 0, 123_000, tzinfo=UTC
    )


def test_rebuilding_a_batch_for_a_retry_gives_the_same_bytes() -> None:
    """Nothing in the body depends on when it is built, so a redelivery is the same request."""
    assert delta_event([delivery(1), delivery(2)]) == delta_event([delivery(1), delivery(2)])


def test_each_delta_carries_its_policy_version() -> None:
    stamped = delivery(1)
    stamped["policy_version"] = "2025-03-privacy-v4"

    _, body = delta_event([stamped, delivery(2)])

    versions = [delta["policy_version"] for delta in json.loads(body)["data"]["deltas"]]
    assert versions == ["2025-03-privacy-v4", UNVERSIONED]
    assert [delta.policy_version for delta in parse_delta_event(body).deltas] == versions


def test_bodies_without_the_later_fields_still_parse() -> None:
    """A body from a sender that predates ``timestamp`` and ``policy_version``."""
    document = valid_document()
    del document["timestamp"]
    del document["data"]["deltas"][0]["policy_version"]

    event = parse_delta_event(json.dumps(document).encode())

    assert event.timestamp is None
    assert event.deltas[0].policy_version == UNVERSIONED
    assert event.deltas[0] == parse_delta_event(delta_event([delivery(1)])[1]).deltas[0]


def test_fields_this_version_does_not_know_are_ignored() -> None:
    """What lets the contract grow: old readers keep working when fields are added."""
    document = valid_document()
    document["trace"] = {"span": "abc"}
    document["data"]["region"] = "eu"
    document["data"]["deltas"][0]["source"] = "mobile"

    event = parse_delta_event(json.dumps(document).encode())

    assert event == parse_delta_event(delta_event([delivery(1)])[1])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (mutated(lambda document: document.__setitem__("timestamp", 5)), "body.timestamp must be"),
        (
            mutated(lambda document: document.__setitem__("timestamp", "soon")),
            "body.timestamp is not an ISO-8601",
        ),
        (
            mutated(lambda document: document.__setitem__("timestamp", "2025-01-31T12:00:00")),
            "body.timestamp has no time zone",
        ),
        (delta_field("policy_version", 4), r"data.deltas\[0\].policy_version must be a string"),
    ],
)
def test_later_fields_are_checked_when_present(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_delta_event(body)


def test_event_schema_is_installed_beside_the_avro_schemas() -> None:
    path = event_schema_path()

    assert path == schema_dir() / EVENT_SCHEMA_FILE
    assert path.is_file()
    assert (schema_dir() / "delivery.avsc").is_file()
    schema = event_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "changed by a caller"
    assert event_schema()["title"] != "changed by a caller"
