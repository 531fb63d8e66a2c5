"""What the current-state view takes from ``account.changes``, and the dead letters it owns.

The view decodes every change, so it is the stage that dead-letters a change whose *body*
breaks the producer contract (:data:`portability.wire.ingress.BODY_FAULTS`: undecodable,
key not the value's user id, implausible ``occurred_at``, a reserved field set), whoever its
user is. Records failing the door checks (frame, schema id, key, partition) are the
matcher's to letter: the view skips them, counted, and never letters them a second time.

It also watches the one hint the matcher relies on without decoding: activity on another
user's post must carry the ``portability.audience`` header, or the creator's audience figures
miss it (unless the actor holds a consent, whose changes the matcher decodes anyway). The
view reports a missing or wrong hint (a counter and a warning naming partition and offset);
the change itself is valid and applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord

from portability.privacy.audience import UPDATE_MARKER, audience_marker, platform_headers
from portability.runtime import Runtime
from portability.wire.dead_letters import DeadLetter
from portability.wire.errors import WireFormatError
from portability.wire.headers import LetterField
from portability.wire.ingress import Door, Fault, Rejection
from portability.wire.records import AccountChange
from portability.wire.schemas import SchemaName

__all__ = ["IntakeStats", "ViewIntake"]

log = logging.getLogger(__name__)

STAGE = "state"


@dataclass(slots=True)
class IntakeStats:
    """What the view's intake decided, by fault."""

    # Door faults: the matcher dead-letters these; the view skips them.
    skipped_at_door: Counter[str] = field(default_factory=Counter)
    # Body faults, dead-lettered by the view.
    dead_lettered_by_fault: Counter[str] = field(default_factory=Counter)
    audience_hints_missing: int = 0  # activity on another's post without the right header
    updates_skipped: int = 0  # the matcher's audience updates: not a user's record

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_lettered_by_fault.values())

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types. Not dataclasses.asdict: it rebuilds a Counter from its (key, count)
        pairs, counting the pairs, and /stats/ then failed on the tuple keys."""
        plain = {item.name: getattr(self, item.name) for item in fields(self)}
        return plain | {k: dict(v) for k, v in plain.items() if isinstance(v, Counter)}


class ViewIntake:
    """Decodes and checks the view's records; sends the dead letters the view owns.

    The acknowledgements of the letters sent are collected; :meth:`take_letters` hands them
    to the batch, which waits for them before it commits (a letter is never lost to a crash).
    """

    def __init__(self, runtime: Runtime, producer: AIOKafkaProducer) -> None:
        self._codec = runtime.codec
        self._producer = producer
        self._dead_letters = runtime.topics.dead_letters
        self._door = Door(
            runtime.codec, runtime.settings.partitions, runtime.settings.ingress_window()
        )
        self._letters: list[asyncio.Future[Any]] = []
        self.stats = IntakeStats()

    async def take(self, record: ConsumerRecord[bytes, bytes]) -> AccountChange | None:
        """The change ``record`` carries, checked; None when it is not the view's to apply."""
        marker = audience_marker(record.headers) if record.headers else None
        if marker == UPDATE_MARKER:
            self.stats.updates_skipped += 1
            return None
        door = await self._door.verdict(record)
        if door is not None:
            self.stats.skipped_at_door[door.fault] += 1
            return None
        try:
            change: AccountChange = await self._codec.decode_fetching(
                SchemaName.ACCOUNT_CHANGE, record.value
            )
        except WireFormatError as error:
            await self._letter(record, Rejection(Fault.UNDECODABLE, str(error)))
            return None
        body = self._door.body_fault(record, change)
        if body is not None:
            await self._letter(record, body)
            return None
        self._check_hint(record, change, marker)
        return change

    def begin_batch(self) -> None:
        """Once per batch, not per record: let schema ids the registry did not know be asked
        again once their time is up (a schema registered since is then found)."""
        self._door.expire_unknown()

    def take_letters(self) -> list[asyncio.Future[Any]]:
        """The acknowledgements of the letters sent since the last call."""
        letters, self._letters = self._letters, []
        return letters

    async def _letter(self, record: ConsumerRecord[bytes, bytes], rejection: Rejection) -> None:
        fault: dict[str, str] = {LetterField.FAULT: str(rejection.fault)}
        letter = DeadLetter.of(record, reason=rejection.reason, stage=STAGE, extra=fault)
        log.warning(
            "state view dead-letters %s[%d]@%d: %s",
            record.topic,
            record.partition,
            record.offset,
            rejection.detail,
            extra=letter.log_fields(),
        )
        self.stats.dead_lettered_by_fault[rejection.fault] += 1
        self._letters.append(
            await self._producer.send(
                self._dead_letters, letter.value, key=letter.key, headers=letter.headers()
            )
        )

    def _check_hint(
        self, record: ConsumerRecord[bytes, bytes], change: AccountChange, marker: bytes | None
    ) -> None:
        """Report activity on another user's post whose audience header is missing or wrong."""
        expected = platform_headers(change)
        if not expected or expected[0][1] == marker:
            return
        self.stats.audience_hints_missing += 1
        log.warning(
            "%s[%d]@%d is activity on another user's post with header %s=%r, expected %r: the "
            "creator's audience figures miss it unless the actor holds a consent",
            record.topic,
            record.partition,
            record.offset,
            expected[0][0],
            marker,
            expected[0][1],
            extra={"topic": record.topic, "partition": record.partition, "offset": record.offset},
        )
