"""What every pipeline process shares: settings, topic names, Kafka clients, the codec."""

from __future__ import annotations

from dataclasses import dataclass

from portability.broker.admin import ensure_topics
from portability.broker.clients import KafkaClients
from portability.settings import Settings
from portability.wire.codec import AvroCodec
from portability.wire.registry import (
    ConfluentSchemaRegistry,
    InProcessSchemaRegistry,
    SchemaRegistry,
)
from portability.wire.topics import TopicNames, pipeline_topics

__all__ = ["Runtime"]


@dataclass(frozen=True, slots=True)
class Runtime:
    """The shared parts of a process, built once by :meth:`open`."""

    settings: Settings
    topics: TopicNames
    kafka: KafkaClients
    codec: AvroCodec

    @classmethod
    async def open(cls, settings: Settings, bootstrap: str) -> Runtime:
        """Create the topics if needed and register the schemas."""
        topics = TopicNames.with_prefix(settings.topic_prefix)
        await ensure_topics(
            bootstrap, pipeline_topics(topics, settings.partitions), settings.replication_factor
        )
        registry: SchemaRegistry
        if settings.schema_registry_url:
            registry = ConfluentSchemaRegistry(settings.schema_registry_url)
        else:
            registry = InProcessSchemaRegistry()
        codec = AvroCodec(registry, settings.topic_prefix)
        await codec.start()
        return cls(settings, topics, KafkaClients(bootstrap, settings), codec)

    async def close(self) -> None:
        await self.codec.registry.close()
