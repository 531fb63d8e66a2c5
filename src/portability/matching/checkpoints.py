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
from portability.wire.records import AudienceCheckpoint, CountedActivity, MatcherCheckpoint
from portability.wire.schemas import SchemaName

__all__ = ["CheckpointStore"]

log = logging.getLogger(__name__)

_MAX_READ_ROUNDS = 1000
# Records read back from a partition's end for its latest checkpoint (each checkpoint
# partition holds only its own changes partition's, in order, so the latest is its last
# decodable record); all of it is read only when none of these decodes.
_TAIL = 16


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

    async def load(self, partitions: list[int]) -> dict[int, MatcherCheckpoint]:
        """The latest checkpoint of each of ``partitions`` that has one.

        Read from near each partition's end, not its beginning: the topic is compacted, but
        a broker compacts late (never the active segment; the embedded one not at all) and a
        checkpoint is written per batch, so a whole partition grows with the hours the
        matcher ran. Read whole, it made every rebalance slower, and on a slow broker the
        load (inside the rebalance listener) outlasted the group's rebalance timeout: each
        member was dropped while loading and the group never settled (the chaos suite, on
        the embedded broker's S3 storage).
        """
        tps = [TopicPartition(self._topic, partition) for partition in partitions]
        if not tps:
            return {}
        self._reader.assign(tps)
        # ListOffsets may answer an end below the true one (the embedded broker answers the
        # last batch's base offset + 1): a start at or before the last record either way,
        # and the read goes on to the high watermark.
        ends = await self._reader.end_offsets(tps)
        for tp in tps:
            self._reader.seek(tp, max(0, ends[tp] - _TAIL))
        latest = await self._read(tps)
        whole = [tp for tp in tps if tp.partition not in latest and ends[tp] > _TAIL]
        if whole:
            await self._reader.seek_to_beginning(*whole)
            latest |= await self._read(whole)
        return latest

    async def _read(self, tps: list[TopicPartition]) -> dict[int, MatcherCheckpoint]:
        """The last decodable checkpoint of each partition, from its position to its end."""
        latest: dict[int, MatcherCheckpoint] = {}
        for _ in range(_MAX_READ_ROUNDS):
            batch = await self._reader.getmany(*tps, timeout_ms=200)
            for tp, records in batch.items():
                for record in records:
                    checkpoint = self._decode(record.value, tp.partition, record.offset)
                    if checkpoint is not None:
                        latest[tp.partition] = checkpoint
            if await self._at_end(tps):
                return latest
        raise TimeoutError(
            f"could not read checkpoints of {self._topic} {[tp.partition for tp in tps]}"
        )

    async def _at_end(self, tps: list[TopicPartition]) -> bool:
        for tp in tps:
            highwater = self._reader.highwater(tp)
            if highwater is None or await self._reader.position(tp) < highwater:
                return False
        return True

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
        return decoded

    async def send(
        self,
        producer: AIOKafkaProducer,
        partition: int,
        next_offset: int,
        sequences: dict[str, int],
        audience: AudienceCheckpoint | None = None,
        counted_activity: list[CountedActivity] | None = None,
    ) -> asyncio.Future[object]:
        """Send the checkpoint; the returned future resolves on the broker's acknowledgement.

        ``audience`` is the partition's post audience figures at ``next_offset`` (see
        :mod:`portability.privacy.audience`), and ``counted_activity`` its users' ledger of
        counted activity on others' posts (:mod:`portability.privacy.ledger`): both must
        resume from the same point as the sequences, so that an update matched again yields
        the same deltas, and a batch of activity matched again the same entries.
        """
        checkpoint: MatcherCheckpoint = {
            "source_partition": partition,
            "next_offset": next_offset,
            "sequences": sequences,
            "written_at": datetime.now(UTC),
            "audience": audience,
            "counted_activity": counted_activity,
        }
        value = self._codec.encode(SchemaName.MATCHER_CHECKPOINT, dict(checkpoint))
        ack: asyncio.Future[object] = await producer.send(
            self._topic, value, key=str(partition).encode(), partition=partition
        )
        return ack
