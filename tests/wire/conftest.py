"""Fixtures of the wire tests: a shared in-process registry and a started codec."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from portability.wire import AvroCodec, InProcessSchemaRegistry


@pytest.fixture
async def registry() -> AsyncIterator[InProcessSchemaRegistry]:
    shared = InProcessSchemaRegistry()
    yield shared
    await shared.close()


@pytest.fixture
async def codec(registry: InProcessSchemaRegistry) -> AvroCodec:
    started = AvroCodec(registry)
    await started.start()
    return started
