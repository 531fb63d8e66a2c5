"""Real pieces for replay tests: broker, consent store, replayer, API over HTTP, receiver.

The API runs under uvicorn on a free local port in the test's event loop (the replayer's
tasks and Kafka clients live there), the reference receiver on another; deliveries are put
on the deliveries topic as the matcher puts them (Avro, key = consent id, the consent's
partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from pipeline_harness import FAST_GROUPS
from portability.api import RateLimiter, create_app
from portability.broker import EmbeddedBroker
from portability.consent import ConsentService, create_store_engine, init_schema
from portability.delivery.replay import Replayer
from portability.delivery.replay_run import ReplayRetry
from portability.matching import delta_id
from portability.receiver import ReceivingApp, RecoveryOptions, run_receiver
from portability.runtime import Runtime
from portability.sealing import SecretsKeys
from portability.settings import Settings
from portability.webhooks.egress import EgressPolicy
from portability.wire.records import DeliveryRecord, with_record_type
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_consent
from waiting import wait_until

__all__ = [
    "OPERATOR_TOKEN",
    "PLATFORM_TOKEN",
    "WAIT_S",
    "ReplayStack",
    "delivery",
    "replay_settings",
    "replay_stack",
    "serve_api",
    "wait_until",
]

PLATFORM_TOKEN = "platform-token-for-replay-tests"
OPERATOR_TOKEN = "operator-token-for-replay-tests"
FAST_RETRY = ReplayRetry(attempts=3, base_s=0.05, max_s=2.0)
WAIT_S = 20.0


def replay_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Unique topics, three partitions, known tokens, fast group joins, SQLite in ``data_dir``."""
    values: dict[str, Any] = {
        **FAST_GROUPS,
        "data_dir": data_dir,
        "topic_prefix": f"r{uuid.uuid4().hex[:10]}.",
        "partitions": 3,
        "api_platform_token": PLATFORM_TOKEN,
        "api_operator_token": OPERATOR_TOKEN,
    }
    return Settings(**(values | overrides))


def delivery(
    consent_id: str,
    app_id: str,
    sequence: int,
    *,
    user_id: str = "u1",
    matched_at: datetime | None = None,
) -> DeliveryRecord:
    """A post upsert of ``consent_id`` at ``sequence``, with the matcher's delta id."""
    change_id = f"chg-{consent_id}-{sequence}"
    moment = matched_at or datetime.now(UTC)
    change = with_record_type(
        {
            "change_id": change_id,
            "user_id": user_id,
            "category": "post",
            "operation": "upsert",
            "record_id": f"post-{sequence}",
            "occurred_at": moment,
            "record": {
                "caption": f"caption {sequence}",
                "media_url": f"https://cdn.example/{sequence}.mp4",
                "visibility": "public",
                "created_at": moment,
            },
        }
    )
    return {
        "delta_id": delta_id(consent_id, change_id),
        "consent_id": consent_id,
        "app_id": app_id,
        "user_id": user_id,
        "sequence": sequence,
        "change": change,
        "matched_at": moment,
    }


@contextlib.asynccontextmanager
async def serve_api(api: FastAPI) -> AsyncIterator[str]:
    """Serve ``api`` with uvicorn on a free local port in this event loop; yields its URL."""
    config = uvicorn.Config(
        api, host="127.0.0.1", port=0, log_config=None, lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done(), "the API started", 10.0)
        if task.done():
            task.result()
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10.0)


@dataclass(frozen=True, slots=True)
class RegisteredApp:
    app_id: str
    api_key: str
    secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass(slots=True)
