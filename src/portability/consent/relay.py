"""The outbox relay: publishes committed consent and app changes to Kafka, in commit order.

It runs apart from the changes: they write outbox rows in their own transactions
(:mod:`portability.consent.outbox_rows`); the relay only reads committed rows, sends them and
marks them published.

Delivery is at-least-once. A row is marked published only after Kafka acknowledged it, so a
crash between the acknowledgement and the mark publishes the row again after a restart.
That is safe: every record carries its ``version`` (the outbox id) and consumers ignore a
version older than one they applied. Rows are re-sent from the first unacknowledged one
onwards, in id order, so the last record of a key on the compacted topic is always its
latest state.

Any number of relays may run against one database: exactly one publishes at a time, the one
holding the store's publishing lock (:mod:`portability.consent.locks`); the others stand by
and one of them takes over within ``takeover_interval_s`` when the holder stops or dies. The
holder checks that it still holds the lock before it sends each batch, so two relays never
interleave their sends. A holder killed between Kafka's acknowledgement and the mark leaves
those rows for its successor to send again, as a restart would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import weakref
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from portability.consent._time import utc_now
from portability.consent.errors import ConsentError, RelayError
from portability.consent.locks import PublishLock, publish_lock
from portability.consent.models import OutboxEvent
from portability.consent.relay_lock import Publishing, RelayStatus
from portability.errors import PortabilityError
from portability.runtime import Runtime
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_consent, partition_for_user

__all__ = ["OutboxRelay", "RelayStatus", "running_relays", "wake_relays"]

# The name it logged under before the module was named for the relay: log settings keep working.
_log = logging.getLogger("portability.consent.outbox")

_MAX_BACKOFF_DOUBLINGS = 30  # 2**30 * any sane poll interval is past any max_backoff_s
_RUNNING: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()


def wake_relays() -> None:
    """A state change was written to the outbox: this process's relays publish it now."""
    for relay in running_relays():
        relay.wake()


def running_relays() -> list[OutboxRelay]:
    """The relays started and not stopped in this process (for metrics), by id."""
    return sorted(_RUNNING, key=lambda relay: relay.status.relay_id)


@dataclass(frozen=True, slots=True)
class _Pending:
    """An unpublished outbox row, detached from its session."""

    id: int
    kind: str
    key: str
    user_id: str | None
    payload: str


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    partition: int
    key: bytes
    value: bytes


