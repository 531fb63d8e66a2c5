"""``state.changelog``: the current-state view's changes, from which a new owner restores it.

Each partition of the changelog mirrors the same partition of ``account.changes``. For every
batch the view applies it writes, in order:

- one record per record the batch changed: key ``user_id/category/record_id`` (``%`` and
  ``/`` inside a part percent-encoded, so the key stays unambiguous), value the stored row as JSON
  (``occurred_at``, ``change_id``, ``record``, ``context``), or no value (a tombstone) for a
  delete; header ``source.offset``, the change's offset;
- then a checkpoint: key ``__offset__``, value ``{"source_topic", "source_partition",
  "next_offset"}``, the source position the batch brings the state to.

The values are the view's rows verbatim (JSON, not Avro): the changelog is private to the view,
and restoring is a copy, not a re-render.

Restoring reads from where the local file was last confirmed (offset 0 for a new file) to the
end, and applies the records between two checkpoints in one SQLite transaction committed with
the second checkpoint. Records after the last checkpoint belong to a batch whose writer died
before checkpointing it; they are not applied, and the source is re-read from the checkpoint,
which rewrites them. Nothing here depends on the broker compacting the topic: without
compaction the log is only longer. With compaction, the only subtlety is that such a trailing
record may have replaced an older value of its key, so the partition is declared consistent
only once the source has been re-applied past the trailing records (:attr:`Restored.settle_at`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from portability.transfers.errors import StateStoreError, TransfersError
from portability.transfers.render import Deletion, StoredRecord, render_record
from portability.transfers.store import PartitionStore, Position, StateChange
from portability.wire.headers import SOURCE_OFFSET_HEADER

__all__ = [
    "CHECKPOINT_KEY",
    "ChangelogCheckpoint",
    "ChangelogFormatError",
    "ChangelogResetError",
    "Restored",
    "changelog_key",
    "decode_changelog",
    "encode_change",
    "encode_checkpoint",
    "restore_partition",
]

CHECKPOINT_KEY: Final = b"__offset__"
_CHUNK: Final = 1000  # records written to SQLite per worker-thread call while restoring
_MAX_IDLE_FETCHES: Final = 150  # ~30 s of empty fetches short of the end: the broker is stuck

Headers = list[tuple[str, bytes]]


class ChangelogFormatError(TransfersError):
    """A changelog record this build cannot read."""


class ChangelogResetError(TransfersError):
    """The changelog partition ends before where the local file says it was confirmed: the
    topic was deleted and recreated, so the local file no longer matches it."""


@dataclass(frozen=True, slots=True)
class ChangelogCheckpoint:
    source_topic: str
    source_partition: int
    next_offset: int


@dataclass(frozen=True, slots=True)
class Restored:
    """Where a partition stands after catching up with its changelog.

    Attributes:
        records_read: Changelog records read (0 when the local file was up to date).
        next_offset: The source offset to resume applying from.
        settle_at: The state is consistent only once the source is applied up to here (0:
            at once); see the module docstring.
    """

    records_read: int
    batches: int
    next_offset: int
    settle_at: int


def changelog_key(user_id: str, category: str, record_id: str) -> bytes:
    """``user_id/category/record_id``, with ``%`` and ``/`` inside a part percent-encoded."""
    return f"{_escape(user_id)}/{_escape(category)}/{_escape(record_id)}".encode()


def _escape(part: str) -> str:
    # Only the two characters that matter; unquote() reverses exactly this (and is cheap).
    if "%" in part or "/" in part:
        return part.replace("%", "%25").replace("/", "%2F")
    return part


def _parse_key(key: bytes) -> tuple[str, str, str]:
    parts = key.decode().split("/")
    if len(parts) != 3:
        raise ChangelogFormatError(f"changelog key {key!r} is not user_id/category/record_id")
    return unquote(parts[0]), unquote(parts[1]), unquote(parts[2])


def encode_change(change: StateChange) -> tuple[bytes, bytes | None, Headers]:
    """Key, value (None: a tombstone) and headers of one applied change."""
    key = changelog_key(change.user_id, change.category, change.record_id)
    headers = [(SOURCE_OFFSET_HEADER, str(change.source_offset).encode())]
    if isinstance(change, Deletion):
        return key, None, headers
    # The record is embedded as the text already rendered, not parsed and encoded again.
    context = "null" if change.context_json is None else change.context_json
    value = (
        f'{{"occurred_at":{json.dumps(change.occurred_at)},'
        f'"change_id":{json.dumps(change.change_id)},"record":{change.record_json},'
        f'"context":{context}}}'
    )
    return key, value.encode(), headers


def encode_checkpoint(position: Position) -> tuple[bytes, bytes]:
    value = {
        "source_topic": position.topic,
        "source_partition": position.partition,
        "next_offset": position.offset,
    }
    return CHECKPOINT_KEY, json.dumps(value, separators=(",", ":")).encode()


def decode_changelog(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> StateChange | ChangelogCheckpoint:
    """Read one changelog record back.

    Raises:
        ChangelogFormatError: The record is not one this module wrote.
    """
    if key is None:
        raise ChangelogFormatError("changelog record without a key")
    try:
        if key == CHECKPOINT_KEY:
            checkpoint = json.loads(value or b"")
            return ChangelogCheckpoint(
                str(checkpoint["source_topic"]),
                int(checkpoint["source_partition"]),
                int(checkpoint["next_offset"]),
            )
        user_id, category, record_id = _parse_key(key)
        offset = int(dict(headers)[SOURCE_OFFSET_HEADER])
        if value is None:
            return Deletion(user_id, category, record_id, offset)
        row = json.loads(value)
        context = row.get("context")
        return StoredRecord(
            user_id,
            category,
            record_id,
            render_record(row["record"]),
            str(row["occurred_at"]),
            str(row["change_id"]),
            offset,
            None if context is None else render_record(context),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise ChangelogFormatError(f"unreadable changelog record {key!r}: {error!r}") from error


async def restore_partition(
    reader: AIOKafkaConsumer, changelog: TopicPartition, store: PartitionStore
) -> Restored:
    """Bring ``store`` up to the last complete batch of its changelog partition.

    ``reader`` is a started consumer outside any group, used for this partition only.

    Raises:
        ChangelogResetError: The changelog ends before ``store.changelog_offset``.
        ChangelogFormatError: A record cannot be read (the restore stops rather than build a
            state that silently lacks it).
        StateStoreError: A checkpoint names another source partition than ``store``'s.
    """
    start = store.changelog_offset
    reader.assign([changelog])
    reader.seek(changelog, start)
    restore = _Restore(store)
    idle = 0
    while True:
        batch = await reader.getmany(changelog, timeout_ms=200, max_records=_CHUNK)
        records = batch.get(changelog, [])
        if records and records[0].offset < start:
            # The consumer was reset to the log start: the offset is beyond the changelog's end.
            raise ChangelogResetError(
                f"{changelog.topic}[{changelog.partition}] restarts below offset {start}"
            )
        await restore.feed(records)
        position = await reader.position(changelog)
        highwater = reader.highwater(changelog)
        # Kafka answers an offset past the end with an error (and the consumer resets to the
        # log start, caught above); some brokers (Tansu) answer with nothing and the end.
        if position < start or (highwater is not None and highwater < start):
            raise ChangelogResetError(
                f"{changelog.topic}[{changelog.partition}] ends at {highwater}, before {start}"
            )
        if highwater is not None and position >= highwater:
            return await restore.finish()
        idle = 0 if records else idle + 1
        if idle > _MAX_IDLE_FETCHES:
            raise TimeoutError(
                f"reading {changelog.topic}[{changelog.partition}] made no progress at offset "
                f"{position} (end {highwater}): is the broker healthy?"
            )


class _Restore:
    """The transaction bookkeeping of one restore: apply per checkpoint, drop the tail."""

    def __init__(self, store: PartitionStore) -> None:
        self._store = store
        self._pending: list[StateChange] = []
        self._tail_max = -1  # highest source offset written since the last checkpoint
        self.records_read = 0
        self.batches = 0

    async def feed(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            self.records_read += 1
            decoded = decode_changelog(record.key, record.value, record.headers)
            if isinstance(decoded, ChangelogCheckpoint):
                await self._checkpoint(decoded, record.offset + 1)
                continue
            self._pending.append(decoded)
            self._tail_max = max(self._tail_max, decoded.source_offset)
        if len(self._pending) >= _CHUNK:
            await self._flush()

    async def finish(self) -> Restored:
        # Whatever follows the last checkpoint is an unfinished batch: never committed.
        self._pending.clear()
        await asyncio.to_thread(self._store.rollback)
        return Restored(
            self.records_read,
            self.batches,
            self._store.next_offset,
            self._tail_max + 1 if self._tail_max >= 0 else 0,
        )

    async def _checkpoint(self, checkpoint: ChangelogCheckpoint, changelog_offset: int) -> None:
        store = self._store
        if (checkpoint.source_topic, checkpoint.source_partition) != (store.topic, store.partition):
            raise StateStoreError(
                f"state.changelog partition {store.partition} holds a checkpoint of "
                f"{checkpoint.source_topic}[{checkpoint.source_partition}], not of "
                f"{store.topic}[{store.partition}]: two deployments share the changelog; give "
                "them different topic prefixes"
            )
        await self._flush()
        await asyncio.to_thread(store.commit, checkpoint.next_offset, changelog_offset)
        self._tail_max = -1
        self.batches += 1

    async def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            await asyncio.to_thread(self._store.write, pending)
