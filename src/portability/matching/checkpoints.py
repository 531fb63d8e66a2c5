"""Per-partition matcher checkpoints: the input position and each consent's last sequence.

Sequences must survive a crash consistently with the input offset: a change matched again
after a restart must get the same sequence it had. The checkpoint is written (and
acknowledged) after the batch's deliveries and before the offset commit, and on assignment
the matcher resumes from the checkpoint, so a restart replays exactly the batch whose
checkpoint was not written, with the sequences it had.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from portability.wire.codec import AvroCodec
from portability.wire.errors import WireFormatError
from portability.wire.records import MatcherCheckpoint
from portability.wire.schemas import SchemaName

__all__ = ["CheckpointStore"]

log = logging.getLogger(__name__)

_MAX_READ_ROUNDS = 1000


class CheckpointStore:
    """Reads and writes checkpoints in the compacted checkpoint topic."""

    def __init__(self, topic: str, codec: AvroCodec, reader: AIOKafkaConsumer) -> None:
        self._topic = topic
        self._codec = codec
        self._reader = reader

    async def start(self) -> None:
        await self._reader.start()

    async def stop(self) -> None:
        await self._reader.stop()

    async def load(self, partition: int) -> MatcherCheckpoint | None:
        """The latest checkpoint of ``partition``, reading its checkpoint partition to the end."""
        tp = TopicPartition(self._topic, partition)
        self._reader.assign([tp])
        await self._reader.seek_to_beginning(tp)
        latest: MatcherCheckpoint | None = None
        for _ in range(_MAX_READ_ROUNDS):
            batch = await self._reader.getmany(tp, timeout_ms=200)
            for record in batch.get(tp, ()):
                latest = self._decode(record.value, partition, record.offset) or latest
            highwater = self._reader.highwater(tp)
            if highwater is not None and await self._reader.position(tp) >= highwater:
                return latest
        raise TimeoutError(f"could not read checkpoint partition {self._topic}[{partition}]")

    def _decode(self, value: bytes | None, partition: int, offset: int) -> MatcherCheckpoint | None:
        try:
            decoded = self._codec.decode(SchemaName.MATCHER_CHECKPOINT, value)
        except WireFormatError as error:
            # An unreadable checkpoint is skipped: the previous one (or the committed offset)
            # is still a consistent place to resume from.
            log.warning(
                "skipping unreadable checkpoint %s[%d]@%d: %s",
                self._topic,
                partition,
                offset,
                error,
            )
            return None
        return decoded  # type: ignore[return-value]

    async def send(
        self,
        producer: AIOKafkaProducer,
        partition: int,
        next_offset: int,
        sequences: dict[str, int],
    ) -> asyncio.Future[object]:
        """Send the checkpoint; the returned future resolves on the broker's acknowledgement."""
        checkpoint: MatcherCheckpoint = {
            "source_partition": partition,
            "next_offset": next_offset,
            "sequences": sequences,
            "written_at": datetime.now(UTC),
        }
        value = self._codec.encode(SchemaName.MATCHER_CHECKPOINT, dict(checkpoint))
        ack: asyncio.Future[object] = await producer.send(
            self._topic, value, key=str(partition).encode(), partition=partition
        )
        return ack
