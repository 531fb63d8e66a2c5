"""A benchmark's data: account changes and consents, generated once and produced fast.

Generation and production are set-up, never timed: changes are made by the simulation's
:class:`ChangeFactory`, encoded once with the pipeline's codec, and produced as raw bytes in
large per-partition batches, which is several times faster than one ``send`` per record.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer

from portability.broker.batches import send_batches
from portability.runtime import Runtime
from portability.simulation import ChangeFactory, user_ids
from portability.wire import CATEGORIES, Category, ConsentRecord, SchemaName, partition_for_user
from portability.wire.records import with_record_type
from portability.wire.topics import consent_key

__all__ = ["Population", "produce"]

# Raw records per partition: (key, value).
Records = dict[int, list[tuple[bytes, bytes]]]

_APPS = [f"app_{i:02d}" for i in range(1, 21)]
_BATCH_BYTES = 256 * 1024


@dataclass(slots=True)
class Population:
    """Users, the consents of some of them, and the encoded changes of all of them."""

    users: int
    changes: int
    consenting_share: float = 0.1
    seed: int = 7
    consents: list[ConsentRecord] = field(default_factory=list)
    change_records: Records = field(default_factory=dict)
    expected_decoded: int = 0  # changes of a user with at least one active consent
    expected_deltas: int = 0  # (change, consent) pairs whose category the consent grants

    def generate(self, runtime: Runtime) -> None:
        """Make the consents, then the changes (whose timestamps follow every grant)."""
        ids = user_ids(self.users)
        rnd = random.Random(self.seed)
        granted_at = datetime.now(UTC) - timedelta(days=1)
        consenting = rnd.sample(ids, int(self.users * self.consenting_share))
        granted: dict[str, list[frozenset[Category]]] = {}
        for user in consenting:
            for app in rnd.sample(_APPS, rnd.randint(1, 3)):
                categories = rnd.sample(CATEGORIES, rnd.randint(1, len(CATEGORIES)))
                self.consents.append(_consent(user, app, categories, granted_at))
                granted.setdefault(user, []).append(frozenset(categories))
        self._generate_changes(runtime, ids, granted)

    def _generate_changes(
        self, runtime: Runtime, ids: list[str], granted: dict[str, list[frozenset[Category]]]
    ) -> None:
        partitions = runtime.settings.partitions
        partition_of = {user: partition_for_user(user, partitions) for user in ids}
        keys = {user: user.encode() for user in ids}
        records: Records = defaultdict(list)
        factory = ChangeFactory(ids, seed=self.seed)
        encode = runtime.codec.encode
        for _ in range(self.changes):
            change = factory.random_change()
            user = change["user_id"]
            value = encode(SchemaName.ACCOUNT_CHANGE, dict(with_record_type(change)))
            records[partition_of[user]].append((keys[user], value))
            grants = granted.get(user)
            if grants:
                self.expected_decoded += 1
                self.expected_deltas += sum(change["category"] in g for g in grants)
        self.change_records = dict(records)


def _consent(
    user: str, app: str, categories: list[Category], granted_at: datetime
) -> ConsentRecord:
    return {
        "consent_id": f"c_{user}_{app}",
        "user_id": user,
        "app_id": app,
        "categories": categories,
        "mode": "ongoing",
        "status": "active",
        "granted_at": granted_at,
        "expires_at": None,
        "revoked_at": None,
        "version": 1,
    }


def consent_records(runtime: Runtime, consents: list[ConsentRecord]) -> Records:
    """Consents encoded as the outbox relay publishes them: key user/consent, co-partitioned."""
    records: Records = defaultdict(list)
    partitions = runtime.settings.partitions
    for consent in consents:
        user = consent["user_id"]
        records[partition_for_user(user, partitions)].append(
            (
                consent_key(user, consent["consent_id"]),
                runtime.codec.encode(SchemaName.CONSENT, dict(consent)),
            )
        )
    return dict(records)


async def produce(bootstrap: str, topic: str, records: Records) -> int:
    """Produce raw records in large batches to explicit partitions; wait for every ack."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="portability-bench-producer",
        acks="all",
        linger_ms=100,
        max_batch_size=_BATCH_BYTES,
    )
    await producer.start()
    try:
        flat = (
            (partition, key, value) for partition, pairs in records.items() for key, value in pairs
        )
        await send_batches(producer, topic, flat)
    finally:
        await producer.stop()
    return sum(len(pairs) for pairs in records.values())
