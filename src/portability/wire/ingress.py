"""The producer contract of ``account.changes``, checked where records enter the pipeline.

Every record the platform writes is accounted for: delivered, dropped for a documented reason
(no consent covers it), or dead-lettered exactly once with a :class:`Rejection`'s short reason.
The checks come in two kinds, split by what a stage reads anyway:

* **Door checks** (:meth:`Door.check`) need only the key, the partition and the first five
  bytes of the value: the Confluent frame, a schema id that names an AccountChange schema, a
  UTF-8 key, and the partition Kafka's default partitioner gives that key. They cost a few
  dictionary lookups, so the matcher runs them on every record (it reads every key) and is
  the stage that dead-letters these faults.
* **Body checks** (:meth:`Door.body_fault`) need the decoded value: the body decodes, its
  ``user_id`` is the key, ``occurred_at`` lies in a plausible window, and no field reserved
  for the pipeline is set. The current-state view decodes every record anyway and is the stage
  that dead-letters these faults; the matcher, which decodes only the records of users with a
  consent, applies the same checks before delivering and refuses (never delivers) what fails
  them, without lettering it a second time.

Both stages decide with the same functions on the same bytes, so a record gets the same
verdict from each: the stage that owns a fault letters it, and the other skips it.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from portability.wire.dead_letters import MAX_REASON_CHARS, short_reason
from portability.wire.records import AccountChange, to_millis
from portability.wire.topics import partition_for_user

__all__ = [
    "ACCOUNT_CHANGE_RECORD",
    "BODY_FAULTS",
    "DOOR_FAULTS",
    "MAX_REASON_CHARS",
    "Door",
    "Fault",
    "Rejection",
    "TimeWindow",
    "short_reason",
]

# The full name of the record every account.changes value must be written with.
ACCOUNT_CHANGE_RECORD: Final = "portability.v1.AccountChange"
# How long an id the registry did not know is remembered: a record of an unregistered
# schema costs no request each, and a schema registered since is found soon after.
UNKNOWN_ID_TTL_S: Final = 30.0
_KEY_CACHE_LIMIT: Final = 1_000_000  # keys remembered with their partition (~100 MB at most)


class Fault(enum.StrEnum):
    """Why a record of ``account.changes`` cannot be taken; the dead letter's reason starts
    with it, and metrics are labelled with it."""

    NO_VALUE = "no_value"
    NOT_FRAMED = "not_framed"
    UNKNOWN_SCHEMA_ID = "unknown_schema_id"
    WRONG_SCHEMA = "wrong_schema"
    NO_KEY = "no_key"
    BAD_KEY = "bad_key"
    WRONG_PARTITION = "wrong_partition"
    UNDECODABLE = "undecodable"
    KEY_MISMATCH = "key_mismatch"
    IMPLAUSIBLE_TIME = "implausible_time"
    RESERVED_FIELD = "reserved_field"


DOOR_FAULTS: Final = frozenset(
    {
        Fault.NO_VALUE,
        Fault.NOT_FRAMED,
        Fault.UNKNOWN_SCHEMA_ID,
        Fault.WRONG_SCHEMA,
        Fault.NO_KEY,
        Fault.BAD_KEY,
        Fault.WRONG_PARTITION,
    }
)
BODY_FAULTS: Final = frozenset(Fault) - DOOR_FAULTS


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record refused at the door or by its body: the fault and what to fix."""

    fault: Fault
    detail: str

    @property
    def reason(self) -> str:
        """The dead letter's reason: the fault, then the detail, under 300 characters."""
        return short_reason(f"{self.fault}: {self.detail}")

    @property
    def at_door(self) -> bool:
        """True for a fault the door checks find (the matcher letters those)."""
        return self.fault in DOOR_FAULTS


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Where a change's ``occurred_at`` may lie: not before ``earliest`` and not more than
    ``max_ahead`` after the record's own Kafka timestamp (the producer's clock).

    Judged against the record's timestamp rather than the clock of the stage reading it, so
    that every stage, and a replay next week, gives the same verdict. Seconds written where
    milliseconds belong land in January 1970 (before ``earliest``); microseconds land
    thousands of years ahead.
    """

    earliest: datetime
    max_ahead: timedelta
    # Both bounds in milliseconds, computed once (every decoded change is judged).
    _earliest_ms: int = field(init=False, repr=False, compare=False)
    _ahead_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_earliest_ms", to_millis(self.earliest))
        object.__setattr__(self, "_ahead_ms", self.max_ahead // timedelta(milliseconds=1))

    def fault(self, occurred_at: datetime, record_timestamp_ms: int) -> str | None:
        """What is wrong with ``occurred_at``, or None when it is plausible."""
        occurred_ms = to_millis(occurred_at)
        if occurred_ms < self._earliest_ms:
            return (
                f"occurred_at {occurred_ms} ms is before {self.earliest:%Y-%m-%d} "
                "(seconds where milliseconds belong?)"
            )
        if record_timestamp_ms > 0 and occurred_ms > record_timestamp_ms + self._ahead_ms:
            ahead_s = (occurred_ms - record_timestamp_ms) / 1000
            return (
                f"occurred_at {occurred_ms} ms is {ahead_s:.0f} s after the record's "
                f"timestamp (at most {self.max_ahead.total_seconds():.0f} s; microseconds?)"
            )
        return None


DEFAULT_WINDOW: Final = TimeWindow(datetime(2000, 1, 1, tzinfo=UTC), timedelta(hours=1))


class RawRecord(Protocol):
    """What the checks read of a consumed record (aiokafka's ``ConsumerRecord`` has it)."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def partition(self) -> int: ...

    @property
    def timestamp(self) -> int: ...


class SchemaSource(Protocol):
    """Where the door learns the writer schema of an id it has not seen: the codec, so that a
    process fetches each id once and shares the codec's memory of unknown ids."""

    async def load_schema_id(self, schema_id: int) -> bool: ...

    def writer_name(self, schema_id: int) -> str | None: ...


class Door:
    r"""The producer contract's checks for one process; verdicts on schema ids and keys are
    remembered, so a record costs a few lookups.

    :meth:`verdict` checks a record, looking a new schema id up first. A hot loop calls the
    synchronous :meth:`check` instead and ``await``\ s :meth:`verdict` only when it returns
    :data:`UNRESOLVED` (the record's schema id is new).
    """

    UNRESOLVED: Final = Rejection(Fault.UNKNOWN_SCHEMA_ID, "not looked up yet")

    def __init__(
        self, schemas: SchemaSource, partitions: int, window: TimeWindow = DEFAULT_WINDOW
    ) -> None:
        self._schemas = schemas
        self._partitions = partitions
        self.window = window
        # Verdicts per 4-byte schema id as framed: None means an AccountChange schema.
        self._ids: dict[bytes, Rejection | None] = {}
        # The frames (magic byte and id) of the AccountChange ids: one ``startswith`` per
        # record instead of the checks of :meth:`_frame_fault`.
        self._accepted: tuple[bytes, ...] = ()
        self._places: dict[bytes, int] = {}  # key -> its partition (-1: not UTF-8)
        self._unknown_since: float | None = None  # when the oldest unknown id was remembered

    def check(self, record: RawRecord) -> Rejection | None:
        """The door's verdict on ``record``: None when it may go on to be matched."""
        value = record.value
        if value is None or not value.startswith(self._accepted):
            rejection = self._frame_fault(value)
            if rejection is not None:
                return rejection
        key = record.key
        if not key:
            return Rejection(Fault.NO_KEY, "record has no key (the key must be the user id)")
        place = self._places.get(key)
        if place is None:
            place = self._place(key)
        if place != record.partition:
            if place < 0:
                return Rejection(Fault.BAD_KEY, f"key {key[:40]!r} is not UTF-8")
            return Rejection(
                Fault.WRONG_PARTITION,
                f"key {_shown(key)} belongs in partition {place} (murmur2), not {record.partition}",
            )
        return None

    def _frame_fault(self, value: bytes | None) -> Rejection | None:
        """The checks of a value's frame and schema id (:meth:`check` skips them for a value
        starting with an accepted frame)."""
        if value is None:
            return Rejection(Fault.NO_VALUE, "record has no value (a tombstone?)")
        if len(value) < 5 or value[0] != 0:
            return Rejection(
                Fault.NOT_FRAMED,
                f"value of {len(value)} bytes does not start with the Confluent frame "
                "(magic byte 0, 4-byte big-endian schema id)",
            )
        return self._ids.get(value[1:5], self.UNRESOLVED)

    def _remember(self, ids: dict[bytes, Rejection | None]) -> None:
        """Take ``ids`` as the verdicts per id, and their accepted frames."""
        self._ids = ids
        self._accepted = tuple(b"\x00" + framed for framed, v in ids.items() if v is None)

    async def verdict(self, record: RawRecord) -> Rejection | None:
        """:meth:`check`, looking the record's schema id up first if it is new (the path for
        callers that need not avoid a coroutine per record)."""
        rejection = self.check(record)
        if rejection is self.UNRESOLVED:
            await self.learn(self.schema_id_of(record))
            rejection = self.check(record)
        return rejection

    @staticmethod
    def schema_id_of(record: RawRecord) -> int:
        """The schema id in a framed value (call only after :meth:`check` said UNRESOLVED)."""
        value = record.value or b""  # check() returns UNRESOLVED only for framed values
        return int.from_bytes(value[1:5], "big")

    async def learn(self, schema_id: int) -> None:
        """Look ``schema_id`` up and remember whether it names an AccountChange schema.

        Raises:
            SchemaRegistryError: the registry could not be asked (retriable); the caller
                retries the batch rather than dead-lettering good records.
        """
        framed = schema_id.to_bytes(4, "big")
        if not await self._schemas.load_schema_id(schema_id):
            self._ids[framed] = Rejection(
                Fault.UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is not in the schema registry"
            )
            if self._unknown_since is None:
                self._unknown_since = time.monotonic()
            return
        name = self._schemas.writer_name(schema_id)
        verdict = None
        if name != ACCOUNT_CHANGE_RECORD:
            verdict = Rejection(
                Fault.WRONG_SCHEMA,
                f"schema id {schema_id} is {name or 'not a record schema'}, "
                f"not {ACCOUNT_CHANGE_RECORD}",
            )
        self._remember({**self._ids, framed: verdict})

    def expire_unknown(self, now: float | None = None) -> None:
        """Forget ids the registry did not know once they are :data:`UNKNOWN_ID_TTL_S` old, so
        that a schema registered since is found; call between batches (it is cheap)."""
        now = time.monotonic() if now is None else now
        if self._unknown_since is None or now - self._unknown_since < UNKNOWN_ID_TTL_S:
            return
        self._unknown_since = None
        self._remember(
            {
                framed: verdict
                for framed, verdict in self._ids.items()
                if verdict is None or verdict.fault is not Fault.UNKNOWN_SCHEMA_ID
            }
        )

    def body_fault(self, record: RawRecord, change: AccountChange) -> Rejection | None:
        """The body checks of a decoded change: None when it may be delivered."""
        if record.key is None or change["user_id"].encode() != record.key:
            return Rejection(
                Fault.KEY_MISMATCH,
                f"key {_shown(record.key)} is not the value's user_id "
                f"{_shown(change['user_id'].encode())}",
            )
        late = self.window.fault(change["occurred_at"], record.timestamp)
        if late is not None:
            return Rejection(Fault.IMPLAUSIBLE_TIME, late)
        if change.get("audience") is not None:
            return Rejection(
                Fault.RESERVED_FIELD, "audience is written by the matcher only; leave it null"
            )
        return None

    def _place(self, key: bytes) -> int:
        try:
            user_id = key.decode()
        except UnicodeDecodeError:
            place = -1
        else:
            place = partition_for_user(user_id, self._partitions)
        if len(self._places) >= _KEY_CACHE_LIMIT:
            self._places.clear()  # users recur; a rare full rebuild beats an LRU per record
        self._places[key] = place
        return place


def _shown(key: bytes | None) -> str:
    """A key for a reason or a log line: at most 64 characters."""
    if key is None:
        return "None"
    text = key.decode(errors="replace")
    return repr(text if len(text) <= 64 else text[:61] + "...")
