"""Real pieces for resend and test-event tests: broker, store, the API over HTTP, receiver.

The API runs under uvicorn in the test's event loop (the actions' Kafka clients live there),
the reference receiving app on another port, recording every event it verified. Records are
put on the pipeline's topics as the matcher and the relay put them, and the messages the
worker sent of them are logged as its entries would be (stored as the log's writer stores
them), so that a resend reads and rebuilds exactly what a worker sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer, TopicPartition
from sqlalchemy.engine import Engine

from api.message_log_helpers import log_entry
from portability.api import RateLimiter, create_app
from portability.broker import EmbeddedBroker
from portability.consent import ConsentService, create_store_engine, init_schema
from portability.messages.actions import MessageActions
from portability.messages.storing import store_entries
from portability.receiver import ReceivingApp, run_receiver
from portability.receiver.events import ReceivedEvent
from portability.runtime import Runtime
from portability.sealing import SecretsKeys
from portability.webhooks.egress import EgressPolicy
from portability.webhooks.payload import delta_event
from portability.wire.delivery_log import DeliveryLogEntry, LoggedRecord, LoggedSource
from portability.wire.records import DeliveryRecord, NotificationRecord
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_consent
from replay_harness import RegisteredApp, replay_settings, serve_api
from waiting import wait_until

__all__ = ["MessageStack", "closed_port_url", "logged_records", "message_stack"]

WAIT_S = 20.0


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks"


@dataclass(slots=True)
class MessageStack:
    """Every running piece, and helpers to drive them."""

    runtime: Runtime
    engine: Engine
    service: ConsentService
    actions: MessageActions
    receiver: ReceivingApp
    receiver_url: str
    api_url: str
    producer: AIOKafkaProducer
    http: aiohttp.ClientSession
    events: list[ReceivedEvent] = field(default_factory=list)

    def register(
        self, app_id: str, *, url: str | None = None, approve: bool = True
    ) -> RegisteredApp:
        """An app with an API key whose webhook is the receiver (or ``url``)."""
        registration = self.service.apply_for_app(
            f"App {app_id}",
            url or f"{self.receiver_url}/webhooks/{app_id}",
            "Keeps a backup of the user's posts.",
            ["all"],
            app_id=app_id,
        )
        if approve:
            self.service.review_app(app_id, "approve")
        self.receiver.add_app(app_id, registration.app.signing_secret)
        return RegisteredApp(app_id, registration.api_key, registration.app.signing_secret)

    def grant(self, app_id: str, user_id: str = "u1") -> str:
        return self.service.grant(user_id, app_id, ["all"], user_region="DE").consent_id

    async def produce(
        self, topic: str, consent_id: str, values: Sequence[dict[str, Any]], schema: SchemaName
    ) -> list[LoggedSource]:
        """Put records on ``topic`` keyed by the consent, as the pipeline does; where they are."""
        sources = []
        for value in values:
            sent = await self.producer.send_and_wait(
                topic,
                self.runtime.codec.encode(schema, value),
                key=consent_id.encode(),
                partition=partition_for_consent(consent_id, self.runtime.settings.partitions),
            )
            sources.append(LoggedSource(topic=topic, partition=sent.partition, offset=sent.offset))
        return sources

    async def deliver(
        self, records: Sequence[DeliveryRecord]
    ) -> tuple[str, bytes, list[LoggedSource]]:
        """Put deliveries on the topic; the message a worker would send of them."""
        topic = self.runtime.topics.deliveries
        sources = await self.produce(
            topic, records[0]["consent_id"], [dict(r) for r in records], SchemaName.DELIVERY
        )
        message_id, body = delta_event(records)
        return message_id, body, sources

    async def notify(self, notification: NotificationRecord) -> list[LoggedSource]:
        topic = self.runtime.topics.notifications
        return await self.produce(
            topic, notification["consent_id"], [dict(notification)], SchemaName.NOTIFICATION
        )

    def log_sent(
        self,
        app_id: str,
        consent_id: str,
        message_id: str,
        body: bytes,
        sources: Sequence[LoggedSource],
        *,
        records: Sequence[LoggedRecord] = (),
        **overrides: Any,
    ) -> None:
        """Store the worker's (failed) first attempt at the message, as the writer would."""
        entry = log_entry(
            message_id,
            app_id,
            consent_id=consent_id,
            ok=False,
            body_sha256=hashlib.sha256(body).hexdigest(),
            size=len(body),
            sources=sources,
            records=records,
            **overrides,
        )
        store_entries(self.engine, [entry])

    async def call(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        async with self.http.request(method, f"{self.api_url}{path}", headers=headers) as response:
            return response.status, await response.json()

    async def logged(self, count: int) -> list[DeliveryLogEntry]:
        """The first ``count`` entries on ``delivery.log`` (every partition), by attempt time."""
        topic = self.runtime.topics.delivery_log
        reader = self.runtime.kafka.reader("message-tests")
        await reader.start()
        entries: list[DeliveryLogEntry] = []
        try:
            partitions = [
                TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())
            ]
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)

            async def read() -> bool:
                batches = await reader.getmany(timeout_ms=100)
                for records in batches.values():
                    entries.extend(
                        self.runtime.codec.decode(SchemaName.DELIVERY_LOG_ENTRY, r.value)
                        for r in records
                    )
                return len(entries) >= count

            await wait_until(read, f"{count} entries on {topic}", WAIT_S)
        finally:
            await reader.stop()
        return sorted(entries, key=lambda e: e["attempted_at"])

    def received(self, webhook_id: str) -> list[ReceivedEvent]:
        return [event for event in self.events if event.webhook_id == webhook_id]


@contextlib.asynccontextmanager
async def message_stack(broker: EmbeddedBroker, data_dir: Path) -> AsyncIterator[MessageStack]:
    """Start everything on unique topics and a fresh SQLite store; stop it all afterwards."""
    settings = replay_settings(data_dir)
    runtime = await Runtime.open(settings, broker.bootstrap)
    engine = create_store_engine(settings.resolved_database_url())
    init_schema(engine)
    actions = MessageActions(settings, engine, runtime, read_timeout_s=3.0)
    producer = runtime.kafka.producer("message-tests")
    await producer.start()
    await actions.start()
    api = create_app(settings, engine, message_actions=actions, rate_limiter=RateLimiter(1_000_000))
    events: list[ReceivedEvent] = []
    receiver = ReceivingApp(on_event=events.append)
    try:
        async with (
            serve_api(api) as api_url,
            run_receiver(receiver) as receiver_url,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as http,
        ):
            service = ConsentService(
                engine,
                webhook_policy=EgressPolicy.from_settings(settings),
                secrets=SecretsKeys.from_settings(settings),
            )
            yield MessageStack(
                runtime,
                engine,
                service,
                actions,
                receiver,
                receiver_url,
                api_url,
                producer,
                http,
                events,
            )
    finally:
        await actions.stop()
        await producer.stop()
        await runtime.close()
        engine.dispose()


def logged_records(records: list[DeliveryRecord]) -> list[LoggedRecord]:
    """The records of a message as the worker logs them (``records`` of its entry)."""
    return [
        LoggedRecord(
            delta_id=r["delta_id"],
            record_id=r["change"]["record_id"],
            category=r["change"]["category"],
            operation=r["change"]["operation"],
            sequence=r["sequence"],
            policy_version=r.get("policy_version", "unversioned"),
        )
        for r in records
    ]
