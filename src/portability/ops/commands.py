"""The bodies of the operator commands: broker, topics, and the long-running roles."""

from __future__ import annotations

import asyncio
import logging

from rich.console import Console
from rich.table import Table

from portability.broker import BrokerError, EmbeddedBroker, ensure_topics
from portability.settings import Settings
from portability.wire.topics import TopicNames, pipeline_topics

__all__ = ["create_topics", "require_bootstrap", "serve_broker", "serve_worker"]

log = logging.getLogger(__name__)


async def serve_broker(
    settings: Settings, port: int, console: Console, stop: asyncio.Event
) -> None:
    """Run the embedded broker with the pipeline's topics until ``stop`` is set.

    The Tansu child is stopped on the way out, whatever ends the command (SIGINT, SIGTERM, or a
    failure to create the topics).
    """
    async with EmbeddedBroker.from_settings(settings, port=port) as broker:
        try:
            names = TopicNames.with_prefix(settings.topic_prefix)
            specs = pipeline_topics(
                names, settings.partitions, feed_retention_days=settings.feed_retention_days
            )
            try:
                await ensure_topics(broker.bootstrap, specs)
            except BrokerError as error:
                if not broker.durable:
                    raise
                # Tansu answers a missing bucket or refused credentials with error -1 only.
                raise BrokerError(
                    f"{error} (the embedded broker stores in {broker.storage}: check that the "
                    "bucket exists and the S3 endpoint and credentials, PORTABILITY_BROKER_S3_* "
                    "or AWS_*)"
                ) from error
            kept = f"stored in {broker.storage}" if broker.durable else "in memory"
            console.print(
                f"embedded broker on [bold]{broker.bootstrap}[/bold] ({kept}; Ctrl-C stops "
                f"it)\nuse it with: export PORTABILITY_KAFKA_BOOTSTRAP={broker.bootstrap}"
            )
            await stop.wait()
        finally:
            stop.set()  # arms the watchdog of the stop (portability.ops.lifecycle)


async def create_topics(settings: Settings) -> Table:
    bootstrap = require_bootstrap(settings)
    specs = pipeline_topics(
        TopicNames.with_prefix(settings.topic_prefix),
        settings.partitions,
        feed_retention_days=settings.feed_retention_days,
    )
    created = set(await ensure_topics(bootstrap, specs, settings.replication_factor))
    table = Table(title=f"topics on {bootstrap}")
    for column in ("topic", "partitions", "cleanup.policy", "retention.ms", "state"):
        table.add_column(column)
    for spec in specs:
        table.add_row(
            spec.name,
            str(spec.partitions),
            spec.cleanup_policy,
            str(spec.retention_ms or "-"),
            "created" if spec.name in created else "exists",
        )
    return table


def require_bootstrap(settings: Settings) -> str:
    """The configured Kafka bootstrap servers; a ConfigurationError saying how to set them."""
    if settings.kafka_bootstrap is None:
        from portability.errors import ConfigurationError

        raise ConfigurationError(
            "no Kafka configured: set PORTABILITY_KAFKA_BOOTSTRAP or pass --bootstrap "
            "(start one with: portability broker)"
        )
    return settings.kafka_bootstrap


async def serve_worker(settings: Settings, roles: set[str], stop: asyncio.Event) -> None:
    """Run the Faust app hosting ``roles`` until ``stop`` is set (SIGINT/SIGTERM) or one fails."""
    from portability.ops.worker_app import Role, serve_roles

    bootstrap = require_bootstrap(settings)
    await serve_roles(settings, bootstrap, {Role(role) for role in roles}, stop)
