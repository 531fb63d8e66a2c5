"""Everything on the wire: topic names and layout, Avro schemas, the Confluent framing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from portability.wire.codec import AvroCodec
from portability.wire.errors import (
    IncompatibleSchemaError,
    SchemaRegistryError,
    UnknownSchemaIdError,
    WireFormatError,
)
from portability.wire.records import (
    CATEGORIES,
    AccountChange,
    AppRecord,
    Category,
    ConsentRecord,
    DeliveryRecord,
)
from portability.wire.registry import (
    InProcessSchemaRegistry,
    SchemaRegistry,
    canonical_form,
    embedded_schema_id,
)
from portability.wire.schemas import SchemaName
from portability.wire.subjects import SubjectStrategy
from portability.wire.topics import (
    TopicNames,
    TopicSpec,
    consent_key,
    partition_for_user,
    pipeline_topics,
)

if TYPE_CHECKING:
    from portability.wire.confluent import ConfluentSchemaRegistry

__all__ = [
    "CATEGORIES",
    "AccountChange",
    "AppRecord",
    "AvroCodec",
    "Category",
    "ConfluentSchemaRegistry",
    "ConsentRecord",
    "DeliveryRecord",
    "InProcessSchemaRegistry",
    "IncompatibleSchemaError",
    "SchemaName",
    "SchemaRegistry",
    "SchemaRegistryError",
    "SubjectStrategy",
    "TopicNames",
    "TopicSpec",
    "UnknownSchemaIdError",
    "WireFormatError",
    "canonical_form",
    "consent_key",
    "embedded_schema_id",
    "partition_for_user",
    "pipeline_topics",
]


def __getattr__(name: str) -> Any:
    """``ConfluentSchemaRegistry`` on first use: its HTTP client library is slow to import."""
    if name == "ConfluentSchemaRegistry":
        from portability.wire.confluent import ConfluentSchemaRegistry

        return ConfluentSchemaRegistry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
