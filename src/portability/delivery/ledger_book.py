"""The ledger book: each consent's hash chain as this worker delivers it.

Each event an app receives for a consent (delta, snapshot page, removal, download notice)
extends the consent's chain (:mod:`portability.webhooks.ledger`) in the order the app receives
it, and carries the value after it. :meth:`LedgerBook.extension` computes a request's values
from the chain's head (the same values on every attempt of the same events), and
:meth:`LedgerBook.delivered` moves the head when the app accepted them: the chain covers what
the app received, so a dead-lettered event is not in it.

The heads are recorded on the compacted ``delivery.ledger`` topic by the commit loop, after
the message log's entries and before the offsets (the latest per consent, every 0.1 s),
partitioned by consent like deliveries. A worker that takes a partition over reads its
heads before delivering anything of it (see
:class:`~portability.delivery.partitions.Partitions`) and continues from them. Any recorded
head is the true head after some delivered event, because the chain is a function of the
events delivered, in lane order: the events after it (delivered again after a crash, or for
the first time) get the values they had or would have had. Events at or before a restored
head were delivered already and are not sent again (:meth:`LedgerBook.delivered_before`),
except a dead letter an operator redelivers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from portability.broker.batches import send_batches
from portability.delivery.lanes import Item
from portability.delivery.stats import DeliveryStats
from portability.webhooks.ledger import chain as chain_values
from portability.webhooks.ledger import start
from portability.webhooks.payload import ledger_digest, notification_digest
from portability.wire.codec import AvroCodec
from portability.wire.delivery_log_encoder import EncodedLedger, LedgerHeadEncoder
from portability.wire.errors import WireFormatError
from portability.wire.notifications import AUTHORIZATION_REMOVED
from portability.wire.schemas import SchemaName

__all__ = ["Extension", "LedgerBook"]

Order = tuple[int, int, int, int]

# The role's logger, whichever part of the worker writes: operators filter its lines by one name.
log = logging.getLogger("portability.delivery.worker")


@dataclass(slots=True)
class _Chain:
    """A consent's chain after its latest delivered event."""

    app_id: str
    partition: int  # of the consent's deliveries, and of its head on delivery.ledger
    head: str
    events: int = 0
    deltas: int = 0
    pages: int = 0
    removals: int = 0
    order: Order = (0, 0, 0, 0)
    identity: str = ""


@dataclass(frozen=True, slots=True)
class Extension:
    """A request's chain values: one per event, and the counts once it is delivered."""

    before: str
    values: list[str]
    events: int
    deltas: int
    pages: int
    removals: int

    @property
    def logged(self) -> EncodedLedger:
        return (
            self.before,
            self.values[-1],
            self.events,
            self.deltas,
            self.pages,
            self.removals,
        )


