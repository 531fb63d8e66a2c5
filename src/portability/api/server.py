"""``portability api``: the API under uvicorn, with its background tasks.

Besides serving requests, the process expires due consents and ends secret-rotation overlaps
every ``api_sweep_interval_s``; with Kafka configured it also runs the outbox relay and the
message log's writer, follows the delivery.status topic for the status route, samples
consumer lag and counts dead letters for the operator status page and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator
from typing import Any

import uvicorn
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from portability.api.app import create_app
from portability.api.delivery_status import DeliveryStatusBoard, follow_delivery_status
from portability.api.operator_status import OperatorStatus
from portability.consent import ConsentService, OutboxRelay, create_store_engine, init_schema
from portability.consent.resealing import seal_clear_secrets
from portability.consent.transfer_requests import TransferStore, delete_archive
from portability.delivery.replay import Replayer
from portability.messages.actions import MessageActions
from portability.messages.feed_reader import FeedReader
from portability.messages.writer import MessageLogWriter
from portability.ops.lifecycle import listening_socket
from portability.runtime import Runtime
from portability.sealing import SecretsKeys
from portability.settings import Settings

__all__ = ["serve_api", "sweep"]

_log = logging.getLogger(__name__)
_API_ADDRESS = ("PORTABILITY_API_HOST", "PORTABILITY_API_PORT")


async def serve_api(settings: Settings, stop: asyncio.Event) -> None:
    """Serve the API on ``settings.api_host:api_port`` until ``stop`` is set.

    The port is bound first: a taken one stops the command (StartupError) before it opens the
    store or Kafka. The command owns SIGINT and SIGTERM (:mod:`portability.ops.lifecycle`).
    """
    listener = listening_socket(settings.api_host, settings.api_port, "the API", _API_ADDRESS)
    engine = create_store_engine(settings.resolved_database_url())
    await asyncio.to_thread(init_schema, engine)
    # A store from before sealing keeps secrets in the clear: sealed (and republished) now.
    await asyncio.to_thread(seal_clear_secrets, engine, SecretsKeys.from_settings(settings))
    board = DeliveryStatusBoard()
    transfers = TransferStore(engine, expiry_s=settings.transfer_expiry_s)
    # Each loop is made where it starts at once as a task: one made before a failed start
    # would never be awaited.
    background: list[Coroutine[Any, Any, None]] = []
    runtime: Runtime | None = None
    relay: OutboxRelay | None = None
    replayer: Replayer | None = None
    messages: MessageActions | None = None
    writer: MessageLogWriter | None = None
    operator_status = OperatorStatus(settings, engine, board)
    try:
        if settings.kafka_bootstrap:
            runtime = await Runtime.open(settings, settings.kafka_bootstrap)
            relay = OutboxRelay(engine, runtime)
            await relay.start()
            # The message log's writer: the embedded mode stores the log with nothing more to
            # run (a separate `portability messages` joins the same group).
            writer = await _started_writer(runtime, engine)
            background += [
                relay.run(stop),
                follow_delivery_status(runtime, board, stop),
                writer.run(stop),
            ]
            background += operator_status.follow_kafka(settings.kafka_bootstrap, stop)
        else:
            _log.info("no PORTABILITY_KAFKA_BOOTSTRAP: no relay or replay, status unknown")
        # Started with or without Kafka: it also fails replays a previous process left running.
        replayer = Replayer(settings, engine, runtime)
        await replayer.start()
        # Resends and test events (they need Kafka; without it they are answered 503).
        messages = MessageActions(settings, engine, runtime)
        await messages.start()
        background.append(sweep(ConsentService(engine), settings, stop, transfers))
        tasks = [asyncio.create_task(coroutine) for coroutine in background]
        background.clear()  # the tasks own them now
        config = uvicorn.Config(
            create_app(
                settings,
                engine,
                status_board=board,
                replayer=replayer,
                operator_status=operator_status,
                message_actions=messages,
                # Poll-mode apps' feeds (503 without Kafka); stopped with the server.
                feed_reader=(feed := FeedReader(runtime)),
            ),
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
            # The per-client rate limit keys on the address these proxies forward.
            forwarded_allow_ips=settings.api_forwarded_allow_ips,
        )
        server = _Server(config)
        tasks.append(asyncio.create_task(_exit_when_set(stop, server)))
        _log.info("consent API on http://%s:%d", settings.api_host, listener.getsockname()[1])
        try:
            await server.serve(sockets=[listener])
        finally:
            stop.set()
            await asyncio.gather(*tasks, feed.stop(), return_exceptions=True)
    finally:
        stop.set()  # arms the watchdog of the stop (portability.ops.lifecycle)
        listener.close()
        for unstarted in background:
            unstarted.close()  # made but never a task (a failed start): nothing to warn about
        await _stop(replayer, messages, relay, writer)
        if runtime is not None:
            await runtime.close()
        engine.dispose()


async def _started_writer(runtime: Runtime, engine: Engine) -> MessageLogWriter:
    writer = MessageLogWriter(runtime, engine)
    await writer.start()
    return writer


async def _stop(
    *parts: Replayer | MessageActions | OutboxRelay | MessageLogWriter | None,
) -> None:
    """Stop the parts that were made, in the order given (those using Kafka before it)."""
    for part in parts:
        if part is not None:
            await part.stop()


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: ``stop`` ends it (see :func:`serve_api`).

    Its own would also re-raise the signal after its shutdown, which ends the process (SIGTERM)
    before the relay and the Kafka clients are stopped.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _exit_when_set(stop: asyncio.Event, server: uvicorn.Server) -> None:
    await stop.wait()
    server.should_exit = True


async def sweep(
    service: ConsentService,
    settings: Settings,
    stop: asyncio.Event,
    transfers: TransferStore | None = None,
) -> None:
    """Expire due consents and transfers, end secret overlaps, until ``stop`` is set.

    An expired transfer's archive file is deleted: the data is not kept past its download
    window.
    """
    while not stop.is_set():
        try:
            expired = await asyncio.to_thread(service.expire_due)
            ended = await asyncio.to_thread(service.end_secret_overlaps)
            gone = await asyncio.to_thread(transfers.expire_due) if transfers else []
        except SQLAlchemyError as error:
            _log.warning("api sweep failed (retried): %s", error)
        else:
            for transfer in gone:
                delete_archive(settings, transfer)
            if expired or ended or gone:
                _log.info(
                    "expired %d consents and %d transfers, ended %d secret overlaps",
                    len(expired),
                    len(gone),
                    len(ended),
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.api_sweep_interval_s)
