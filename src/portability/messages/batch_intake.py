"""Decoding and storing one batch of the message log's writer, and its dead letters.

What cannot be decoded, or stored (a value the database refuses), is dead-lettered and the
batch goes on; a schema registry or a database that cannot be reached is waited out, with a
growing pause, until the writer is told to stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from aiokafka import AIOKafkaProducer, ConsumerRecord
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from portability.messages.storing import BatchCounts, entry_fault, store_entries
from portability.messages.writer_stats import WriterStats
from portability.runtime import Runtime
from portability.wire.dead_letters import DeadLetter
from portability.wire.delivery_log import DeliveryLogEntry
from portability.wire.errors import SchemaRegistryError, WireFormatError
from portability.wire.schemas import SchemaName

__all__ = ["STAGE", "BatchIntake", "Pair", "first_line"]

log = logging.getLogger("portability.messages.writer")  # the role's logger

STAGE: Final = "messages"
"""The stage named in the writer's dead letters."""

BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0

Pair = tuple[ConsumerRecord[bytes, bytes], DeliveryLogEntry]


class BatchIntake:
    """Decodes a batch's records and stores their entries, for one writer.

    Args:
        runtime: The codec and the dead-letters topic.
        engine: The consent store.
        producer: The writer's producer (started), for dead letters.
        stats: The writer's counters.
        stopped: Whether the writer is stopping (a wait then ends early).
        pause: Waits the seconds given, or less once the writer is stopping.
    """

    def __init__(
        self,
        runtime: Runtime,
        engine: Engine,
        producer: AIOKafkaProducer,
        stats: WriterStats,
        stopped: Callable[[], bool],
        pause: Callable[[float], Awaitable[None]],
    ) -> None:
        self._codec = runtime.codec
        self._dead_letters = runtime.topics.dead_letters
        self._engine = engine
        self._producer = producer
        self.stats = stats
        self._stopped = stopped
        self._pause = pause

    async def decode(
        self, record: ConsumerRecord[bytes, bytes], letters: list[asyncio.Future[Any]]
    ) -> DeliveryLogEntry | None:
        """The entry ``record`` holds; None once it is dead-lettered (its ack in ``letters``)."""
        pause = BACKOFF_FIRST_S
        while True:
            try:
                decoded = await self._codec.decode_fetching(
                    SchemaName.DELIVERY_LOG_ENTRY, record.value
                )
                break
            except WireFormatError as error:
                letters.append(await self.dead_letter(record, str(error)))
                return None
            except SchemaRegistryError as error:
                if not error.retriable or self._stopped():
                    raise
                log.warning("schema registry unreachable (retried in %.1f s): %s", pause, error)
                await self._pause(pause)
                pause = min(pause * 2, BACKOFF_MAX_S)
        entry = cast("DeliveryLogEntry", decoded)
        fault = entry_fault(entry)
        if fault is not None:
            letters.append(await self.dead_letter(record, f"cannot store the entry: {fault}"))
            return None
        return entry

    async def store(self, pairs: list[Pair]) -> BatchCounts | None:
        """Store the entries, waiting out a database outage; None if stopped meanwhile."""
        entries = [entry for _record, entry in pairs]
        one_by_one = False
        lettered: set[int] = set()  # records (by id) dead-lettered by an earlier try
        pause = BACKOFF_FIRST_S
        while True:
            try:
                if one_by_one:
                    return await self._store_each(pairs, lettered)
                return await asyncio.to_thread(store_entries, self._engine, entries)
            except (IntegrityError, DataError) as error:
                # The same entries fail the same way: store them one by one, letter the bad.
                log.warning("message log batch refused, storing entry by entry: %s", error)
                one_by_one = True
            except SQLAlchemyError as error:
                self.stats.store_retries += 1
                if self._stopped():
                    return None
                log.warning(
                    "cannot store the message log (retried in %.1f s): %s",
                    pause,
                    first_line(error),
                    extra={"retries": self.stats.store_retries},
                )
                await self._pause(pause)
                if self._stopped():
                    return None
                pause = min(pause * 2, BACKOFF_MAX_S)

    async def _store_each(self, pairs: list[Pair], lettered: set[int]) -> BatchCounts:
        """Store entry by entry; one the database refuses is dead-lettered (once)."""
        totals = BatchCounts(0, 0, 0, 0)
        letters: list[asyncio.Future[Any]] = []
        try:
            for record, entry in pairs:
                if id(record) in lettered:
                    continue
                try:
                    counts = await asyncio.to_thread(store_entries, self._engine, [entry])
                except (IntegrityError, DataError) as error:
                    reason = f"cannot store the entry: {first_line(error)}"
                    letters.append(await self.dead_letter(record, reason))
                    lettered.add(id(record))
                    continue
                totals = BatchCounts(
                    totals.entries + counts.entries,
                    totals.messages + counts.messages,
                    totals.delivered + counts.delivered,
                    totals.disclosed_records + counts.disclosed_records,
                )
        finally:
            await asyncio.gather(*letters)
        return totals

    async def dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str
    ) -> asyncio.Future[Any]:
        letter = DeadLetter.of(record, reason=reason, stage=STAGE)
        log.error(
            "message log dead-letters %s[%d]@%d: %s",
            record.topic,
            record.partition,
            record.offset,
            letter.reason,
            extra=letter.log_fields(),
        )
        self.stats.dead_lettered += 1
        ack: asyncio.Future[Any] = await self._producer.send(
            self._dead_letters,
            letter.value,
            key=letter.key,
            headers=letter.headers(),
        )
        return ack


def first_line(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__
