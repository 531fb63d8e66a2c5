"""Signing secrets end to end: sealed on the apps topic, rotated safely, and 401s retried.

Real parts: the broker, a SQLite consent store and its outbox relay, the delivery worker, and
the reference receiver over HTTP, which verifies every request with the unmodified
``standardwebhooks`` package and answers 401 when no signature verifies.

- A rotation repeated at once keeps the first secret signing: a receiver that still holds it
  keeps verifying every delivery during the overlap (before, the second rotation dropped it,
  and with 401 final one repeated call dead-lettered everything).
- A receiver answering 401 (its secret mixed up) gets every delta once it is fixed: every
  non-2xx but 410 is retried on the schedule.
- The apps topic carries no ``whsec_`` and no secret bytes; a worker with the key verifies
  deliveries end to end; one with a wrong key runs on, names the problem and delivers
  nothing (and dead-letters nothing) until a worker with the right key takes over.
- Rotating the sealing key: re-sealed with the new key, a worker holding only the new key
  delivers.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr
from sqlalchemy.engine import Engine

import waiting
from portability.broker import EmbeddedBroker
from portability.consent import ConsentService, OutboxRelay, create_store_engine, init_schema
from portability.consent.resealing import seal_stored_secrets
from portability.delivery import DeliveryWorker
from portability.matching import delta_id
from portability.receiver import ReceivingApp, run_receiver
from portability.runtime import Runtime
from portability.sealing import SecretsKey, SecretsKeys
from portability.settings import Settings
from portability.simulation import ChangeFactory
from portability.webhooks.payload import rendered_delta
from portability.webhooks.signing import generate_secret
from portability.wire.records import DeliveryRecord
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_consent
from running_roles import running

APP = "app-sealed"
wait_until = functools.partial(waiting.wait_until, timeout_s=30.0)


@dataclass(slots=True)
class Stand:
    """A consent store with its keys, a real receiver, and deliveries produced as the matcher
    does; workers are started by each test."""

    runtime: Runtime
    engine: Engine
    service: ConsentService
    relay: OutboxRelay
    receiver: ReceivingApp
    receiver_url: str
    factory: ChangeFactory = field(default_factory=lambda: ChangeFactory(["nobody"], seed=5))
    produced: dict[str, list[DeliveryRecord]] = field(default_factory=dict)

    def register(self) -> str:
        """Register the app; return its first secret (shown once, as the API does)."""
        view = self.service.register_app(APP, f"{self.receiver_url}/webhooks/{APP}", APP)
        return view.signing_secret

    async def publish(self) -> None:
        """Publish what the outbox holds (the apps topic) as the API's relay would."""
        while await self.relay.publish_pending():
            pass

    async def produce(self, consent_id: str, count: int) -> None:
        earlier = self.produced.setdefault(consent_id, [])
        records: list[DeliveryRecord] = []
        for _ in range(count):
            change = self.factory.random_change(f"user-{consent_id}", "post")
            record: DeliveryRecord = {
                "delta_id": delta_id(consent_id, change["change_id"]),
                "consent_id": consent_id,
                "app_id": APP,
                "user_id": change["user_id"],
                "sequence": len(earlier) + len(records) + 1,
                "change": change,
                "matched_at": datetime.now(UTC),
                "snapshot_epoch": 0,
                "source_offset": len(earlier) + len(records),
            }
            record["rendered"] = rendered_delta(record)
            records.append(record)
        producer = self.runtime.kafka.producer("test-sealed-deliveries")
        await producer.start()
        try:
            partition = partition_for_consent(consent_id, self.runtime.settings.partitions)
            sent = [
                await producer.send(
                    self.runtime.topics.deliveries,
                    self.runtime.codec.encode(SchemaName.DELIVERY, dict(record)),
                    key=consent_id.encode(),
                    partition=partition,
                )
                for record in records
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
        earlier += records

    def received_in_order(self, consent_id: str) -> bool:
        wanted = [r["sequence"] for r in self.produced[consent_id]]
        return [d.sequence for d in self.receiver.deltas(consent_id)] == wanted

    async def apps_topic(self) -> list[bytes]:
        """Every raw value on the apps topic, from its start."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.runtime.kafka.bootstrap)
        await consumer.start()
        try:
            tp = TopicPartition(self.runtime.topics.apps, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            values: list[bytes] = []
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=500)
                values += [record.value for record in batch.get(tp, []) if record.value]
            return values
        finally:
            await consumer.stop()


def with_settings(runtime: Runtime, **update: object) -> Runtime:
    return dataclasses.replace(runtime, settings=runtime.settings.model_copy(update=update))


@pytest.fixture
async def stand(broker: EmbeddedBroker, settings: Settings) -> AsyncIterator[Stand]:
    fast = settings.model_copy(
        update={
            # Ten quick attempts: every test ends well before a delivery would be given up.
            "delivery_retry_schedule_s": [0, 0.05, 0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3],
            "delivery_retry_jitter": 0.1,
            "delivery_circuit_failures": 1000,
        }
    )
    runtime = await Runtime.open(fast, broker.bootstrap)
    engine = create_store_engine(fast.resolved_database_url())
    init_schema(engine)
    # The development key in the data folder: the same one the workers below read.
    service = ConsentService(engine, secrets=SecretsKeys.from_settings(fast))
    receiver = ReceivingApp()
    try:
        async with (
            run_receiver(receiver) as url,
            OutboxRelay(engine, runtime) as relay,
        ):
            yield Stand(runtime, engine, service, relay, receiver, url)
    finally:
        engine.dispose()
        await runtime.close()


async def test_rotating_twice_at_once_keeps_the_first_secret_verifying(stand: Stand) -> None:
    first = stand.register()
    stand.receiver.add_app(APP, first)  # the app has not picked up any new secret yet
    # The misuse: a rotation repeated at once (a retried request, a double click).
    _, one = stand.service.rotate_secret(APP, 3600)
    _, two = stand.service.rotate_secret(APP, 3600)
    assert len({first, one.secret, two.secret}) == 3
    assert stand.service.get_app(APP).signing_secrets == [two.secret, one.secret, first]
    await stand.publish()
    await stand.produce("cns_rot", 6)

    async with running(DeliveryWorker(stand.runtime)) as worker:
        await wait_until(lambda: stand.received_in_order("cns_rot"), "6 deltas, in order")

        stats = stand.receiver.stats()
        assert (stats.verification_failures, stats.duplicates) == (0, 0)
        assert (worker.stats.failures, worker.stats.dead_lettered) == (0, 0)


async def test_a_receiver_answering_401_gets_the_delta_once_fixed(stand: Stand) -> None:
    secret = stand.register()
    stand.receiver.add_app(APP, generate_secret())  # any secret but the app's: mixed up
    await stand.publish()
    await stand.produce("cns_401", 1)

    async with running(DeliveryWorker(stand.runtime)) as worker:
        await wait_until(
            lambda: stand.receiver.stats().verification_failures >= 3, "three 401 answers"
        )
        stand.receiver.add_app(APP, secret)  # the app fixes its secret
        await wait_until(lambda: stand.received_in_order("cns_401"), "the delta, after 401s")

        assert stand.receiver.stats().duplicates == 0
        assert worker.stats.retries >= 3
        assert worker.stats.dead_lettered == 0


async def test_the_apps_topic_carries_no_secret(stand: Stand) -> None:
    first = stand.register()
    _, rotation = stand.service.rotate_secret(APP, 3600)
    await stand.publish()

    values = await stand.apps_topic()

    assert len(values) == 2
    for secret in (first, rotation.secret):
        raw = base64.b64decode(secret.removeprefix("whsec_"))
        for value in values:
            assert b"whsec_" not in value
            assert secret.encode() not in value
            assert raw not in value
    for value in values:
        decoded = stand.runtime.codec.decode(SchemaName.APP, value)
        assert decoded["signing_secrets"] == []
        assert all(s.startswith("sealed:v1:local:") for s in decoded["sealed_signing_secrets"])


async def test_a_worker_with_a_wrong_key_names_it_and_waits_for_the_right_one(
    stand: Stand, caplog: pytest.LogCaptureFixture
) -> None:
    secret = stand.register()
    stand.receiver.add_app(APP, secret)
    await stand.publish()
    await stand.produce("cns_key", 3)
    # Another key under the sealing key's id: what a copy-paste mistake in a deployment does.
    wrong = with_settings(stand.runtime, secrets_key=SecretStr(SecretsKey.generate("local").text()))

    with caplog.at_level(logging.ERROR, logger="portability.delivery.directory"):
        async with running(DeliveryWorker(wrong)) as worker:
            await wait_until(lambda: worker.stats.failures >= 3, "three failed attempts")
            problem = worker.directory.secrets_problem(APP)
            assert problem is not None
            assert "key 'local' of PORTABILITY_SECRETS_KEY does not open it" in problem
            assert worker.stats.dead_lettered == 0  # retried, not given up
            assert stand.receiver.stats().requests == 0  # never sent unsigned

    assert [r.getMessage() for r in caplog.records].count(problem) == 1  # once, at catch-up
    assert secret not in caplog.text
    # A group of its own: it starts at once, without waiting for the old member's session.
    right = with_settings(stand.runtime, delivery_group=f"{wrong.settings.delivery_group}-2")
    async with running(DeliveryWorker(right)):
        await wait_until(lambda: stand.received_in_order("cns_key"), "3 deltas with the key")


async def test_rotating_the_sealing_key_then_dropping_the_old_one(
    stand: Stand, settings: Settings
) -> None:
    secret = stand.register()
    stand.receiver.add_app(APP, secret)
    await stand.publish()
    new = SecretsKey.generate("k2")
    local = (settings.data_dir / "secrets.key").read_text().strip()  # the development key
    # The README's procedure: the new key first (it seals), the old one after it (it opens),
    # then every stored secret re-sealed and its app published again.
    both = SecretsKeys.parse(f"{new.text()},{local}")
    report = seal_stored_secrets(stand.engine, both, renew=True)
    assert (report.changed, report.failed) == ([APP], [])
    await stand.publish()
    await stand.produce("cns_k2", 2)

    # Then the old key is gone: the topic's older record (sealed with it) is superseded.
    only_new = with_settings(stand.runtime, secrets_key=SecretStr(new.text()))
    async with running(DeliveryWorker(only_new)) as worker:
        await wait_until(lambda: stand.received_in_order("cns_k2"), "2 deltas, new key only")
        assert worker.directory.secrets_problem(APP) is None
    # Re-sealing changed the sealing, not the secret the app holds.
    assert ConsentService(stand.engine, secrets=both).get_app(APP).signing_secret == secret
