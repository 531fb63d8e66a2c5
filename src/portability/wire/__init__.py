"""Everything on the wire: topic names and layout, Avro schemas, the Confluent framing."""

from portability.wire.codec import AvroCodec
from portability.wire.errors import SchemaRegistryError, UnknownSchemaIdError, WireFormatError
from portability.wire.records import (
    CATEGORIES,
    AccountChange,
    AppRecord,
    Category,
    ConsentRecord,
    DeliveryRecord,
)
from portability.wire.registry import (
    ConfluentSchemaRegistry,
    InProcessSchemaRegistry,
    SchemaRegistry,
)
from portability.wire.schemas import SchemaName
from portability.wire.topics import (
    TopicNames,
    TopicSpec,
    consent_key,
    partition_for_user,
    pipeline_topics,
)

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
    "SchemaName",
    "SchemaRegistry",
    "SchemaRegistryError",
    "TopicNames",
    "TopicSpec",
    "UnknownSchemaIdError",
    "WireFormatError",
    "consent_key",
    "partition_for_user",
    "pipeline_topics",
]
