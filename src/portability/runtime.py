"""What every pipeline process shares: settings, topic names, Kafka clients, the codec."""

from __future__ import annotations

from dataclasses import dataclass

from portability.broker.admin import ensure_topics
from portability.broker.clients import KafkaClients
from portability.settings import Settings
from portability.wire.codec import AvroCodec
from portability.wire.registry import InProcessSchemaRegistry, SchemaRegistry
from portability.wire.subjects import SubjectStrategy
from portability.wire.topics import TopicNames, pipeline_topics

__all__ = ["Runtime", "open_codec"]


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
            bootstrap,
            pipeline_topics(
                topics, settings.partitions, feed_retention_days=settings.feed_retention_days
            ),
            settings.replication_factor,
        )
        codec = await open_codec(settings, topics)
        return cls(settings, topics, KafkaClients(bootstrap, settings), codec)

    async def close(self) -> None:
        await self.codec.registry.close()


async def open_codec(settings: Settings, topics: TopicNames | None = None) -> AvroCodec:
    """The codec of ``settings``' registry, its schemas registered under their subjects.

    Args:
        settings: The registry URL (unset: in-process), the subject strategy, the prefix.
        topics: The topic names; by default those of ``settings.topic_prefix``.

    Raises:
        SchemaRegistryError: The registry could not be reached or refused a schema
            (:class:`~portability.wire.IncompatibleSchemaError`: it breaks compatibility).
    """
    registry: SchemaRegistry
    if settings.schema_registry_url:
        # Imported here: its HTTP client library is slow to import, and embedded mode has none.
        from portability.wire.confluent import ConfluentSchemaRegistry

        registry = ConfluentSchemaRegistry(settings.schema_registry_url.get_secret_value())
    else:
        registry = InProcessSchemaRegistry()
    codec = AvroCodec(
        registry,
        topics=topics if topics is not None else TopicNames.with_prefix(settings.topic_prefix),
        subject_strategy=SubjectStrategy(settings.schema_subject_strategy),
    )
    try:
        await codec.start()
    except BaseException:
        await registry.close()
        raise
    return codec
