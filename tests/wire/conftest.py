"""Fixtures of the wire tests: a shared in-process registry, a started codec, and a stand-in
Confluent registry served over HTTP (see :mod:`tests.wire.registry_stand_in`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from portability.wire import AvroCodec, ConfluentSchemaRegistry, InProcessSchemaRegistry

from .registry_stand_in import StandInRegistry

Served = tuple[StandInRegistry, str]  # the stand-in's state, and its base URL
Connect = Callable[..., ConfluentSchemaRegistry]


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


@pytest.fixture
async def stand_in() -> AsyncIterator[Served]:
    server = StandInRegistry()
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield server, f"http://{host}:{port}/"
    server.released.set()
    await runner.cleanup()


@pytest.fixture
async def connect(stand_in: Served) -> AsyncIterator[Connect]:
    """Makes clients of the stand-in (or of ``url``), each closed after the test."""
    made: list[ConfluentSchemaRegistry] = []

    def make(url: str | None = None, **options: Any) -> ConfluentSchemaRegistry:
        made.append(ConfluentSchemaRegistry(url or stand_in[1], **options))
        return made[-1]

    yield make
    for registry in made:
        await registry.close()