class LedgerBook:
    """The chains of this worker's consents; heads recorded at each commit (see above)."""

    def __init__(
        self, producer: AIOKafkaProducer, codec: AvroCodec, topic: str, stats: DeliveryStats
    ) -> None:
        self._producer = producer
        self._stats = stats
        self._codec = codec
        self._heads = LedgerHeadEncoder(codec.schema_id(SchemaName.LEDGER_HEAD))
        self._topic = topic
        self._chains: dict[str, _Chain] = {}
        self.restored: dict[str, tuple[Order, str]] = {}  # delivered up to here, before us
        self._dirty: set[str] = set()

    def extension(self, consent_id: str, items: Sequence[Item]) -> Extension:
        """The chain values of ``items`` (one request, in lane order) from the current head."""
        chain = self._chains.get(consent_id)
        head = start(consent_id) if chain is None else chain.head
        counts = [0, 0, 0] if chain is None else [chain.deltas, chain.pages, chain.removals]
        if items[0].delivery is not None:
            # A batch of deltas (a request holds deltas only, or one notification): the
            # matcher's digests as a rule, ledger_digest() computing a missing one.
            digests = [
                head_["ledger_digest"] or ledger_digest(head_)
                for head_ in (item.delivery for item in items)
                if head_ is not None
            ]
            counts[0] += len(digests)
        else:
            digests = []
            for item in items:
                if item.notification is not None:
                    digests.append(notification_digest(item.notification))
                    if item.page is not None:
                        counts[1] += 1
                    elif item.notification["event_type"] == AUTHORIZATION_REMOVED:
                        counts[2] += 1
        values = chain_values(head, digests)
        events = (0 if chain is None else chain.events) + len(values)
        return Extension(head, values, events, counts[0], counts[1], counts[2])

    def delivered(self, consent_id: str, items: Sequence[Item], extension: Extension) -> None:
        """The app accepted ``items``: the chain's head moves past them."""
        chain = self._chains.get(consent_id)
        if chain is None:
            chain = self._chains[consent_id] = _Chain(
                items[0].app_id, items[0].tp.partition, extension.before
            )
        chain.head = extension.values[-1]
        chain.events, chain.deltas = extension.events, extension.deltas
        chain.pages, chain.removals = extension.pages, extension.removals
        chain.order, chain.identity = items[-1].order, items[-1].identity
        self._dirty.add(consent_id)

    def delivered_before(self, item: Item) -> bool:
        """Whether ``item`` was delivered before this worker restored its consent's head."""
        restored = self.restored.get(item.consent_id)
        if restored is None or item.replayed_from is not None:
            return False
        order, identity = restored
        return item.order < order or item.identity == identity

    def restore(self, partition: int, offset: int, value: bytes | None) -> None:
        """Take a recorded head (read while its partition loads).

        A head that does not decode is skipped with a warning (and counted): the chain goes
        on from the consent's latest readable head, and the consent's ledger on the API
        shows the difference an app would see, rather than the partition never loading.
        """
        if value is None:
            return
        try:
            record: Mapping[str, Any] = self._codec.decode(SchemaName.LEDGER_HEAD, value)
        except WireFormatError as error:
            self._stats.ledger_heads_unreadable += 1
            log.warning(
                "ledger head skipped at %s partition %d offset %d: %s",
                self._topic,
                partition,
                offset,
                error,
                extra={
                    "event": "delivery.ledger_head_unreadable",
                    "topic": self._topic,
                    "partition": partition,
                    "offset": offset,
                },
            )
            return
        consent_id = record["consent_id"]
        known = self._chains.get(consent_id)
        if known is not None and known.events >= record["events"]:
            return  # an older head recorded before a later one of the same chain
        epoch, kind, place, page = record["order"]
        order: Order = (epoch, kind, place, page)
        self._chains[consent_id] = _Chain(
            record["app_id"],
            partition,
            record["head"],
            record["events"],
            record["deltas"],
            record["pages"],
            record["removals"],
            order,
            record["identity"],
        )
        self.restored[consent_id] = (order, record["identity"])

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked: their chains are the next owner's (recorded by then)."""
        for consent_id in [
            consent_id
            for consent_id, chain in self._chains.items()
            if chain.partition in partitions
        ]:
            self._chains.pop(consent_id, None)
            self.restored.pop(consent_id, None)
            self._dirty.discard(consent_id)

    def take(self) -> list[tuple[str, int, bytes]]:
        """The heads that moved since the last take, encoded: ``(consent, partition, value)``.

        Taken before the message log is flushed and recorded after it (see
        :meth:`Partitions.commit <portability.delivery.partitions.Partitions.commit>`): a head
        never says an event was delivered before its log entry is on the broker.
        """
        dirty, self._dirty = self._dirty, set()
        now_ms = int(time.time() * 1000)
        encode = self._heads.encode
        heads = []
        for consent_id in dirty:
            chain = self._chains.get(consent_id)
            if chain is None:
                continue
            value = encode(
                consent_id=consent_id,
                app_id=chain.app_id,
                head=chain.head,
                counts=(chain.events, chain.deltas, chain.pages, chain.removals),
                order=chain.order,
                identity=chain.identity,
                recorded_at_ms=now_ms,
            )
            heads.append((consent_id, chain.partition, value))
        return heads

    async def record(self, heads: list[tuple[str, int, bytes]]) -> None:
        """Produce heads :meth:`take` gave, and wait for the broker's acks."""
        await send_batches(
            self._producer,
            self._topic,
            ((partition, consent_id.encode(), value) for consent_id, partition, value in heads),
        )

    def give_back(self, heads: list[tuple[str, int, bytes]]) -> None:
        """Heads not recorded: recorded with the next ones (their latest state then)."""
        self._dirty.update(consent_id for consent_id, _, _ in heads)
