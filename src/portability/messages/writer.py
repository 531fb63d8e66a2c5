"""The message log's writer: ``delivery.log`` into the consent store's database, in batches.

The delivery worker never waits on a database for the log: it emits one entry per attempt to
``delivery.log`` (as the API does for resends and test events), and this role stores them.
It consumes in the consumer group ``PORTABILITY_MESSAGES_GROUP`` (scale out by starting more,
up to the partition count; the API process runs one too) and for each batch

1. decodes every record; one that cannot be decoded, or stored (a value too long for its
   column), is dead-lettered with its reason (stage ``messages``) and the batch goes on;
2. stores the batch's entries in one transaction (:mod:`portability.messages.storing`:
   idempotent, so an entry read twice after a crash or a rebalance is stored once);
3. commits the group offsets, only after the database committed.

A database that cannot be reached (or a schema registry, while decoding) is waited out with
a growing pause, the batch held: the role does not crash and loses nothing; Kafka keeps the
entries meanwhile. Every hour, and at start, the retention sweep deletes what is older than
``PORTABILITY_MESSAGE_RETENTION_DAYS`` / ``PORTABILITY_DISCLOSURE_RETENTION_DAYS``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    ConsumerStoppedError,
    IllegalStateError,
    KafkaError,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from portability.broker import stop_consumer
from portability.messages.batch_intake import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    STAGE,
    BatchIntake,
    Pair,
    first_line,
)
from portability.messages.storing import SweepCounts, sweep_retention
from portability.messages.writer_stats import StatsLine, WriterStats
from portability.runtime import Runtime

__all__ = ["STAGE", "MessageLogWriter", "WriterStats"]

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S: Final = 3600.0
_SWEEP_RETRY_S: Final = 60.0  # after a failed sweep
_POLL_MS: Final = 200

Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


class MessageLogWriter:
    """One instance of the writer; ``start``, then ``run(stop)`` until ``stop`` is set or
    :meth:`stop` is called.

    Args:
        runtime: Kafka, codec, topics and settings (``messages_group``, the retentions).
        engine: The consent store, migrated (the message log's tables are in it).
        client_id: The Kafka clients' id.
        sweep_interval_s: Time between retention sweeps.
        clock: Wall time for the sweep's cutoffs (tests move it).
    """

    def __init__(
        self,
        runtime: Runtime,
        engine: Engine,
        *,
        client_id: str = "portability-messages",
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        settings = runtime.settings
        self._runtime = runtime
        self._engine = engine
        self._topic = runtime.topics.delivery_log
        self._consumer: AIOKafkaConsumer = runtime.kafka.group_consumer(
            settings.messages_group, client_id
        )
        self._producer: AIOKafkaProducer = runtime.kafka.producer(client_id)
        self._sweep_interval_s = sweep_interval_s
        self._clock = clock
        self._next_sweep = 0.0  # monotonic: due at once
        self._stopping = asyncio.Event()
        self._stop: asyncio.Event | None = None
        self._lock = asyncio.Lock()  # a batch and the clients' stop never mix
        self._started = False
        self.stats = WriterStats()
        self._stats_line = StatsLine(self.stats)
        self._intake = BatchIntake(
            runtime, engine, self._producer, self.stats, self._stopped, self._pause
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the producer (dead letters) and the consumer, and join the group."""
        await self._producer.start()
        self._started = True
        try:
            await self._consumer.start()
        except BaseException:
            await self.stop()  # a half-started client still holds connections
            raise
        self._consumer.subscribe([self._topic])

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Store batches until ``stop`` is set or :meth:`stop` is called."""
        self._stop = stop
        failures = 0
        while not self._stopped():
            if time.monotonic() >= self._next_sweep:
                await self._sweep_in_loop()
            try:
                batch = await self._consumer.getmany(timeout_ms=_POLL_MS)
            except ConsumerStoppedError:
                if self._stopped():
                    return
                raise
            async with self._lock:
                if self._stopped():
                    return  # not committed: read again by the next owner, stored once
                try:
                    await self.process(batch)
                except KafkaError as error:
                    # A dead letter not acknowledged, a commit refused: the batch again, later.
                    failures += 1
                    self._rewind(batch)
                    pause = min(BACKOFF_FIRST_S * 2 ** (failures - 1), BACKOFF_MAX_S)
                    log.warning("message log batch failed (again in %.1f s): %r", pause, error)
                    await self._pause(pause)
                    continue
            failures = 0
            self._stats_line.maybe_log()

    async def stop(self) -> None:
        """Stop after the batch in hand; its offsets are committed only if it was stored."""
        self._stopping.set()
        async with self._lock:
            await stop_consumer(self._consumer)  # a broker gone mid-fetch must not abort the stop
            if self._started:
                await self._producer.stop()
                self._started = False

    def _stopped(self) -> bool:
        return self._stopping.is_set() or (self._stop is not None and self._stop.is_set())

    # -- batches -----------------------------------------------------------------------------

    async def process(self, batch: Records) -> None:
        """Decode, store and commit one batch (see the module's docstring)."""
        if not batch:
            return
        started = time.perf_counter()
        pairs: list[Pair] = []
        letters: list[asyncio.Future[Any]] = []
        for records in batch.values():
            for record in records:
                entry = await self._intake.decode(record, letters)
                if entry is not None:
                    pairs.append((record, entry))
        await asyncio.gather(*letters)
        counts = await self._intake.store(pairs)
        if counts is None:
            return  # stopping while the database was away: nothing committed
        await self._commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
        self.stats.batches += 1
        self.stats.entries_stored += counts.entries
        self.stats.messages_written += counts.messages
        self.stats.disclosed_records_offered += counts.disclosed_records
        self.stats.last_batch_seconds = time.perf_counter() - started
        log.debug(
            "message log: stored %d entries of %d messages",
            counts.entries,
            counts.messages,
            extra={"entries": counts.entries, "messages": counts.messages},
        )

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assigned = self._consumer.assignment()
        held = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not held:
            return
        try:
            await self._consumer.commit(held)
        except (CommitFailedError, IllegalStateError) as error:
            # The partition moved mid-batch: its new owner reads these entries again, and
            # storing them again changes nothing.
            log.warning("message log commit skipped after a rebalance: %s", error)

    def _rewind(self, batch: Records) -> None:
        """Read ``batch`` again from its first records (those of partitions still held)."""
        assigned = self._consumer.assignment()
        for tp, records in batch.items():
            if tp in assigned and records:
                self._consumer.seek(tp, records[0].offset)

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the writer is told to stop."""
        events = [self._stopping] if self._stop is None else [self._stopping, self._stop]
        waits = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    # -- retention ---------------------------------------------------------------------------

    async def sweep(self) -> SweepCounts:
        """Delete what is past retention now (see :func:`sweep_retention`).

        Raises:
            SQLAlchemyError: The database failed; the loop tries again a minute later.
        """
        settings = self._runtime.settings
        counts = await asyncio.to_thread(
            sweep_retention,
            self._engine,
            self._clock(),
            settings.message_retention_days,
            settings.disclosure_retention_days,
        )
        self.stats.sweeps += 1
        self.stats.swept_messages += counts.messages
        self.stats.swept_attempts += counts.attempts
        self.stats.swept_disclosed_records += counts.disclosed_records
        log.info(
            "message log retention: deleted %d messages, %d attempts, %d disclosed records",
            counts.messages,
            counts.attempts,
            counts.disclosed_records,
            extra=asdict(counts),
        )
        return counts

    async def _sweep_in_loop(self) -> None:
        try:
            await self.sweep()
        except SQLAlchemyError as error:
            log.warning("message log retention sweep failed (retried): %s", first_line(error))
            self._next_sweep = time.monotonic() + min(_SWEEP_RETRY_S, self._sweep_interval_s)
        else:
            self._next_sweep = time.monotonic() + self._sweep_interval_s
