"""A request waiting for a slot takes along the deltas that came into its lane meanwhile."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from delivery.test_delivery_log import Scripted, scripted
from delivery.test_worker_faults import World, fault_settings, wait_until
from portability.broker import EmbeddedBroker
from portability.delivery import DeliveryWorker
from portability.runtime import Runtime
from portability.settings import Settings
from running_roles import running


class Held(Scripted):
    """Answers 200, but holds the first request until :attr:`release` is set."""

    def __init__(self) -> None:
        super().__init__(answers=[])
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        if not self.holding.is_set():
            self.holding.set()
            await asyncio.wait_for(self.release.wait(), 30)
        return await super().handle(request)


@pytest.fixture
async def world(broker: EmbeddedBroker, settings: Settings) -> AsyncIterator[World]:
    # One request in flight in all: a second lane waits for the first's slot.
    one_slot = fault_settings(settings, delivery_concurrency=1)
    runtime = await Runtime.open(one_slot, broker.bootstrap)
    made = World(runtime)
    yield made
    made.close()
    await runtime.close()


def _sequences(endpoint: Scripted, consent_id: str) -> list[list[int]]:
    """The sequences of each request the endpoint got for the consent, in arrival order."""
    requests = [json.loads(body)["data"] for _, body in endpoint.seen]
    return [
        [delta["sequence"] for delta in data["deltas"]]
        for data in requests
        if data["consent_id"] == consent_id
    ]


async def test_deltas_arriving_while_a_request_waits_for_its_slot_go_with_it(
    world: World,
) -> None:
    async with scripted(Held()) as endpoint:
        assert isinstance(endpoint, Held)
        await world.register("app-fill", endpoint.url, None)
        await world.produce("app-fill", "cns_first", 1)
        async with running(DeliveryWorker(world.runtime)) as worker:
            await asyncio.wait_for(endpoint.holding.wait(), 30)  # the one slot is taken
            await world.produce("app-fill", "cns_later", 1)
            await wait_until(lambda: worker.in_hand == 2, "the later lane's request waiting")
            await world.produce("app-fill", "cns_later", 4)
            await wait_until(lambda: worker.in_hand == 6, "4 more deltas in its lane")
            endpoint.release.set()
            await wait_until(lambda: worker.stats.deltas_delivered == 6, "6 delivered")

    assert _sequences(endpoint, "cns_later") == [[1, 2, 3, 4, 5]]
