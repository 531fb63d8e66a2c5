"""The whole pipeline in one process for end-to-end tests, wired as the demo runner wires it.

A real broker, a SQLite consent store with its outbox relay, the matcher, the delivery worker,
a reference receiving app over real HTTP, and a simulated platform. Every wait is a bounded
condition loop that also fails at once if a pipeline loop died.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from sqlalchemy.engine import Engine

from portability.consent import (
    ConsentService,
    ConsentView,
    OutboxRelay,
    create_store_engine,
    init_schema,
)
from portability.delivery import DeliveryWorker
from portability.matching import Matcher
from portability.receiver import ReceivingApp, run_receiver
from portability.runtime import Runtime
from portability.sealing import SecretsKeys
from portability.settings import Settings
from portability.simulation import ChangeFactory, PlatformPublisher
from portability.webhooks.parsing import Delta
from portability.wire.records import AccountChange
from waiting import wait_until

__all__ = ["APP_A", "APP_B", "FAST_GROUPS", "Pipeline", "pipeline_settings", "running_pipeline"]

APP_A = "app-a"
APP_B = "app-b"
STOP_TIMEOUT_S = 10.0

# Tansu holds a new group's first join for half the session timeout (whole seconds, at least
# one), a later member's about a second more, and hands a dead member's partitions over about
# a second after its session expired. The production default (10 s) would make every join in
# a test wait 5 s and every takeover 15 s; 2 s makes them 1 s and 3 s (the rebalance timeout
# changes none of it, so it stays as it is). Heartbeats every 300 ms keep a member well inside
# its session on a loaded machine.
FAST_GROUPS: dict[str, Any] = {
    "kafka_session_timeout_ms": 2000,
    "kafka_heartbeat_interval_ms": 300,
}


def pipeline_settings(data_dir: Path) -> Settings:
    """Unique topics and groups, fast retries and group joins, SQLite in ``data_dir`` (the
    ``settings`` fixture)."""
    unique = uuid.uuid4().hex[:10]
    return Settings(
        data_dir=data_dir,
        topic_prefix=f"t{unique}.",
        partitions=3,
        matcher_group=f"matcher-{unique}",
        delivery_group=f"delivery-{unique}",
        state_group=f"state-{unique}",
        messages_group=f"messages-{unique}",
        delivery_retry_schedule_s=[0, 0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5],
        web_port=0,
        **FAST_GROUPS,
    )


class PipelineError(AssertionError):
    """A pipeline loop died, or a condition was not reached in time."""


@dataclass(slots=True)
class Pipeline:
    """Handles on every running part, and helpers to drive and observe them."""

    runtime: Runtime
    engine: Engine
    service: ConsentService
    relay: OutboxRelay
    matcher: Matcher
    worker: DeliveryWorker
    receiver: ReceivingApp
    base_url: str
    publisher: PlatformPublisher
    factory: ChangeFactory
    secrets: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    active_consents: set[str] = field(default_factory=set)

    # -- health and waiting -------------------------------------------------------------------

    def check_alive(self) -> None:
        """Fail at once if a loop ended, instead of waiting for a timeout."""
        for name, task in self.tasks.items():
            if task.done():
                error = None if task.cancelled() else task.exception()
                raise PipelineError(f"the {name} stopped early: {error!r}")

    async def wait_until(
        self, predicate: Callable[[], bool], what: str, timeout_s: float = 20.0
    ) -> None:
        def alive_and_done() -> bool:
            self.check_alive()  # a dead loop fails at once, not at the timeout
            return predicate()

        await wait_until(alive_and_done, what, timeout_s)

    async def wait_matcher_ready(self, timeout_s: float = 30.0) -> None:
        """The matcher holds its partitions with exactly the consents active now."""
        want = len(self.active_consents)
        await self.wait_until(
            lambda: self.matcher.ready and self.matcher.consents_held == want,
            f"matcher ready with {want} consents "
            f"(ready={self.matcher.ready}, held={self.matcher.consents_held})",
            timeout_s,
        )

    async def wait_for_changes(
        self, consent_id: str, change_ids: Iterable[str], timeout_s: float = 20.0
    ) -> None:
        """Until every change in ``change_ids`` arrived at the receiver for ``consent_id``."""
        wanted = set(change_ids)
        await self.wait_until(
            lambda: wanted <= {d.change_id for d in self.receiver.deltas(consent_id)},
            f"{len(wanted)} changes of consent {consent_id} received",
            timeout_s,
        )

    async def wait_idle(self, timeout_s: float = 20.0) -> None:
        """Until the worker has nothing in hand (delivered, dropped or dead-lettered)."""
        await self.wait_until(lambda: self.worker.pending == 0, "delivery worker idle", timeout_s)

    # -- driving ------------------------------------------------------------------------------

    async def grant(self, user_id: str, app_id: str, categories: list[str]) -> ConsentView:
        view = await asyncio.to_thread(self.service.grant, user_id, app_id, categories)
        self.active_consents.add(view.consent_id)
        return view

    async def revoke(self, consent_id: str) -> ConsentView:
        view = await asyncio.to_thread(self.service.revoke, consent_id)
        self.active_consents.discard(consent_id)
        return view

    def changes(self, user_id: str, *categories: Any) -> list[AccountChange]:
        return [self.factory.random_change(user_id, category) for category in categories]

    async def publish(self, changes: list[AccountChange]) -> None:
        assert await self.publisher.publish(changes) == len(changes)

    async def restart_matcher(self) -> Matcher:
        """Stop the matcher, then start a new one in the same group; returns the old one."""
        old, task = self.matcher, self.tasks.pop("matcher")
        await old.stop()
        await asyncio.wait_for(task, STOP_TIMEOUT_S)
        self.matcher = Matcher(self.runtime)
        await self.matcher.start()
        self.tasks["matcher"] = asyncio.create_task(self.matcher.run(), name="matcher")
        return old

    async def restart_worker(self) -> DeliveryWorker:
        """Stop the delivery worker, then start a new one in the same group; returns the old."""
        old, task = self.worker, self.tasks.pop("worker")
        await old.stop()
        await asyncio.wait_for(task, STOP_TIMEOUT_S)
        self.worker = DeliveryWorker(self.runtime)
        await self.worker.start()
        self.tasks["worker"] = asyncio.create_task(self.worker.run(), name="delivery worker")
        return old

    # -- observing ----------------------------------------------------------------------------

    def all_deltas(self) -> list[tuple[str, Delta]]:
        """Every unique delta the receiver accepted, with its consent."""
        return [(c, d) for c in self.receiver.consent_ids() for d in self.receiver.deltas(c)]

    async def read_topic(
        self, topic: str, at_least: int, timeout_s: float = 15.0
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record of ``topic`` up to its end, once there are at least ``at_least``."""
        reader = self.runtime.kafka.reader(f"test-reader-{uuid.uuid4().hex[:6]}")
        await reader.start()
        try:
            partitions = [
                TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())
            ]
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)
            records: list[ConsumerRecord[bytes, bytes]] = []
            deadline = time.monotonic() + timeout_s
            while True:
                batch = await reader.getmany(timeout_ms=100)
                for part in batch.values():
                    records.extend(part)
                if len(records) >= at_least:
                    ends = await reader.end_offsets(partitions)
                    positions = [await reader.position(tp) for tp in partitions]
                    if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                        return records
                if time.monotonic() > deadline:
                    raise PipelineError(f"{topic}: {len(records)} of {at_least} records read")
        finally:
            await reader.stop()


