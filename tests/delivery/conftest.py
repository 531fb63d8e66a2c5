"""The delivery tests' world: a runtime on the test's broker with fast retries, and a store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from delivery.test_worker_faults import World, fault_settings
from portability.broker import EmbeddedBroker
from portability.runtime import Runtime
from portability.settings import Settings


@pytest.fixture
async def world(broker: EmbeddedBroker, settings: Settings) -> AsyncIterator[World]:
    runtime = await Runtime.open(fault_settings(settings), broker.bootstrap)
    made = World(runtime)
    yield made
    made.close()
    await runtime.close()
