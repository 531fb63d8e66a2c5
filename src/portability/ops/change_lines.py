"""One line of ``portability changes publish``'s input, checked and made into a record.

The checks are the producer contract of :mod:`portability.wire.ingress` as far as it can be
judged before a record exists: the line is UTF-8 JSON, an AccountChange by the schema (see
:mod:`portability.ops.change_json`), has a user id to key by, an ``occurred_at`` within the
plausible window around now, and no field reserved for the pipeline. Lines are read with a
length limit, so no input can make the reader hold more than one limit's worth of a line.
"""

from __future__ import annotations

import io
import json
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Final

from portability.ops.change_json import ChangeFormatError, change_from_json
from portability.privacy import is_audience_record_id, platform_headers
from portability.wire.codec import AvroCodec
from portability.wire.errors import WireFormatError
from portability.wire.ingress import Fault, TimeWindow, short_reason
from portability.wire.records import AccountChange, with_record_type
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_user

__all__ = ["DEFAULT_MAX_LINE_BYTES", "LineChecker", "LineReader", "LineRejection", "PreparedRecord"]

DEFAULT_MAX_LINE_BYTES: Final = 1_048_576  # Kafka's default message.max.bytes is about this
_SKIP_CHUNK: Final = 64 * 1024  # an over-long line is skipped in chunks of this


@dataclass(frozen=True, slots=True)
class LineRejection:
    """A line that is not sent, and why (one line of text)."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class PreparedRecord:
    """A checked line as the record it becomes: key, partition, value bytes, headers."""

    line: int
    change: AccountChange
    key: bytes
    partition: int
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int  # the record's timestamp: the one its occurred_at was checked against

    @property
    def schema_id(self) -> int:
        """The schema id in the value's frame."""
        return AvroCodec.frame_schema_id(self.value)

    def as_dict(self) -> dict[str, Any]:
        """Where the record goes and what it is, for ``--dry-run --json``."""
        return {
            "line": self.line,
            "user_id": self.change["user_id"],
            "change_id": self.change["change_id"],
            "category": self.change["category"],
            "operation": self.change["operation"],
            "record_id": self.change["record_id"],
            "key": self.key.decode(),
            "partition": self.partition,
            "schema_id": self.schema_id,
            "headers": {name: value.decode() for name, value in self.headers},
            "value_bytes": len(self.value),
            "value_hex": self.value.hex(),
        }


class LineReader:
    """Numbered lines of a binary stream, none read into memory past ``max_bytes``.

    A longer line is skipped in small chunks up to its end and reported, so a file without
    newlines cannot exhaust memory.
    """

    def __init__(self, stream: IO[bytes], max_bytes: int) -> None:
        self._stream = stream
        self._max = max_bytes
        self.number = 0
        self.bytes_read = 0
        self._poller: select.poll | None = select.poll()
        try:
            self._poller.register(stream.fileno(), select.POLLIN)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            self._poller = None  # in memory: reading never waits

    def batch(self, size: int) -> list[tuple[int, bytes | None, int]]:
        """Up to ``size`` lines as (number, content or None if too long, length in bytes).

        Waits for the first line only: from a pipe that has nothing more now (a platform
        writing a line at a time), the lines at hand are returned, not held until ``size``
        of them arrived (they waited for 256 lines, or the end of the input). A line still
        in the stream's buffer is read at once by the next call.
        """
        lines: list[tuple[int, bytes | None, int]] = []
        while len(lines) < size:
            if lines and not self._more_at_hand():
                break
            line = self._stream.readline(self._max + 2)  # room for the content and "\r\n"
            if not line:
                break
            self.number += 1
            length = len(line)
            ended = line.endswith(b"\n")
            content = line.rstrip(b"\r\n") if ended or length <= self._max else line
            if len(content) > self._max:
                if not ended:
                    length += self._skip_rest()
                lines.append((self.number, None, length))
            else:
                lines.append((self.number, content, length))
            self.bytes_read += length
        return lines

    def _more_at_hand(self) -> bool:
        """Whether reading on would not wait: a file, or a pipe with bytes (or its end) in it."""
        return self._poller is None or bool(self._poller.poll(0))

    def _skip_rest(self) -> int:
        skipped = 0
        while True:  # ends at the newline or the end of the stream: each pass reads on
            chunk = self._stream.readline(_SKIP_CHUNK)
            skipped += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                return skipped


