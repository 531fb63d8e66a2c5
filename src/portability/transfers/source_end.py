"""The exact end of a partition of ``account.changes``: where "every change so far" ends.

A snapshot or an archive is taken as of at least the end of the user's partition when it was
asked for (:meth:`portability.transfers.state.StateView.source_end`). Finding that end takes a
reader of its own, outside the view's consumer group, started on first use and kept for the
next ask.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from portability.runtime import Runtime

__all__ = ["SourceEnd"]


class SourceEnd:
    """Asks the broker where a partition of ``source`` ends; one ask at a time."""

    def __init__(self, runtime: Runtime, client_id: str, source: str) -> None:
        self._runtime = runtime
        self._client_id = client_id
        self._source = source
        self._reader: AIOKafkaConsumer | None = None  # started on first use
        self._lock = asyncio.Lock()

    async def stop(self) -> None:
        async with self._lock:  # not while an ask is using the reader
            if self._reader is not None:
                await self._reader.stop()

    async def of(self, partition: int, timeout_s: float) -> int:
        """The end of ``source[partition]`` now: the offset its next change will get.

        One broker round trip or two: the end from ListOffsets, then, since the embedded
        broker answers ListOffsets with the start of the last record batch rather than the
        end, the high watermark of a fetch of the last record it names (exact on any broker).

        Raises:
            TimeoutError: The broker did not answer within ``timeout_s``.
        """
        async with self._lock:
            return await asyncio.wait_for(self._fetch_end(partition), timeout_s)

    async def _fetch_end(self, partition: int) -> int:
        if self._reader is None:
            reader = self._runtime.kafka.reader(f"{self._client_id}-end")
            await reader.start()
            self._reader = reader
        reader = self._reader
        source = TopicPartition(self._source, partition)
        reader.assign([source])
        listed = int((await reader.end_offsets([source]))[source])
        if listed == 0:
            return 0  # nothing was ever written (the first record makes it at least 1)
        reader.seek(source, listed - 1)
        while True:  # bounded by the caller's timeout
            batch = await reader.getmany(source, timeout_ms=200, max_records=1)
            if batch.get(source):
                # The fetch that returned this record reported the high watermark with it.
                return max(listed, int(reader.highwater(source) or 0))
            if await reader.position(source) >= listed:
                return listed  # retention removed that record: the log is empty, ListOffsets exact