@contextlib.asynccontextmanager
async def running_pipeline(settings: Settings, bootstrap: str) -> AsyncIterator[Pipeline]:
    """Start everything, register two apps, and stop it all cleanly at the end."""
    async with contextlib.AsyncExitStack() as stack:
        runtime = await Runtime.open(settings, bootstrap)
        stack.push_async_callback(runtime.close)
        engine = create_store_engine(settings.resolved_database_url())
        stack.callback(engine.dispose)
        init_schema(engine)
        receiver = ReceivingApp()
        base_url = await stack.enter_async_context(run_receiver(receiver))
        pipeline = Pipeline(
            runtime=runtime,
            engine=engine,
            # The settings' keys, as the worker's: it opens what the service seals.
            service=ConsentService(engine, secrets=SecretsKeys.from_settings(settings)),
            relay=OutboxRelay(engine, runtime),
            matcher=Matcher(runtime),
            worker=DeliveryWorker(runtime),
            receiver=receiver,
            base_url=base_url,
            publisher=PlatformPublisher(runtime),
            factory=ChangeFactory(["nobody"], seed=11),
        )
        await _start(pipeline, stack)
        for app_id in (APP_A, APP_B):
            app = await asyncio.to_thread(
                pipeline.service.register_app,
                f"Test app {app_id}",
                f"{base_url}/webhooks/{app_id}",
                app_id,
            )
            receiver.add_app(app_id, app.signing_secret)
            pipeline.secrets[app_id] = app.signing_secret
        yield pipeline


async def _start(pipeline: Pipeline, stack: contextlib.AsyncExitStack) -> None:
    """As the demo runner starts and stops them, each component stopped exactly once."""
    stop_relay = asyncio.Event()
    await pipeline.relay.start()
    stack.push_async_callback(pipeline.relay.stop)
    await pipeline.publisher.start()
    stack.push_async_callback(pipeline.publisher.stop)
    await pipeline.matcher.start()
    try:
        await pipeline.worker.start()
    except BaseException:
        await pipeline.matcher.stop()
        raise
    pipeline.tasks.update(
        relay=asyncio.create_task(pipeline.relay.run(stop_relay), name="outbox relay"),
        matcher=asyncio.create_task(pipeline.matcher.run(), name="matcher"),
        worker=asyncio.create_task(pipeline.worker.run(), name="delivery worker"),
    )

    async def stop_loops() -> None:
        # The matcher may have been replaced by a restart: stop whichever one runs now.
        stop_relay.set()
        stops = asyncio.gather(pipeline.matcher.stop(), pipeline.worker.stop())
        try:
            await asyncio.wait_for(stops, STOP_TIMEOUT_S)
        except TimeoutError:
            stop_hung = True
        else:
            stop_hung = False
        tasks = list(pipeline.tasks.values())
        _, still_running = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        for task in still_running:
            task.cancel()
        failed = {
            name: task.exception()
            for name, task in pipeline.tasks.items()
            if task.done() and not task.cancelled() and task.exception() is not None
        }
        if stop_hung or still_running or failed:
            raise PipelineError(
                f"unclean stop: stop() hung={stop_hung}, {len(still_running)} loop(s) hung, "
                f"failures {failed!r}"
            )

    stack.push_async_callback(stop_loops)
