"""The dead-letter topic's record layout: the original bytes, and headers that say why.

A record that cannot be processed keeps its key and value untouched, so that it can be
inspected and redelivered; the headers carry where it came from and the reason (their
names: :class:`portability.wire.headers.LetterField`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from portability.wire.headers import DEAD_LETTER_HEADER_PREFIX, LetterField

__all__ = ["MAX_REASON_CHARS", "DeadLetter", "short_reason"]

# A reason is read in listings and logs: the detail behind it goes to the stage's log.
MAX_REASON_CHARS = 299


def short_reason(text: str) -> str:
    """``text`` on one line, cut to fit a dead letter's reason (under 300 characters)."""
    line = " ".join(text.split())
    if len(line) <= MAX_REASON_CHARS:
        return line
    return line[: MAX_REASON_CHARS - 3] + "..."


class SourceRecord(Protocol):
    """What a letter keeps of a consumed record (aiokafka's ``ConsumerRecord`` has it)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


class DeadLetter:
    """One record bound for the dead-letter topic."""

    __slots__ = ("extra", "key", "offset", "partition", "reason", "stage", "topic", "value")

    def __init__(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        stage: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        """``extra``: more ``dlq.*`` headers, keyed by :class:`LetterField`, e.g. ``attempts``,
        ``history`` (JSON), ``consent_id`` and ``app_id`` for a delivery that exhausted its
        retries."""
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.reason = short_reason(reason)
        self.stage = stage
        self.extra = extra or {}

    @classmethod
    def of(
        cls,
        record: SourceRecord,
        *,
        reason: str,
        stage: str,
        extra: dict[str, str] | None = None,
    ) -> DeadLetter:
        """The letter of a consumed ``record``: its place, key and bytes, untouched."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            reason=reason,
            stage=stage,
            extra=extra,
        )

    def log_fields(self) -> dict[str, object]:
        """Structured log fields naming the record (and its fault, if known)."""
        fields: dict[str, object] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
        }
        if LetterField.FAULT in self.extra:
            fields["fault"] = self.extra[LetterField.FAULT]
        return fields

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers: source topic, partition, offset, reason, stage, time."""
        return [
            (LetterField.SOURCE_TOPIC.header, self.topic.encode()),
            (LetterField.SOURCE_PARTITION.header, str(self.partition).encode()),
            (LetterField.SOURCE_OFFSET.header, str(self.offset).encode()),
            (LetterField.REASON.header, self.reason.encode()),
            (LetterField.STAGE.header, self.stage.encode()),
            (LetterField.AT.header, datetime.now(UTC).isoformat().encode()),
            *(
                (DEAD_LETTER_HEADER_PREFIX + name, value.encode())
                for name, value in self.extra.items()
            ),
        ]

    @staticmethod
    def parse_headers(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
        """The ``dlq.*`` headers of a dead-lettered record, without the prefix."""
        return {
            name.removeprefix(DEAD_LETTER_HEADER_PREFIX): value.decode(errors="replace")
            for name, value in headers
            if name.startswith(DEAD_LETTER_HEADER_PREFIX)
        }
