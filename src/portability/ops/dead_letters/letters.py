"""One dead letter as ``portability dlq`` sees it, and the markers of its redeliveries.

A :class:`Letter` is a record of the dead-letter topic read back: its original key and
value, what its ``dlq.*`` headers say, its value decoded with its source topic's schema, and
(once :mod:`.reading` has linked the whole topic) where it was redelivered and which letters
were born of its redeliveries. A :class:`RedeliveryMark` is the record a redelivery appends
to the dead-letter topic (its header names live in :mod:`portability.wire.headers`). Both
render themselves as the JSON of ``dlq list|show --json``, whose keys say "replay" as they
always have: the JSON and the header names are a contract, the code's word for re-producing
a dead letter is "redeliver".
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from portability.wire.headers import LetterField
from portability.wire.schemas import SchemaName

__all__ = ["Attempt", "Decoded", "Letter", "RedeliveryMark"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt from a letter's ``dlq.history``."""

    at: str
    status: int | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "status": self.status, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Decoded:
    """A letter's value read with its source topic's schema: the record, or why not."""

    schema: SchemaName | None
    record: Mapping[str, Any] | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.record is not None

    def as_dict(self, value: bytes | None) -> dict[str, Any]:
        document: dict[str, Any] = {"schema": self.schema.value if self.schema else None}
        if self.record is not None:
            document["decoded"] = _jsonable(self.record)
            return document
        document["error"] = self.error
        document["length"] = 0 if value is None else len(value)
        if value is not None:
            document["hex"] = value[:256].hex()
            document["utf8"] = value[:512].decode(errors="replace")
        return document


@dataclass(frozen=True, slots=True)
class RedeliveryMark:
    """A redelivery marker: letter ``letter`` was re-produced to ``topic[partition]@target``."""

    offset: int  # the marker's own offset in the dead-letter topic
    letter: int
    topic: str
    partition: int
    target: int
    at: str

    @property
    def position(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.target)

    def as_dict(self) -> dict[str, Any]:
        return {
            "marker_offset": self.offset,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.target,
            "at": self.at,
        }


@dataclass(slots=True)
class Letter:
    """One dead letter: the original key and value, and what its headers say."""

    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    raw_headers: tuple[tuple[str, bytes], ...]
    fields: dict[str, str]  # the dlq.* headers, without the prefix
    decoded: Decoded
    redelivery_topic: str | None = None  # where a redelivery goes; None: cannot be told
    consent_id: str | None = None
    app_id: str | None = None
    redeliveries: list[RedeliveryMark] = field(default_factory=list)  # where it went
    redelivery_of: int | None = None  # the letter whose redelivery this letter is
    followups: list[int] = field(default_factory=list)  # letters born of its redeliveries

    @property
    def stage(self) -> str:
        return self.fields.get(LetterField.STAGE, "?")

    @property
    def source_topic(self) -> str | None:
        return self.fields.get(LetterField.SOURCE_TOPIC)

    @property
    def source_partition(self) -> int | None:
        return int_or_none(self.fields.get(LetterField.SOURCE_PARTITION))

    @property
    def source_offset(self) -> int | None:
        return int_or_none(self.fields.get(LetterField.SOURCE_OFFSET))

    @property
    def source(self) -> str:
        if self.source_topic is None:
            return "?"
        return f"{self.source_topic}[{self.source_partition}]@{self.source_offset}"

    @property
    def reason(self) -> str:
        return self.fields.get(LetterField.REASON, "")

    @property
    def attempts(self) -> int | None:
        return int_or_none(self.fields.get(LetterField.ATTEMPTS))

    @property
    def history(self) -> tuple[Attempt, ...]:
        return _history(self.fields.get(LetterField.HISTORY))[0]

    @property
    def history_error(self) -> str | None:
        return _history(self.fields.get(LetterField.HISTORY))[1]

    @property
    def time(self) -> datetime | None:
        """When it was dead-lettered: the record's timestamp, else its ``dlq.at`` header."""
        if self.timestamp_ms is not None and self.timestamp_ms >= 0:
            return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)
        return parse_time(self.fields.get(LetterField.AT))

    @property
    def was_redelivered(self) -> bool:
        return bool(self.redeliveries or self.followups)

    def as_dict(self) -> dict[str, Any]:
        moment = self.time
        return {
            "offset": self.offset,
            "time": None if moment is None else iso_time(moment),
            "stage": self.stage,
            "source": {
                "topic": self.source_topic,
                "partition": self.source_partition,
                "offset": self.source_offset,
            },
            "reason": self.reason,
            "replay_topic": self.redelivery_topic,
            "consent_id": self.consent_id,
            "app_id": self.app_id,
            "attempts": self.attempts,
            "history": [attempt.as_dict() for attempt in self.history],
            "key": _key_text(self.key),
            "decodable": self.decoded.ok,
            "replays": [mark.as_dict() for mark in self.redeliveries],
            "replay_of": self.redelivery_of,
            "replayed_again_as": list(self.followups),
        }

    def detail(self) -> dict[str, Any]:
        """Everything about the letter: :meth:`as_dict`, every header, and the value."""
        document = self.as_dict()
        document["headers"] = {name: _header_text(value) for name, value in self.raw_headers}
        if self.history_error:
            document["history_error"] = self.history_error
        document["value"] = self.decoded.as_dict(self.value)
        return document


# --- text helpers the package shares ------------------------------------------------------------


def parse_time(text: str | None) -> datetime | None:
    """An ISO time (UTC if it has no offset), or None if ``text`` is not one."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def iso_time(moment: datetime) -> str:
    """``moment`` in UTC to the millisecond, ``Z``-suffixed, as the ``dlq.*`` headers write it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def int_or_none(text: str | None) -> int | None:
    """A header's integer, or None if it is absent or not a number."""
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _history(text: str | None) -> tuple[tuple[Attempt, ...], str | None]:
    if not text:
        return (), None
    header = LetterField.HISTORY.header
    try:
        entries = json.loads(text)
    except ValueError as error:
        return (), f"{header} is not JSON: {error}"
    if not isinstance(entries, list):
        return (), f"{header} is not a JSON list of attempts"
    try:
        return tuple(_attempt(entry) for entry in entries), None
    except (ValueError, TypeError, AttributeError) as error:
        return (), f"{header} has an attempt that is not {{at, status, reason}}: {error}"


def _attempt(entry: Mapping[str, Any]) -> Attempt:
    status = entry.get("status")
    return Attempt(
        at=str(entry.get("at", "")),
        status=int(status) if status is not None else None,
        reason=str(entry.get("reason", "")),
    )


def _key_text(key: bytes | None) -> str | None:
    """A key as text when it is UTF-8 (consent and user ids are), else ``hex:...``."""
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return "hex:" + binascii.hexlify(key).decode()


def _header_text(value: bytes) -> str:
    return _key_text(value) or ""


def _jsonable(value: Any) -> Any:
    """A decoded record as JSON can carry it: times as ISO text, bytes as hex."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, bytes):
        return value.hex()
    return value
