"""The whole pipeline in one process: what the demo and the benchmarks run.

A broker (embedded unless ``settings.kafka_bootstrap`` names one), a consent store in
``settings.data_dir``, the outbox relay, the matcher, the delivery worker, the current-state
view (every partition, outside any group) with its transfer builder (snapshots of ongoing
consents), the message log's writer (every attempt into the store), a reference receiving
app over real HTTP and a simulated platform, started and stopped in order.
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
from portability.demo.errors import DemoError
from portability.matching import Matcher
from portability.messages.writer import MessageLogWriter
from portability.receiver import ReceivingApp, run_receiver
from portability.runtime import Runtime
from portability.sealing import SecretsKeys
from portability.settings import Settings
from portability.simulation import PlatformPublisher
from portability.transfers.builder import TransferBuilder
from portability.transfers.state import StateView

__all__ = ["LocalPipeline", "local_pipeline"]

_BUILDER_POLL_S = 0.1
_STOP_TIMEOUT_S = 10.0


@dataclass(slots=True)
class LocalPipeline:
    """Handles on every running part."""

    runtime: Runtime
    engine: Engine
    service: ConsentService
    relay: OutboxRelay
    matcher: Matcher
    worker: DeliveryWorker
    messages: MessageLogWriter
    receiver: ReceivingApp
    receiver_url: str
    publisher: PlatformPublisher
    # The transfers role, when asked for: it decodes every change, so it costs latency.
    state_view: StateView | None = None
    builder: TransferBuilder | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def check_alive(self) -> None:
        """Fail at once if a pipeline loop died, instead of waiting for a timeout."""
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise DemoError(f"the {task.get_name()} stopped: {task.exception()!r}")


@contextlib.asynccontextmanager
async def local_pipeline(
    settings: Settings, *, transfers: bool = True
) -> AsyncIterator[LocalPipeline]:
    """Start every part, yield handles on them, and stop them all at the end."""
    async with contextlib.AsyncExitStack() as stack:
        bootstrap = settings.kafka_bootstrap
        if bootstrap is None:
            embedded = EmbeddedBroker.from_settings(settings)
            bootstrap = (await stack.enter_async_context(embedded)).bootstrap
        runtime = await Runtime.open(settings, bootstrap)
        stack.push_async_callback(runtime.close)
        engine = create_store_engine(settings.resolved_database_url())
        stack.callback(engine.dispose)
        init_schema(engine)
        receiver = ReceivingApp()
        # One view holds every partition (static assignment): it alone builds the snapshots.
        state_view = (
            StateView(
                runtime, "portability-demo-state", partitions=list(range(settings.partitions))
            )
            if transfers
            else None
        )
        pipeline = LocalPipeline(
            runtime=runtime,
            engine=engine,
            service=ConsentService(engine, secrets=SecretsKeys.from_settings(settings)),
            relay=OutboxRelay(engine, runtime),
            matcher=Matcher(runtime),
            worker=DeliveryWorker(runtime),
            messages=MessageLogWriter(runtime, engine, client_id="portability-demo-messages"),
            state_view=state_view,
            builder=None if state_view is None else TransferBuilder(runtime, engine, state_view),
            receiver=receiver,
            receiver_url=await stack.enter_async_context(run_receiver(receiver)),
            publisher=PlatformPublisher(runtime),
        )
        await _start(pipeline, stack)
        yield pipeline


async def _start(pipeline: LocalPipeline, stack: contextlib.AsyncExitStack) -> None:
    stop_relay = asyncio.Event()
    stop_builder = asyncio.Event()
    view = pipeline.state_view
    parts = (pipeline.relay, pipeline.publisher, pipeline.matcher, pipeline.worker)
    for component in (*parts, pipeline.messages):
        await component.start()
        stack.push_async_callback(component.stop)
    tasks = pipeline.tasks = [
        asyncio.create_task(pipeline.relay.run(stop_relay), name="outbox relay"),
        asyncio.create_task(pipeline.matcher.run(), name="matcher"),
        asyncio.create_task(pipeline.worker.run(), name="delivery worker"),
        asyncio.create_task(pipeline.messages.run(stop_relay), name="message log writer"),
    ]
    builder: list[asyncio.Task[None]] = []
    if view is not None and pipeline.builder is not None:
        await view.start()
        stack.push_async_callback(view.stop)
        builder.append(
            asyncio.create_task(
                pipeline.builder.run(stop_builder, poll_interval_s=_BUILDER_POLL_S),
                name="transfer builder",
            )
        )
        tasks += [asyncio.create_task(view.run(), name="current-state view"), *builder]

    async def stop_tasks() -> None:
        stop_relay.set()
        stop_builder.set()
        # The builder first: it reads the view, which must still be running meanwhile.
        if builder:
            await asyncio.wait(builder, timeout=_STOP_TIMEOUT_S)
        stops = [pipeline.matcher.stop(), pipeline.worker.stop()]
        if view is not None:
            stops.append(view.stop())
        await asyncio.gather(*stops)
        await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_S)
        for task in tasks:
            task.cancel()

    stack.push_async_callback(stop_tasks)
