"""The long-running roles: the embedded broker, the pipeline's stages (matcher, delivery
worker, outbox relay, transfers, or all of them in one process) and the consent API. Each runs
until SIGINT or SIGTERM; the bodies are in :mod:`portability.ops.commands` and
:mod:`portability.api.server`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from portability.cli import root

__all__ = ["api", "broker", "matcher", "messages", "pipeline", "relay", "transfers", "worker"]


def broker(
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 9092,
) -> None:
    """Run the embedded broker (Tansu) with the pipeline's topics until Ctrl-C.

    It stores in memory, or in an S3 bucket with PORTABILITY_BROKER_STORAGE=s3://BUCKET/ (then
    topics and offsets survive a restart). SIGTERM stops it as Ctrl-C does: the Tansu process
    goes with it.
    """
    from portability.ops.commands import serve_broker

    root.serve(lambda stop: serve_broker(root.state.settings, port, root.console, stop))


def _worker(*roles: str) -> None:
    from portability.ops.commands import serve_worker

    root.serve(lambda stop: serve_worker(root.state.settings, set(roles), stop))


def matcher() -> None:
    """Run a matcher instance (scale out by starting more, up to the partition count)."""
    _worker("matcher")


def worker() -> None:
    """Run a delivery worker instance (scale out by starting more)."""
    _worker("delivery")


def relay() -> None:
    """Run the outbox relay: consent-store changes to the consents and apps topics."""
    _worker("relay")


def transfers() -> None:
    """Run the current-state view and build one-time transfer archives for its users.

    Scale out by starting more (up to the partition count): each instance holds some
    partitions of the view and builds the archives of those partitions' users. Archives go
    to DATA_DIR/archives, which the API process must also see (a shared volume).
    """
    _worker("transfers")


def messages() -> None:
    """Run the message log's writer: delivery.log into the consent store, retention enforced.

    Stores every webhook message and delivery attempt (what apps and operators query) and the
    records each delivered message disclosed, in batches, in the consumer group
    PORTABILITY_MESSAGES_GROUP (scale out by starting more); deletes what is older than
    PORTABILITY_MESSAGE_RETENTION_DAYS / PORTABILITY_DISCLOSURE_RETENTION_DAYS, hourly.
    `portability api` runs one too: this role is for storing apart from the API.
    """
    _worker("messages")


def pipeline() -> None:
    """Run relay, matcher, delivery worker, transfers and the message log in one process."""
    _worker("relay", "matcher", "delivery", "transfers", "messages")


def api() -> None:
    """Serve the consent API (OpenAPI at /docs) on PORTABILITY_API_HOST:PORTABILITY_API_PORT.

    With a broker configured it also runs the outbox relay, the message log's writer, and
    follows delivery.status.
    """
    from portability.api.server import serve_api

    root.serve(lambda stop: serve_api(root.state.settings, stop))