class LineChecker:
    """Turns one JSON line into the record it must become, or says why it cannot."""

    def __init__(
        self,
        codec: AvroCodec,
        partitions: int,
        window: TimeWindow,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._codec = codec
        self._partitions = partitions
        self._window = window
        self._clock = clock

    def check(self, number: int, line: bytes) -> PreparedRecord | LineRejection:
        """The record of ``line``, or the rejection naming what to fix."""
        try:
            document = _parse(line)
            _check_key(document)
            change = change_from_json(document)
        except ChangeFormatError as error:
            return LineRejection(number, short_reason(str(error)))
        # The record's timestamp is set to this moment, so the pipeline judges occurred_at
        # against the very clock reading this check used.
        now_ms = int(self._clock() * 1000)
        problem = _contract_problem(change, self._window, now_ms)
        if problem is not None:
            return LineRejection(number, short_reason(problem))
        try:
            value = self._codec.encode(SchemaName.ACCOUNT_CHANGE, dict(with_record_type(change)))
        except WireFormatError as error:
            return LineRejection(number, short_reason(f"does not encode: {error}"))
        user_id = change["user_id"]
        return PreparedRecord(
            line=number,
            change=change,
            key=user_id.encode(),
            partition=partition_for_user(user_id, self._partitions),
            value=value,
            headers=tuple(platform_headers(change)),
            timestamp_ms=now_ms,
        )


def _parse(line: bytes) -> object:
    """The JSON value of a line; duplicate fields are refused (JSON keeps the last silently)."""
    try:
        text = line.decode()
    except UnicodeDecodeError as error:
        raise ChangeFormatError(f"not UTF-8 (byte {error.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except ChangeFormatError:
        raise
    except RecursionError:
        raise ChangeFormatError("not JSON: nested too deeply") from None
    except ValueError as error:
        raise ChangeFormatError(f"not JSON: {error}") from None


def _check_key(document: object) -> None:
    """The door's key faults, named as the pipeline names them: the key is the user id."""
    user_id = document.get("user_id") if isinstance(document, dict) else None
    if not isinstance(user_id, str):
        return  # missing or not a string: the schema check says so
    if not user_id:
        raise ChangeFormatError(
            f"{Fault.NO_KEY}: user_id is empty; it is the record's key, which must name the user"
        )
    try:
        user_id.encode()
    except UnicodeEncodeError:
        raise ChangeFormatError(
            f"{Fault.BAD_KEY}: user_id is not valid UTF-8 (a lone surrogate escape such as "
            "\\ud800?); the key is its UTF-8 bytes"
        ) from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise ChangeFormatError(f"field {name!r} appears twice")
            seen.add(name)
    return document


def _contract_problem(change: AccountChange, window: TimeWindow, now_ms: int) -> str | None:
    """What the producer contract refuses in a well-typed change (the body checks of
    :mod:`portability.wire.ingress` that apply before a record exists), or None."""
    if change.get("audience") is not None:
        return f"{Fault.RESERVED_FIELD}: audience is written by the matcher only; leave it null"
    if is_audience_record_id(change["record_id"]):
        # The matcher's audience figures of a post; a snapshot or archive leaves them out.
        return "record_id: ids ending in /audience are reserved for the matcher's audience figures"
    late = window.fault(change["occurred_at"], now_ms)
    if late is not None:
        return f"{Fault.IMPLAUSIBLE_TIME}: {late}"
    has_record = change["record"] is not None
    if change["operation"] == "upsert" and not has_record:
        return "record: an upsert carries the record's new state; it must not be null"
    if change["operation"] == "delete" and has_record:
        return "record: a delete carries no record (null); say what it removed in context"
    return None
