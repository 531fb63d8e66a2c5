"""``portability api``: the API under uvicorn, with its background tasks.

Besides serving requests, the process expires due consents and ends secret-rotation overlaps
every ``api_sweep_interval_s``; with Kafka configured it also runs the outbox relay, follows
the delivery.status topic for the status route, samples consumer lag and counts dead letters
for the operator status page and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from portability.api.app import create_app
from portability.api.delivery_status import DeliveryStatusBoard, follow_delivery_status
from portability.api.operator_status import OperatorStatus
from portability.consent import ConsentService, OutboxRelay, create_store_engine, init_schema
from portability.consent.transfers import TransferStore, delete_archive
from portability.delivery.replay import Replayer
from portability.runtime import Runtime
from portability.settings import Settings

__all__ = ["serve_api", "sweep"]

_log = logging.getLogger(__name__)


async def serve_api(settings: Settings) -> None:
    """Serve the API on ``settings.api_host:api_port`` until interrupted."""
    engine = create_store_engine(settings.resolved_database_url())
    await asyncio.to_thread(init_schema, engine)
    board = DeliveryStatusBoard()
    stop = asyncio.Event()
    transfers = TransferStore(engine, expiry_s=settings.transfer_expiry_s)
    background: list[Coroutine[Any, Any, None]] = [
        sweep(ConsentService(engine), settings, stop, transfers)
    ]
    runtime: Runtime | None = None
    relay: OutboxRelay | None = None
    replayer: Replayer | None = None
    operator_status = OperatorStatus(settings, engine, board)
    try:
        if settings.kafka_bootstrap:
            runtime = await Runtime.open(settings, settings.kafka_bootstrap)
            relay = OutboxRelay(engine, runtime)
            await relay.start()
            background += [relay.run(stop), follow_delivery_status(runtime, board, stop)]
            background += operator_status.follow_kafka(settings.kafka_bootstrap, stop)
        else:
            _log.info("no PORTABILITY_KAFKA_BOOTSTRAP: no relay or replay, status unknown")
        # Started with or without Kafka: it also fails replays a previous process left running.
        replayer = Replayer(settings, engine, runtime)
        await replayer.start()
        tasks = [asyncio.create_task(coroutine) for coroutine in background]
        config = uvicorn.Config(
            create_app(
                settings,
                engine,
                status_board=board,
                replayer=replayer,
                operator_status=operator_status,
            ),
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
        )
        try:
            await uvicorn.Server(config).serve()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if replayer is not None:
            await replayer.stop()
        if relay is not None:
            await relay.stop()
        if runtime is not None:
            await runtime.close()
        engine.dispose()


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