class OutboxRelay:
    """Publishes the outbox of one consent store to the consents, apps and notifications topics.

    Use as ``async with OutboxRelay(engine, runtime) as relay: await relay.run(stop)``, or call
    :meth:`start`, :meth:`publish_pending` and :meth:`stop` yourself.
    """

    def __init__(
        self,
        engine: Engine,
        runtime: Runtime,
        *,
        client_id: str = "portability-outbox",
        lock: PublishLock | None = None,
        takeover_interval_s: float = 1.0,
    ) -> None:
        """Relay the outbox in ``engine``'s database with ``runtime``'s Kafka and codec.

        Args:
            engine: The consent store.
            runtime: Kafka, codec and topics.
            client_id: The Kafka producer's client id.
            lock: The publishing lock; default the store's (:func:`publish_lock`).
            takeover_interval_s: How often a standing-by relay tries to take the lock.
        """
        self._engine = engine
        self._runtime = runtime
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        relay_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        lock = lock or publish_lock(engine, f"portability relay {relay_id}")
        self._publishing = Publishing(lock, relay_id)
        self._takeover_interval_s = takeover_interval_s
        # A state change written in this process wakes the loop (wake(), from any thread).
        self._nudge = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Start the Kafka producer (idempotent)."""
        if self._producer is not None:
            return
        producer = self._runtime.kafka.producer(self._client_id)
        try:
            await producer.start()
        except BaseException:
            # A half-started client still holds connections; close them before failing.
            await producer.stop()
            raise
        self._producer = producer
        self._publishing.reopen()
        self._loop = asyncio.get_running_loop()
        _RUNNING.add(self)

    async def stop(self) -> None:
        """Flush and stop the producer, then let the publishing lock go (idempotent).

        Pending rows stay for the next holder, which may take over at once.
        """
        producer, self._producer = self._producer, None
        _RUNNING.discard(self)
        try:
            if producer is not None:
                await producer.stop()
        finally:
            # After the flush: a successor must not send while this relay's sends are open.
            await self._publishing.release()

    @property
    def status(self) -> RelayStatus:
        """Whether this relay publishes or stands by, who holds the lock, and counts."""
        return self._publishing.status

    @property
    def relay_id(self) -> str:
        """This relay's id in logs, stats and the lock (``host:pid:random``)."""
        return self.status.relay_id

    @property
    def publishing(self) -> bool:
        """Whether this relay holds the publishing lock (as of its last check)."""
        return self.status.publishing

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def publish_pending(self, limit: int = 500) -> int:
        """Publish up to ``limit`` unpublished rows, oldest first, and mark them published.

        Only the holder of the publishing lock publishes: a relay that does not hold it tries
        to take it, and publishes nothing while another relay holds it. Every row is sent in
        id order on one producer; rows are marked (in one UPDATE) only once Kafka
        acknowledged them.

        Returns:
            How many rows were published (0: the outbox is empty, or another relay holds
            the lock; :attr:`publishing` tells which).

        Raises:
            RelayError: Kafka, the database or the lock failed; the acknowledged leading rows
                were marked, the rest stay pending.
            ConsentError: :meth:`start` was not called.
        """
        producer = self._require_producer()
        if not await self._publishing.take():
            return 0
        try:
            rows = await asyncio.to_thread(self._read_pending, limit)
        except SQLAlchemyError as error:
            raise RelayError(f"cannot read the outbox: {error}") from error
        if not rows or not await self._publishing.still_held():
            return 0
        acked, failure = await self._send_in_order(producer, rows)
        self.status.published += acked
        if acked:
            await self._mark_published([row.id for row in rows[:acked]])
        if failure is not None:
            raise RelayError(
                f"published {acked} of {len(rows)} outbox rows; the rest are retried: {failure}"
            ) from failure
        return acked

    async def run(
        self,
        stop: asyncio.Event,
        poll_interval_s: float = 0.05,
        *,
        limit: int = 500,
        max_backoff_s: float = 5.0,
    ) -> None:
        """Publish pending rows until ``stop`` is set.

        Polls every ``poll_interval_s`` while idle, and at once after a full batch; while
        another relay holds the publishing lock, tries to take it every
        ``takeover_interval_s``. A failed round is logged and retried after a doubling delay
        of at most ``max_backoff_s``, so an outage neither ends the loop nor makes it spin.
        """
        failures = 0
        while not stop.is_set():
            try:
                published = await self.publish_pending(limit)
            except RelayError as error:
                failures += 1
                delay = _backoff(failures, poll_interval_s, max_backoff_s)
                _log.warning("outbox relay: %s (retry %d in %.2fs)", error, failures, delay)
            else:
                failures = 0
                if not self.status.publishing:
                    delay = self._takeover_interval_s
                else:
                    # A full batch means more rows are probably waiting.
                    delay = 0.0 if published >= limit else poll_interval_s
            if await self._pause(stop, delay):
                # A change was just written, so the store is back: no backoff (or lock
                # takeover) delay stands between it and the pipeline.
                failures = 0

    def wake(self) -> None:
        """A state change was written: publish now rather than after the current delay.

        Thread-safe (the API's routes write in worker threads). After a store outage the
        relay's retry delay has grown to ``max_backoff_s``; without this, a revocation the
        API answered once the store was back reached the pipeline seconds later, and deltas
        of changes made after the answer were still delivered.
        """
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop closed: nothing to wake
                loop.call_soon_threadsafe(self._nudge.set)

    async def _pause(self, stop: asyncio.Event, delay: float) -> bool:
        """Wait ``delay`` seconds, or until ``stop`` or :meth:`wake`; True if woken."""
        if delay <= 0:
            await asyncio.sleep(0)  # let other tasks run between full batches
        elif not self._nudge.is_set():
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._nudge.wait())]
            try:
                await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
        woken = self._nudge.is_set()
        self._nudge.clear()
        return woken

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise ConsentError("OutboxRelay is not started: call start() or use `async with`")
        return self._producer

    def _read_pending(self, limit: int) -> list[_Pending]:
        query = (
            select(OutboxEvent)
            .where(col(OutboxEvent.published_at).is_(None))
            .order_by(col(OutboxEvent.id))
            .limit(limit)
        )
        with Session(self._engine) as session:
            return [
                _Pending(event.id, event.kind, event.key, event.user_id, event.payload)
                for event in session.exec(query)
                if event.id is not None
            ]

    async def _send_in_order(
        self, producer: AIOKafkaProducer, rows: list[_Pending]
    ) -> tuple[int, Exception | None]:
        """Send ``rows`` in order; return how many leading rows were acked, and the first error.

        aiokafka keeps one batch in flight per partition, so sends to a partition land in the
        order they were made.
        """
        futures: list[asyncio.Future[Any]] = []
        send_error: Exception | None = None
        try:
            for row in rows:
                message = self._message(row)
                futures.append(
                    await producer.send(
                        message.topic, message.value, key=message.key, partition=message.partition
                    )
                )
        except (KafkaError, PortabilityError) as error:
            send_error = error
        # Await every ack, even after a failure: a future whose error nobody retrieves is
        # logged by asyncio as a bug.
        results = await asyncio.gather(*futures, return_exceptions=True)
        for index, result in enumerate(results):
            if isinstance(result, Exception):
                return index, result
            if isinstance(result, BaseException):  # cancellation: not ours to swallow
                raise result
        return len(results), send_error

    def _message(self, row: _Pending) -> _Message:
        """The Kafka message of a row; :class:`RelayError` if the row cannot be one."""
        try:
            record = json.loads(row.payload)
        except ValueError as error:
            raise RelayError(f"outbox row {row.id} has a corrupt payload: {error}") from error
        codec, topics = self._runtime.codec, self._runtime.topics
        if row.kind == "consent" and row.user_id is not None:
            # Explicit partition: co-partitioned with account.changes by user, whatever
            # partitioner a client library defaults to.
            partition = partition_for_user(row.user_id, self._runtime.settings.partitions)
            value = codec.encode(SchemaName.CONSENT, record)
            return _Message(topics.consents, partition, row.key.encode(), value)
        if row.kind == "notification":
            # In the partition of the consent's deliveries: it joins the same delivery lane.
            partition = partition_for_consent(row.key, self._runtime.settings.partitions)
            value = codec.encode(SchemaName.NOTIFICATION, record)
            return _Message(topics.notifications, partition, row.key.encode(), value)
        if row.kind == "app":
            # The apps topic has one partition: one ordered view of every app.
            return _Message(topics.apps, 0, row.key.encode(), codec.encode(SchemaName.APP, record))
        raise RelayError(f"outbox row {row.id} has kind {row.kind!r} (or no user_id)")

    async def _mark_published(self, ids: list[int]) -> None:
        try:
            await asyncio.to_thread(self._mark_published_sync, ids)
        except SQLAlchemyError as error:
            # Already on Kafka: they are published again next round, which versions absorb.
            raise RelayError(f"cannot mark {len(ids)} outbox rows published: {error}") from error

    def _mark_published_sync(self, ids: list[int]) -> None:
        # By id list, not "id <= last": on PostgreSQL a smaller id may commit after a larger
        # one was read, and that row has not been sent yet.
        statement = (
            sa.update(OutboxEvent)
            .where(col(OutboxEvent.id).in_(ids))
            .values(published_at=utc_now())
        )
        with Session(self._engine) as session, session.begin():
            session.exec(statement)


def _backoff(failures: int, base_s: float, max_s: float) -> float:
    """Doubling delay after consecutive failures, capped at ``max_s``."""
    return min(max_s, base_s * 2.0 ** min(failures, _MAX_BACKOFF_DOUBLINGS))
