"""A one-time consent is used up by its archive, end to end with real parts.

The broker, the consent store with its outbox relay, the matcher, the delivery worker, a
reference receiver over HTTP, the transfers role's state view and builder, and the API: the
platform grants a one-time consent, the app asks for its transfer, the builder makes the
archive, and then

- the app receives ``portability.download.ready`` and after it ``authorization.removed``
  with reason ``completed``;
- the consent reads ``expired`` / ``completed``;
- a second transfer request is refused (409, saying why and where the archive is);
- the download still works, byte for byte what the store recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import SecretStr

from pipeline_harness import Pipeline, running_pipeline
from portability.api import create_app
from portability.broker import EmbeddedBroker
from portability.settings import Settings
from portability.simulation import ChangeFactory
from portability.transfers.builder import TransferBuilder
from portability.wire.records import CATEGORIES

from .helpers import publish, running_view

PLATFORM = {"Authorization": "Bearer platform-token-for-the-lifecycle-test"}
OPERATOR = {"Authorization": "Bearer operator-token-for-the-lifecycle-test"}


@contextlib.asynccontextmanager
async def api_client(pipeline: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    api = create_app(pipeline.runtime.settings, pipeline.engine)
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


async def register_app(pipeline: Pipeline) -> tuple[str, str]:
    """An app that applied and passed review; the receiver verifies its deliveries."""
    app_id = "app-archive"
    registration = await asyncio.to_thread(
        pipeline.service.apply_for_app,
        "Archive Pal",
        f"{pipeline.base_url}/webhooks/{app_id}",
        "Keeps a private backup of the user's posts.",
        ["post", "profile"],
        app_id,
    )
    await asyncio.to_thread(pipeline.service.review_app, app_id, "approve")
    secret = registration.app.signing_secret
    pipeline.receiver.add_app(app_id, secret, api_key=registration.api_key)
    return app_id, registration.api_key


def events_of(pipeline: Pipeline, consent_id: str) -> list[dict[str, Any]]:
    return [e for e in pipeline.receiver.other_events() if e["data"]["consent_id"] == consent_id]


async def test_a_one_time_consent_ends_when_its_archive_is_ready(
    broker: EmbeddedBroker, settings: Settings
) -> None:
    settings = settings.model_copy(
        update={
            "api_platform_token": SecretStr(PLATFORM["Authorization"].removeprefix("Bearer ")),
            "api_operator_token": SecretStr(OPERATOR["Authorization"].removeprefix("Bearer ")),
        }
    )
    async with running_pipeline(settings, broker.bootstrap) as pipeline:
        runtime = pipeline.runtime
        user = "u-archive-1"
        factory = ChangeFactory([user], seed=5)
        await publish(runtime, [factory.random_change(user, c) for c in CATEGORIES for _ in "ab"])
        async with (
            api_client(pipeline) as client,
            running_view(runtime, list(range(settings.partitions))) as view,
        ):
            app_id, api_key = await register_app(pipeline)
            app = {"Authorization": f"Bearer {api_key}"}
            granted = await client.post(
                "/v1/consents",
                headers=PLATFORM,
                json={
                    "user_id": user,
                    "user_region": "DE",
                    "app_id": app_id,
                    "categories": ["post", "profile"],
                    "mode": "one_time",
                },
            )
            assert granted.status_code == 201, granted.text
            consent_id = granted.json()["consent_id"]
            requested = await client.post(f"/v1/consents/{consent_id}/transfers", headers=app)
            assert requested.status_code == 202, requested.text
            transfer_id = requested.json()["transfer_id"]

            stop = asyncio.Event()
            builder = TransferBuilder(runtime, pipeline.engine, view)
            building = asyncio.create_task(builder.run(stop, poll_interval_s=0.05))
            try:
                await pipeline.wait_until(
                    lambda: pipeline.receiver.removal(consent_id) is not None,
                    "the app told that the consent ended",
                    timeout_s=60.0,
                )
            finally:
                stop.set()
                await asyncio.wait_for(building, 10)
            assert builder.stats.built == 1

            consent = (await client.get(f"/v1/consents/{consent_id}", headers=app)).json()
            again = await client.post(f"/v1/consents/{consent_id}/transfers", headers=app)
            transfer = (await client.get(f"/v1/transfers/{transfer_id}", headers=app)).json()
            download = await client.get(f"/v1/transfers/{transfer_id}/archive", headers=app)

    removal = pipeline.receiver.removal(consent_id)
    assert removal is not None
    assert removal.reason == "completed"
    # download.ready first, then authorization.removed: the app learns of the archive first.
    assert [e["type"] for e in events_of(pipeline, consent_id)] == [
        "portability.download.ready",
        "authorization.removed",
    ]
    assert (consent["status"], consent["removal_reason"]) == ("expired", "completed")
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"
    assert "used up" in again.json()["message"]
    assert f"/v1/transfers/{transfer_id}/archive" in again.json()["message"]
    assert transfer["state"] == "ready"
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == transfer["sha256"]
