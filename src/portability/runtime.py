"""What every pipeline process shares: settings, topic names, Kafka clients, the codec."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Final

from portability.broker.admin import ensure_topics
from portability.broker.clients import KafkaClients
from portability.settings import Settings
from portability.wire.codec import AvroCodec
from portability.wire.registry import InProcessSchemaRegistry, SchemaRegistry
from portability.wire.subjects import SubjectStrategy
from portability.wire.topics import TopicNames, pipeline_topics

__all__ = ["Runtime", "open_codec", "settle_collector"]

# Objects allocated (net) between young collections: CPython's default of 700 makes a worker
# delivering tens of thousands of deltas a second collect every few requests. Measured on the
# delivery benchmark (one worker, 50,000 deltas), alternating runs: 39-44 us of CPU per delta
# with the default, 35-39 with the collector off, 36-37 with this.
_YOUNG_THRESHOLD: Final = 50_000


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


def settle_collector() -> None:
    """Tune the garbage collector for a long-running pipeline process, once it has started.

    What start-up built (modules, schemas, settings: some hundred thousand objects that live
    as long as the process) is frozen out of the collector's sight, so its full collections
    scan only what the process made since; and young collections run every
    ``_YOUNG_THRESHOLD`` allocations instead of 700. The delivery loop allocates a few dozen
    short-lived objects per delta that reference counting frees at once: a young collection
    finds almost nothing to free, and it is its scanning that costs.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(_YOUNG_THRESHOLD, older, oldest)
