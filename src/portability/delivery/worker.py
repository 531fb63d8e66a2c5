"""The delivery worker: deltas from ``deliveries`` to each app's webhook, in order per consent.

Each consent has a lane: its deltas wait there in sequence, and one task at a time posts the
lane's head (coalescing what waits, up to ``delivery_max_batch``). Many lanes run at once,
bounded by ``delivery_concurrency``, so a slow endpoint holds back only its own consents.
An offset is committed only once every delta before it is delivered, dropped (revoked
consent) or dead-lettered.

Notifications (``authorization.removed``) come from their own topic, partitioned like the
deliveries, and join the consent's lane: they are posted alone, in their place in the lane,
and are never dropped for a stopped consent, since telling the app it stopped is their point.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError

from portability.delivery.directory import Directory
from portability.delivery.offsets import OffsetTracker
from portability.delivery.payload import notification_event
from portability.delivery.retry_schedule import backoff_seconds
from portability.delivery.sender import Outcome, WebhookSender
from portability.delivery.stats import DeliveryStats
from portability.delivery.status import StatusBoard
from portability.runtime import Runtime
from portability.wire.dead_letters import DeadLetter
from portability.wire.errors import WireFormatError
from portability.wire.notifications import AUTHORIZATION_REMOVED
from portability.wire.records import DeliveryRecord, NotificationRecord
from portability.wire.schemas import SchemaName

__all__ = ["DeliveryWorker"]

log = logging.getLogger(__name__)

_MAX_PENDING = 20_000
_COMMIT_INTERVAL_S = 0.1


@dataclass(slots=True)
class _Item:
    """A delta (``delivery``) or a notification waiting in a lane."""

    tp: TopicPartition
    offset: int
    raw: bytes | None
    delivery: DeliveryRecord | None = None
    notification: NotificationRecord | None = None

    @property
    def app_id(self) -> str:
        event = self.delivery or self.notification
        return event["app_id"] if event is not None else ""


@dataclass(slots=True)
class _Lane:
    consent_id: str
    partition: TopicPartition
    queue: deque[_Item] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    in_flight: int = 0  # leading items of the queue in the request being made


class DeliveryWorker:
    """One worker instance; ``start``, then ``run`` until ``stop``."""

    def __init__(self, runtime: Runtime, client_id: str = "portability-delivery") -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._consumer: AIOKafkaConsumer = runtime.kafka.group_consumer(
            runtime.settings.delivery_group, client_id
        )
        self._producer: AIOKafkaProducer = runtime.kafka.producer(client_id)
        self.directory = Directory(runtime, f"{client_id}-directory")
        self._sender = WebhookSender(runtime.settings)
        self._slots = asyncio.Semaphore(runtime.settings.delivery_concurrency)
        self._lanes: dict[str, _Lane] = {}
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._capacity = asyncio.Event()
        self._stopping = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self.stats = DeliveryStats()
        self.status = StatusBoard(runtime)

    async def start(self) -> None:
        await self._producer.start()
        await self._sender.start()
        await self.directory.start()
        self.directory.on_revocation(self._drop_lane)
        await self._consumer.start()
        topics = self._runtime.topics
        self._consumer.subscribe(
            [topics.deliveries, topics.notifications], listener=_Rebalance(self)
        )
        self._committer = asyncio.create_task(self._commit_loop(), name="delivery-commit")

    async def stop(self) -> None:
        self._stopping.set()
        self._capacity.set()
        await self._cancel_lanes(list(self._lanes.values()))
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        await self._commit()
        await self.status.flush(self._producer)
        await self._consumer.stop()
        await self.directory.stop()
        await self._sender.stop()
        await self._producer.stop()

    @property
    def pending(self) -> int:
        """Deltas received and not yet finished."""
        return sum(len(tracker) for tracker in self._trackers.values())

    async def run(self) -> None:
        """Consume and dispatch until :meth:`stop`."""
        while not self._stopping.is_set():
            if self.pending >= _MAX_PENDING:
                self._capacity.clear()
                await self._capacity.wait()
                continue
            batch = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for record in records:
                    await self._accept(tp, record)

    async def _accept(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        self._trackers.setdefault(tp, OffsetTracker()).add(record.offset)
        if tp.topic == self._runtime.topics.notifications:
            await self._accept_notification(tp, record)
        else:
            await self._accept_delivery(tp, record)

    async def _accept_delivery(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]
    ) -> None:
        try:
            delivery: DeliveryRecord = await self._runtime.codec.decode_fetching(  # type: ignore[assignment]
                SchemaName.DELIVERY, record.value
            )
        except WireFormatError as error:
            await self._dead_letter(tp, record.offset, record.key, record.value, str(error))
            return
        if self.directory.is_stopped(delivery["consent_id"]):
            self.stats.dropped_stopped_consent += 1
            self._trackers[tp].done(record.offset)
            return
        self._enqueue(delivery["consent_id"], _Item(tp, record.offset, record.value, delivery))

    async def _accept_notification(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]
    ) -> None:
        try:
            notification: NotificationRecord = await self._runtime.codec.decode_fetching(  # type: ignore[assignment]
                SchemaName.NOTIFICATION, record.value
            )
        except WireFormatError as error:
            await self._dead_letter(tp, record.offset, record.key, record.value, str(error))
            return
        consent_id = notification["consent_id"]
        self._enqueue(consent_id, _Item(tp, record.offset, record.value, notification=notification))
        if notification["event_type"] == AUTHORIZATION_REMOVED:
            # The removal may reach this worker before the consent's new state does: no
            # delta may follow the event that says the flow stopped.
            self.directory.mark_stopped(consent_id)

    def _enqueue(self, consent_id: str, item: _Item) -> None:
        lane = self._lanes.get(consent_id)
        if lane is None:
            lane = self._lanes[consent_id] = _Lane(consent_id, item.tp)
        lane.queue.append(item)
        if lane.task is None:
            lane.task = asyncio.create_task(self._drive(lane), name=f"lane-{consent_id}")
            lane.task.add_done_callback(_report_crash)

    async def _drive(self, lane: _Lane) -> None:
        """Deliver the lane's deltas in order until it is empty."""
        try:
            while lane.queue and not self._stopping.is_set():
                items = self._next_request(lane)
                lane.in_flight = len(items)
                try:
                    await self._deliver(lane, items)
                finally:
                    lane.in_flight = 0
        finally:
            lane.task = None
            if not lane.queue and self._lanes.get(lane.consent_id) is lane:
                del self._lanes[lane.consent_id]

    def _next_request(self, lane: _Lane) -> list[_Item]:
        """The lane's head: a notification alone, or the deltas before the next notification."""
        if lane.queue[0].notification is not None:
            return [lane.queue[0]]
        items: list[_Item] = []
        for item in lane.queue:
            if item.delivery is None or len(items) >= self._settings.delivery_max_batch:
                break
            items.append(item)
        return items

    async def _deliver(self, lane: _Lane, items: list[_Item]) -> None:
        attempt = 0
        while not self._stopping.is_set():
            is_delta = items[0].delivery is not None
            if is_delta and self.directory.is_stopped(lane.consent_id):
                self._finish(lane, items, dropped=True)
                return
            outcome = await self._attempt(items)
            if outcome.ok:
                self._finish(lane, items)
                return
            attempt += 1
            self._log_failure(lane, items, outcome, attempt)
            if not outcome.retriable or attempt >= self._settings.delivery_max_attempts:
                reason = (
                    f"{outcome.reason} after {attempt} attempt(s): {outcome.body_excerpt[:200]}"
                )
                for item in items:
                    await self._dead_letter(
                        item.tp, item.offset, lane.consent_id.encode(), item.raw, reason
                    )
                self._finish(lane, items, finished_elsewhere=True)
                return
            self.stats.retries += 1
            await self._sleep(
                backoff_seconds(
                    attempt,
                    self._settings.delivery_retry_base_s,
                    self._settings.delivery_retry_max_s,
                    outcome.retry_after_s,
                )
            )

    async def _attempt(self, items: list[_Item]) -> Outcome:
        app_id = items[0].app_id
        app = self.directory.app(app_id)
        notification = items[0].notification
        if app is None or (notification is None and not app["enabled"]):
            # A disabled app is still told that its consents ended (reason app_disabled).
            return Outcome(False, None, f"app {app_id} unknown or disabled", True)
        async with self._slots:
            self.stats.requests += 1
            if notification is not None:
                msg_id, body = notification_event(notification)
                return await self._sender.post_event(app, msg_id, body)
            return await self._sender.post(app, [item.delivery for item in items if item.delivery])

    def _finish(
        self,
        lane: _Lane,
        items: list[_Item],
        *,
        dropped: bool = False,
        finished_elsewhere: bool = False,
    ) -> None:
        for item in items:
            if lane.queue and lane.queue[0] is item:
                lane.queue.popleft()
            if not finished_elsewhere:
                self._trackers.get(item.tp, OffsetTracker()).done(item.offset)
        last = items[-1].delivery
        if dropped:
            self.stats.dropped_stopped_consent += len(items)
        elif finished_elsewhere:
            pass
        elif last is None:
            self.stats.notifications_delivered += len(items)
        else:
            self.stats.deltas_delivered += len(items)
            self.stats.last_sequence[lane.consent_id] = last["sequence"]
            self.status.delivered(lane.consent_id, last["app_id"], last["sequence"])
        self._wake_reader()

    def _log_failure(self, lane: _Lane, items: list[_Item], outcome: Outcome, attempt: int) -> None:
        self.stats.failures += 1
        app_id = items[0].app_id
        self.status.failed(lane.consent_id, app_id, outcome)
        app = self.directory.app(app_id)
        first, last = items[0], items[-1]
        what = (
            f"sequences {first.delivery['sequence']}-{last.delivery['sequence']}"
            if first.delivery is not None and last.delivery is not None
            else f"event {first.notification['event_id'] if first.notification else '?'}"
        )
        log.warning(
            "delivery failed: consent %s app %s endpoint %s %s attempt %d: %s",
            lane.consent_id,
            app_id,
            app["webhook_url"] if app else "?",
            what,
            attempt,
            outcome.reason,
        )

    async def _dead_letter(
        self, tp: TopicPartition, offset: int, key: bytes | None, value: bytes | None, reason: str
    ) -> None:
        letter = DeadLetter(
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            key=key,
            value=value,
            reason=reason,
            stage="delivery",
        )
        await self._producer.send_and_wait(
            self._runtime.topics.dead_letters, value, key=key, headers=letter.headers()
        )
        self.stats.dead_lettered += 1
        self._trackers.get(tp, OffsetTracker()).done(offset)
        log.error("dead-lettered %s[%d]@%d: %s", tp.topic, tp.partition, offset, reason)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _drop_lane(self, consent_id: str) -> None:
        """A consent was revoked or expired: what waits in its lane is not delivered."""
        lane = self._lanes.get(consent_id)
        if lane is None:
            return
        # The request on the wire finishes (or is dropped) in _deliver. Notifications stay:
        # the app must still hear that the consent ended.
        kept = [lane.queue.popleft() for _ in range(min(lane.in_flight, len(lane.queue)))]
        for item in lane.queue:
            if item.notification is not None:
                kept.append(item)
            else:
                self._trackers.get(item.tp, OffsetTracker()).done(item.offset)
                self.stats.dropped_stopped_consent += 1
        lane.queue = deque(kept)
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self.pending < _MAX_PENDING:
            self._capacity.set()

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(_COMMIT_INTERVAL_S)
            await self._commit()
            await self.status.flush(self._producer)

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        offsets = {}
        for tp, tracker in self._trackers.items():
            if only is not None and tp not in only:
                continue
            committable = tracker.take_committable()
            if committable is not None:
                offsets[tp] = committable
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            log.warning("delivery commit skipped after a rebalance: %s", error)

    async def _cancel_lanes(self, lanes: list[_Lane]) -> None:
        tasks = [lane.task for lane in lanes if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Stop the lanes of revoked partitions; their new owner delivers what was not done."""
        lanes = [lane for lane in self._lanes.values() if lane.partition in revoked]
        await self._cancel_lanes(lanes)
        await self._commit(revoked)
        for lane in lanes:
            self._lanes.pop(lane.consent_id, None)
        for tp in revoked:
            self._trackers.pop(tp, None)
        self._wake_reader()


def _report_crash(task: asyncio.Task[None]) -> None:
    """A lane that dies of a bug must not die silently: its offsets would never commit."""
    if not task.cancelled() and task.exception() is not None:
        log.error("delivery lane %s crashed", task.get_name(), exc_info=task.exception())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: DeliveryWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None
