"""The whole pipeline in one process: what the demo and the benchmarks run.

A broker (embedded unless ``settings.kafka_bootstrap`` names one), a consent store in
``settings.data_dir``, the outbox relay, the matcher, the delivery worker, a reference
receiving app over real HTTP and a simulated platform, started and stopped in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from portability.broker import EmbeddedBroker
from portability.consent import ConsentService, OutboxRelay, create_store_engine, init_schema
from portability.delivery import DeliveryWorker
from portability.errors import PortabilityError
from portability.matching import Matcher
from portability.receiver import ReceivingApp, run_receiver
from portability.runtime import Runtime
from portability.settings import Settings
from portability.simulation import PlatformPublisher

__all__ = ["DemoError", "LocalPipeline", "local_pipeline"]


class DemoError(PortabilityError):
    """The demo (or a benchmark) could not run to the end, e.g. a pipeline loop died."""


@dataclass(slots=True)
class LocalPipeline:
    """Handles on every running part."""

    runtime: Runtime
    engine: Engine
    service: ConsentService
    relay: OutboxRelay
    matcher: Matcher
    worker: DeliveryWorker
    receiver: ReceivingApp
    receiver_url: str
    publisher: PlatformPublisher
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def check_alive(self) -> None:
        """Fail at once if a pipeline loop died, instead of waiting for a timeout."""
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise DemoError(f"the {task.get_name()} stopped: {task.exception()!r}")


@contextlib.asynccontextmanager
async def local_pipeline(settings: Settings) -> AsyncIterator[LocalPipeline]:
    """Start every part, yield handles on them, and stop them all at the end."""
    async with contextlib.AsyncExitStack() as stack:
        bootstrap = settings.kafka_bootstrap
        if bootstrap is None:
            bootstrap = (await stack.enter_async_context(EmbeddedBroker())).bootstrap
        runtime = await Runtime.open(settings, bootstrap)
        stack.push_async_callback(runtime.close)
        engine = create_store_engine(settings.resolved_database_url())
        stack.callback(engine.dispose)
        init_schema(engine)
        receiver = ReceivingApp()
        pipeline = LocalPipeline(
            runtime=runtime,
            engine=engine,
            service=ConsentService(engine),
            relay=OutboxRelay(engine, runtime),
            matcher=Matcher(runtime),
            worker=DeliveryWorker(runtime),
            receiver=receiver,
            receiver_url=await stack.enter_async_context(run_receiver(receiver)),
            publisher=PlatformPublisher(runtime),
        )
        await _start(pipeline, stack)
        yield pipeline


async def _start(pipeline: LocalPipeline, stack: contextlib.AsyncExitStack) -> None:
    stop_relay = asyncio.Event()
    for component in (pipeline.relay, pipeline.publisher, pipeline.matcher, pipeline.worker):
        await component.start()
        stack.push_async_callback(component.stop)
    tasks = pipeline.tasks = [
        asyncio.create_task(pipeline.relay.run(stop_relay), name="outbox relay"),
        asyncio.create_task(pipeline.matcher.run(), name="matcher"),
        asyncio.create_task(pipeline.worker.run(), name="delivery worker"),
    ]

    async def stop_tasks() -> None:
        stop_relay.set()
        await asyncio.gather(pipeline.matcher.stop(), pipeline.worker.stop())
        await asyncio.wait(tasks, timeout=10)
        for task in tasks:
            task.cancel()

    stack.push_async_callback(stop_tasks)
