"""Sample records of every type on the wire, shared by the wire tests.

Timestamps have millisecond precision: Avro ``timestamp-millis`` keeps no more, so only such
values round-trip exactly.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from portability.wire.records import (
    AccountChange,
    AppRecord,
    Category,
    ConsentRecord,
    DeliveryRecord,
    with_record_type,
)
from portability.wire.schemas import SchemaName, schema_text

MOMENT = datetime(2024, 5, 1, 12, 30, 45, 123_000, tzinfo=UTC)
LATER = datetime(2025, 5, 1, 0, 0, 0, 1_000, tzinfo=UTC)

# One record per category, as the platform sends it (no "-type" union tag).
RECORDS: dict[Category, dict[str, Any]] = {
    "profile": {
        "username": "ada",
        "display_name": "Ada Lovelace",
        "bio": "Analyst of engines. ✨",
        "region": "GB",
        "is_private": True,
    },
    "post": {
        "caption": "first light",
        "media_url": "https://cdn.example.com/p/1.jpg",
        "visibility": "friends",
        "created_at": MOMENT,
    },
    # Follow and DirectMessage share field names: the union branch must come from the category.
    "follow": {
        "direction": "follower",
        "other_user_id": "u-2",
        "other_username": "charles",
    },
    "activity": {
        "kind": "comment",
        "post_id": "p-9",
        "post_owner_id": "u-3",
        "text": "lovely",
        "share_target": None,
    },
    "direct_message": {
        "conversation_id": "c-1",
        "direction": "sent",
        "other_user_id": "u-2",
        "text": "hello",
    },
}


def change(category: Category, *, delete: bool = False, user_id: str = "u-1") -> AccountChange:
    """A change of ``category``: an upsert with its sample record, or a delete (record None)."""
    return {
        "change_id": f"ch-{category}-{'d' if delete else 'u'}",
        "user_id": user_id,
        "category": category,
        "operation": "delete" if delete else "upsert",
        "record_id": f"r-{category}",
        "occurred_at": MOMENT,
        "record": None if delete else copy.deepcopy(RECORDS[category]),
        # Fields added later with defaults: a decoded change always has them.
        "context": None,
        "audience": None,
    }


def tagged(value: AccountChange) -> AccountChange:
    """A copy of ``value`` tagged for encoding (the original stays untagged, as decoded)."""
    return with_record_type(copy.deepcopy(value))


def consent(**overrides: Any) -> ConsentRecord:
    record: ConsentRecord = {
        "consent_id": "cs-1",
        "user_id": "u-1",
        "app_id": "app-1",
        "categories": ["profile", "post", "direct_message"],
        "mode": "ongoing",
        "status": "active",
        "granted_at": MOMENT,
        "expires_at": LATER,
        "revoked_at": None,
        "version": 7,
        "removal_reason": None,
        "snapshot_epoch": 0,
        "snapshot_position": None,
        "snapshot_last_page_offset": None,
    }
    record.update(overrides)  # type: ignore[typeddict-item]
    return record


def app(**overrides: Any) -> AppRecord:
    record: AppRecord = {
        "app_id": "app-1",
        "name": "Photo Backup",
        "webhook_url": "https://hooks.example.com/portability",
        # As writers since sealing send it: no clear secret, the sealed ones (see app.avsc).
        "signing_secrets": [],
        "enabled": True,
        "version": 3,
        "sealed_signing_secrets": [
            "sealed:v1:k1:6Jm0Jc7bQ1yqkS3RZt8nSg2sN4mV1pQ7xY9zA0bC1dE2fG3hI4jK5lM6nO7pQ8rS9tU",
            "sealed:v1:k1:Zt8nSg2sN4mV1pQ7xY9zA0bC1dE2fG3hI4jK5lM6nO7pQ8rS9tU6Jm0Jc7bQ1yqkS3R",
        ],
        "delivery_mode": "webhook",
    }
    record.update(overrides)  # type: ignore[typeddict-item]
    return record


def delivery(nested: AccountChange) -> DeliveryRecord:
    return {
        "delta_id": "d-1",
        "consent_id": "cs-1",
        "app_id": "app-1",
        "user_id": nested["user_id"],
        "sequence": 42,
        "change": nested,
        "matched_at": LATER,
        "policy_version": "2025-05-01",
        "source_offset": 1_234,
        "snapshot_epoch": 0,
        "rendered": None,
        "ledger_digest": None,
    }


def previous_delivery_schema() -> dict[str, Any]:
    """The Delivery schema before ``rendered``: the change after the sequence."""
    schema: dict[str, Any] = json.loads(schema_text(SchemaName.DELIVERY))
    fields = {field["name"]: field for field in schema["fields"]}
    order = ["delta_id", "consent_id", "app_id", "user_id", "sequence", "change"]
    order += ["matched_at", "policy_version", "source_offset"]
    schema["fields"] = [fields[name] for name in order]
    return schema