class ReplayStack:
    """Every running piece, and helpers to drive them."""

    settings: Settings
    engine: Engine
    service: ConsentService
    runtime: Runtime
    replayer: Replayer
    receiver: ReceivingApp
    receiver_url: str
    api_url: str
    producer: AIOKafkaProducer
    http: aiohttp.ClientSession
    apps: dict[str, RegisteredApp] = field(default_factory=dict)

    def register(self, app_id: str, *, webhook_app_id: str | None = None) -> RegisteredApp:
        """An approved app with an API key, known to the receiver (with its key)."""
        path_id = webhook_app_id or app_id
        registration = self.service.apply_for_app(
            f"App {app_id}",
            f"{self.receiver_url}/webhooks/{path_id}",
            "Keeps a backup of the user's posts.",
            ["all"],
            app_id=app_id,
        )
        self.service.review_app(app_id, "approve")
        app = RegisteredApp(app_id, registration.api_key, registration.app.signing_secret)
        self.receiver.add_app(app_id, app.secret, api_key=app.api_key)
        self.apps[app_id] = app
        return app

    def grant(self, app_id: str, user_id: str | None = None) -> str:
        """A consent of ``app_id`` for every category; by default of a user of its own
        (one user's second identical consent would be refused)."""
        user = user_id or f"u1-{uuid.uuid4().hex[:8]}"
        return self.service.grant(user, app_id, ["all"], user_region="DE").consent_id

    def grant_in_partition(self, app_id: str, partition: int, *, same: bool) -> str:
        """A consent of ``app_id`` in (``same``) or outside deliveries partition ``partition``."""
        for attempt in range(60):
            consent_id = self.grant(app_id, f"u-{attempt}-{uuid.uuid4().hex[:6]}")
            if (self.partition_of(consent_id) == partition) == same:
                return consent_id
        raise AssertionError("no consent landed where wanted in 60 grants")

    def partition_of(self, consent_id: str) -> int:
        return partition_for_consent(consent_id, self.settings.partitions)

    async def produce(
        self, records: Iterable[DeliveryRecord], *, timestamp_ms: int | None = None
    ) -> None:
        """Put deliveries on the topic as the matcher does (acknowledged before returning)."""
        for record in records:
            consent_id = record["consent_id"]
            await self.producer.send_and_wait(
                self.runtime.topics.deliveries,
                self.runtime.codec.encode(SchemaName.DELIVERY, dict(record)),
                key=consent_id.encode(),
                partition=self.partition_of(consent_id),
                timestamp_ms=timestamp_ms,
            )

    async def produce_raw(self, consent_id: str, value: bytes) -> None:
        """An undecodable record keyed like the consent's deliveries."""
        await self.producer.send_and_wait(
            self.runtime.topics.deliveries,
            value,
            key=consent_id.encode(),
            partition=self.partition_of(consent_id),
        )

    async def call(
        self, method: str, path: str, *, headers: dict[str, str], json: Any = None
    ) -> tuple[int, Any, dict[str, str]]:
        """One API request: (status, JSON body, headers)."""
        async with self.http.request(
            method, f"{self.api_url}{path}", json=json, headers=headers
        ) as response:
            body = await response.json() if response.content_length != 0 else None
            return response.status, body, dict(response.headers)

    async def replay(self, consent_id: str, app: RegisteredApp, **body: Any) -> dict[str, Any]:
        """Ask for a replay as the app; assert it was accepted."""
        status, answer, _ = await self.call(
            "POST", f"/v1/consents/{consent_id}/replay", headers=app.headers, json=body
        )
        assert status == 202, answer
        result: dict[str, Any] = answer
        return result

    async def finished(self, consent_id: str, replay_id: str, app: RegisteredApp) -> dict[str, Any]:
        """Poll the replay through the API until it is done or failed."""
        path = f"/v1/consents/{consent_id}/replays/{replay_id}"
        latest: dict[str, Any] = {}

        async def ended() -> bool:
            nonlocal latest
            status, latest, _ = await self.call("GET", path, headers=app.headers)
            assert status == 200, latest
            return latest["state"] in {"done", "failed"}

        await wait_until(ended, f"replay {replay_id} finished", WAIT_S)
        return latest

    def sequences(self, consent_id: str) -> list[int]:
        return [delta.sequence for delta in self.receiver.deltas(consent_id)]


@contextlib.asynccontextmanager
async def replay_stack(
    broker: EmbeddedBroker,
    data_dir: Path,
    *,
    gap_grace_s: float | None = None,
    retry: ReplayRetry = FAST_RETRY,
    **overrides: Any,
) -> AsyncIterator[ReplayStack]:
    """Start everything on unique topics and a fresh SQLite store; stop it all afterwards.

    With ``gap_grace_s`` the receiver asks this API to replay gaps (quickly, for tests).
    """
    settings = replay_settings(data_dir, **overrides)
    runtime = await Runtime.open(settings, broker.bootstrap)
    engine = create_store_engine(settings.resolved_database_url())
    init_schema(engine)
    replayer = Replayer(settings, engine, runtime, retry=retry)
    producer = runtime.kafka.producer("replay-tests")
    await producer.start()
    await replayer.start()
    api = create_app(settings, engine, replayer=replayer, rate_limiter=RateLimiter(1_000_000))
    try:
        async with serve_api(api) as api_url:
            receiver = ReceivingApp(recovery=_recovery(api_url, gap_grace_s))
            async with (
                run_receiver(receiver) as receiver_url,
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as http,
            ):
                yield ReplayStack(
                    settings,
                    engine,
                    ConsentService(
                        engine,
                        webhook_policy=EgressPolicy.from_settings(settings),
                        # The API's and the replayer's keys: they open what this seals.
                        secrets=SecretsKeys.from_settings(settings),
                    ),
                    runtime,
                    replayer,
                    receiver,
                    receiver_url,
                    api_url,
                    producer,
                    http,
                )
    finally:
        await replayer.stop()
        await producer.stop()
        await runtime.close()
        engine.dispose()


def _recovery(api_url: str, grace_s: float | None) -> RecoveryOptions | None:
    if grace_s is None:
        return None
    return RecoveryOptions(
        api_url, grace_s=grace_s, retry_base_s=0.05, poll_interval_s=0.05, follow_timeout_s=15.0
    )
