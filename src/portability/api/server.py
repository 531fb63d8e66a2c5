"""``portability api``: the API under uvicorn, with its background tasks.

Besides serving requests, the process expires due consents and ends secret-rotation overlaps
every ``api_sweep_interval_s``; with Kafka configured it also runs the outbox relay and
follows the delivery.status topic for the status route.
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
from portability.consent import ConsentService, OutboxRelay, create_store_engine, init_schema
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
    background: list[Coroutine[Any, Any, None]] = [sweep(ConsentService(engine), settings, stop)]
    runtime: Runtime | None = None
    relay: OutboxRelay | None = None
    replayer: Replayer | None = None
    try:
        if settings.kafka_bootstrap:
            runtime = await Runtime.open(settings, settings.kafka_bootstrap)
            relay = OutboxRelay(engine, runtime)
            await relay.start()
            background += [relay.run(stop), follow_delivery_status(runtime, board, stop)]
        else:
            _log.info("no PORTABILITY_KAFKA_BOOTSTRAP: no relay or replay, status unknown")
        # Started with or without Kafka: it also fails replays a previous process left running.
        replayer = Replayer(settings, engine, runtime)
        await replayer.start()
        tasks = [asyncio.create_task(coroutine) for coroutine in background]
        config = uvicorn.Config(
            create_app(settings, engine, status_board=board, replayer=replayer),
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


async def sweep(service: ConsentService, settings: Settings, stop: asyncio.Event) -> None:
    """Expire due consents and end finished secret overlaps until ``stop`` is set."""
    while not stop.is_set():
        try:
            expired = await asyncio.to_thread(service.expire_due)
            ended = await asyncio.to_thread(service.end_secret_overlaps)
        except SQLAlchemyError as error:
            _log.warning("api sweep failed (retried): %s", error)
        else:
            if expired or ended:
                _log.info("expired %d consents, ended %d secret overlaps", len(expired), len(ended))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.api_sweep_interval_s)
