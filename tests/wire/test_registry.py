"""ConfluentSchemaRegistry over HTTP.

**The server here is a stand-in.** No Confluent Schema Registry can run on this machine (it
needs a JVM and a Kafka cluster of its own), so these tests run the client against a small
in-memory aiohttp server implementing the two endpoints the client uses, with Confluent's
request and response shapes:

* ``POST /subjects/{subject}/versions`` with ``{"schema": "...", "schemaType": "AVRO"}``
  answers ``{"id": N}``; the same schema text always gets the same global id;
* ``GET /schemas/ids/{id}`` answers ``{"schema": "..."}``, or 404 with error code 40403.

What they prove is the client's side of that contract (URLs, bodies, ids, error mapping), not
compatibility with every behaviour of the real registry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import fastavro
import pytest
from aiohttp import web

from portability.broker import free_port
from portability.wire import (
    AvroCodec,
    ConfluentSchemaRegistry,
    SchemaName,
    SchemaRegistryError,
    UnknownSchemaIdError,
)
from portability.wire.schemas import schema_text

from .samples import app, change, consent, delivery, tagged

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_FIRST_ID = 100  # not 1: nothing may assume the registry's ids start where ours do


@dataclass
class StandInRegistry:
    """In-memory stand-in for a Confluent Schema Registry (see the module docstring)."""

    ids: dict[str, int] = field(default_factory=dict)
    schemas: dict[int, str] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    fail_with: int | None = None  # answer every request with this HTTP status
    hang: bool = False  # never answer (until released)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_post("/subjects/{subject}/versions", self.register)
        application.router.add_get("/schemas/ids/{schema_id}", self.fetch)
        return application

    async def _interfere(self) -> web.Response | None:
        if self.hang:
            await self.released.wait()
        if self.fail_with is not None:
            return _error(self.fail_with, 50001, "Error in the backend data store")
        return None

    async def register(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, request.headers.get("Content-Type")))
        if (failure := await self._interfere()) is not None:
            return failure
        body = await request.json()
        text = body.get("schema")
        if body.get("schemaType", "AVRO") != "AVRO" or not _is_avro(text):
            return _error(422, 42201, "Invalid schema")
        assert isinstance(text, str)
        schema_id = self.ids.setdefault(text, _FIRST_ID + len(self.ids))
        self.schemas[schema_id] = text
        versions = self.subjects.setdefault(request.match_info["subject"], [])
        if schema_id not in versions:
            versions.append(schema_id)
        return web.json_response({"id": schema_id}, content_type=_CONTENT_TYPE)

    async def fetch(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, None))
        if (failure := await self._interfere()) is not None:
            return failure
        schema_id = int(request.match_info["schema_id"])
        text = self.schemas.get(schema_id)
        if text is None:
            return _error(404, 40403, f"Schema {schema_id} not found")
        return web.json_response({"schema": text}, content_type=_CONTENT_TYPE)


def _is_avro(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        fastavro.parse_schema(json.loads(text))
    except (ValueError, fastavro.schema.SchemaParseException):
        return False
    return True


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {"error_code": code, "message": message}, status=status, content_type=_CONTENT_TYPE
    )


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[StandInRegistry, str]]:
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
async def client(stand_in: tuple[StandInRegistry, str]) -> AsyncIterator[ConfluentSchemaRegistry]:
    registry = ConfluentSchemaRegistry(stand_in[1], timeout_s=5.0)
    yield registry
    await registry.close()


async def test_register_returns_the_registry_id_and_is_idempotent(
    stand_in: tuple[StandInRegistry, str], client: ConfluentSchemaRegistry
) -> None:
    server, _ = stand_in
    text = schema_text(SchemaName.APP)

    first = await client.register("apps-value", text)
    again = await client.register("apps-value", text)
    other = await client.register("consents-value", schema_text(SchemaName.CONSENT))

    assert first == again == _FIRST_ID
    assert other == _FIRST_ID + 1
    assert server.subjects == {"apps-value": [first], "consents-value": [other]}
    method, path, content_type = server.requests[0]
    assert (method, path, content_type) == ("POST", "/subjects/apps-value/versions", _CONTENT_TYPE)


async def test_fetch_returns_the_registered_schema(client: ConfluentSchemaRegistry) -> None:
    text = schema_text(SchemaName.DELIVERY)
    schema_id = await client.register("deliveries-value", text)

    assert await client.fetch(schema_id) == text
    assert json.loads(await client.fetch(schema_id))["name"] == "portability.v1.Delivery"


async def test_unknown_id_is_a_non_retriable_registry_error(
    client: ConfluentSchemaRegistry,
) -> None:
    with pytest.raises(SchemaRegistryError, match="HTTP 404") as caught:
        await client.fetch(12345)
    assert caught.value.retriable is False
    assert "schema id 12345" in str(caught.value)


async def test_invalid_schema_is_a_non_retriable_registry_error(
    client: ConfluentSchemaRegistry,
) -> None:
    with pytest.raises(SchemaRegistryError, match="HTTP 422") as caught:
        await client.register("apps-value", '{"type": "record"}')
    assert caught.value.retriable is False
    assert "register apps-value" in str(caught.value)


@pytest.mark.parametrize("status", [500, 503])
async def test_server_error_is_a_retriable_registry_error(
    stand_in: tuple[StandInRegistry, str], client: ConfluentSchemaRegistry, status: int
) -> None:
    server, _ = stand_in
    server.fail_with = status

    with pytest.raises(SchemaRegistryError, match=f"HTTP {status}") as fetching:
        await client.fetch(_FIRST_ID)
    with pytest.raises(SchemaRegistryError, match=f"HTTP {status}") as registering:
        await client.register("apps-value", schema_text(SchemaName.APP))

    assert fetching.value.retriable is True
    assert registering.value.retriable is True
    assert "register apps-value" in str(registering.value)


async def test_unreachable_registry_is_a_retriable_registry_error() -> None:
    registry = ConfluentSchemaRegistry(f"http://127.0.0.1:{free_port()}", timeout_s=5.0)
    try:
        with pytest.raises(SchemaRegistryError) as caught:
            await registry.fetch(1)
    finally:
        await registry.close()
    assert caught.value.retriable is True


async def test_registry_timeout_is_a_retriable_registry_error(
    stand_in: tuple[StandInRegistry, str],
) -> None:
    server, url = stand_in
    server.hang = True
    registry = ConfluentSchemaRegistry(url, timeout_s=0.2)
    try:
        with pytest.raises(SchemaRegistryError) as caught:
            await registry.fetch(1)
    finally:
        await registry.close()
    assert caught.value.retriable is True


async def test_close_is_idempotent_and_the_client_reopens(
    client: ConfluentSchemaRegistry,
) -> None:
    await client.close()
    await client.close()
    assert await client.register("apps-value", schema_text(SchemaName.APP)) == _FIRST_ID


# --- the codec over the HTTP registry -----------------------------------------------------------


async def test_codec_end_to_end(
    stand_in: tuple[StandInRegistry, str], client: ConfluentSchemaRegistry
) -> None:
    server, url = stand_in
    writer = AvroCodec(client, topic_prefix="t1.")
    await writer.start()

    assert set(server.subjects) == {f"t1.{name.value}-value" for name in SchemaName}
    assert {writer.schema_id(name) for name in SchemaName} == set(server.schemas)

    records: dict[SchemaName, Any] = {
        SchemaName.ACCOUNT_CHANGE: change("follow"),
        SchemaName.CONSENT: consent(),
        SchemaName.APP: app(),
        SchemaName.DELIVERY: delivery(change("activity")),
    }
    to_send: dict[SchemaName, Any] = {
        SchemaName.ACCOUNT_CHANGE: tagged(change("follow")),
        SchemaName.CONSENT: consent(),
        SchemaName.APP: app(),
        SchemaName.DELIVERY: delivery(tagged(change("activity"))),
    }
    framed = {name: writer.encode(name, record) for name, record in to_send.items()}

    # Another process: its own client, nothing registered, every writer id fetched by GET.
    reader_client = ConfluentSchemaRegistry(url)
    try:
        reader = AvroCodec(reader_client, topic_prefix="t1.")
        fetches_before = sum(1 for r in server.requests if r[0] == "GET")
        for name, data in framed.items():
            assert await reader.decode_fetching(name, data) == records[name]
            assert await reader.decode_fetching(name, data) == records[name]  # cached
        fetches = sum(1 for r in server.requests if r[0] == "GET") - fetches_before
        assert fetches == len(framed)

        # An id the registry never handed out: a clear unknown-id error after one 404.
        unknown = b"\x00\x00\x00\x7f\xff" + framed[SchemaName.APP][5:]
        with pytest.raises(UnknownSchemaIdError):
            await reader.decode_fetching(SchemaName.APP, unknown)

        # A registry outage while fetching is retriable, not an undecodable record.
        server.fail_with = 503
        fresh = AvroCodec(reader_client)
        with pytest.raises(SchemaRegistryError) as caught:
            await fresh.decode_fetching(SchemaName.APP, framed[SchemaName.APP])
        assert caught.value.retriable is True
    finally:
        await reader_client.close()
