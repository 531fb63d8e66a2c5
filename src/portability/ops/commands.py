"""The bodies of the operator commands: broker, topics, and the long-running roles."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from rich.console import Console
from rich.table import Table

from portability.broker import EmbeddedBroker, ensure_topics
from portability.settings import Settings
from portability.wire.topics import TopicNames, pipeline_topics

__all__ = ["create_topics", "run_worker", "serve_broker"]

log = logging.getLogger(__name__)


async def serve_broker(settings: Settings, port: int, console: Console) -> None:
    """Run the embedded broker with the pipeline's topics until interrupted."""
    async with EmbeddedBroker(port=port) as broker:
        names = TopicNames.with_prefix(settings.topic_prefix)
        await ensure_topics(broker.bootstrap, pipeline_topics(names, settings.partitions))
        console.print(
            f"embedded broker on [bold]{broker.bootstrap}[/bold] (in memory; Ctrl-C stops it)\n"
            f"use it with: export PORTABILITY_KAFKA_BOOTSTRAP={broker.bootstrap}"
        )
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()


async def create_topics(settings: Settings) -> Table:
    bootstrap = _require_bootstrap(settings)
    specs = pipeline_topics(TopicNames.with_prefix(settings.topic_prefix), settings.partitions)
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


def _require_bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap is None:
        from portability.errors import ConfigurationError

        raise ConfigurationError(
            "no Kafka configured: set PORTABILITY_KAFKA_BOOTSTRAP or pass --bootstrap "
            "(start one with: portability broker)"
        )
    return settings.kafka_bootstrap


def run_worker(settings: Settings, roles: set[str]) -> None:
    """Run the Faust worker hosting ``roles`` until it is stopped (SIGINT/SIGTERM)."""
    from faust.worker import Worker

    from portability.ops.worker_app import Role, build_app

    bootstrap = _require_bootstrap(settings)
    app = build_app(settings, bootstrap, {Role(role) for role in roles})
    Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
