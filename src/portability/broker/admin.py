"""Creating the pipeline's topics, on any Kafka-compatible broker."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from portability.broker.errors import BrokerError
from portability.wire.topics import TopicSpec

__all__ = ["ensure_topics"]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


async def ensure_topics(bootstrap: str, specs: list[TopicSpec], replication: int = 1) -> list[str]:
    """Create each topic of ``specs`` that does not exist yet; return the names created.

    An existing topic with a different partition count is an error: co-partitioning and
    per-key order depend on it, so it is reported rather than silently used.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="portability-admin")
    try:
        await admin.start()
    except KafkaError as error:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {error}") from error
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(spec.name, spec.partitions, replication, topic_configs=spec.configs())
                    for spec in missing
                ]
            )
            for name, code, message in _topic_errors(response):
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise BrokerError(f"cannot create topic {name}: error {code}: {message}")
        await _check_partitions(admin, [s for s in specs if s.name in existing])
    finally:
        await admin.close()
    created = [spec.name for spec in missing]
    if created:
        log.info("created topics", extra={"topics": created})
    return created


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    errors = getattr(response, "topic_errors", [])
    return [(str(e[0]), int(e[1]), e[2] if len(e) > 2 else None) for e in errors]


async def _check_partitions(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> None:
    if not specs:
        return
    described = await admin.describe_topics([spec.name for spec in specs])
    counts = {str(topic["topic"]): len(topic["partitions"]) for topic in described}
    for spec in specs:
        actual = counts.get(spec.name)
        if actual is not None and actual != spec.partitions:
            raise BrokerError(
                f"topic {spec.name} has {actual} partitions, the pipeline is configured for "
                f"{spec.partitions}: set PORTABILITY_PARTITIONS={actual} or recreate the topic"
            )
