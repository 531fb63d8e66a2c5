"""ConfluentSchemaRegistry over HTTP, against a stand-in server.

**The server here is a stand-in** (:mod:`tests.wire.registry_stand_in`): no Confluent Schema
Registry can run on this machine (it needs a JVM; its image, a container engine). The stand-in
answers the endpoints ``python-schema-registry-client`` calls with Confluent's request and
response shapes. What these tests prove is the client's side of that contract (URLs, bodies,
ids, compatibility levels, error mapping), not compatibility with every behaviour of the real
registry.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from portability.broker import free_port
from portability.errors import ConfigurationError
from portability.wire import (
    AvroCodec,
    ConfluentSchemaRegistry,
    IncompatibleSchemaError,
    SchemaName,
    SchemaRegistryError,
    TopicNames,
    UnknownSchemaIdError,
)
from portability.wire.schemas import schema_text

from .conftest import Connect, Served
from .registry_stand_in import CONTENT_TYPE, FIRST_ID
from .samples import app, change, consent, delivery, tagged


@pytest.fixture
def client(connect: Connect) -> ConfluentSchemaRegistry:
    return connect(timeout_s=5.0)


def _app_schema(**extra_field: Any) -> str:
    """The App schema, with one more top-level field if given."""
    schema = json.loads(schema_text(SchemaName.APP))
    if extra_field:
        schema["fields"].append(extra_field)
    return json.dumps(schema)


# --- registering --------------------------------------------------------------------------------


async def test_register_returns_the_registry_id_and_is_idempotent(
    stand_in: Served, client: ConfluentSchemaRegistry
) -> None:
    server, _ = stand_in
    text = schema_text(SchemaName.APP)

    first = await client.register("apps-value", text)
    again = await client.register("apps-value", text)
    other = await client.register("consents-value", schema_text(SchemaName.CONSENT))

    assert first == again == FIRST_ID
    assert other == FIRST_ID + 1
    assert server.subjects == {"apps-value": [first], "consents-value": [other]}
    assert server.posts_to("/subjects/apps-value/versions") == 1  # the second was a lookup
    posts = [r for r in server.requests if r[0] in ("POST", "PUT")]
    assert all(content_type == CONTENT_TYPE for _, _, content_type, _ in posts)


async def test_a_subject_without_a_level_gets_backward(
    stand_in: Served, client: ConfluentSchemaRegistry
) -> None:
    server, _ = stand_in
    server.levels["consents-value"] = "FULL"  # an operator's choice: kept

    await client.register("apps-value", schema_text(SchemaName.APP))
    await client.register("consents-value", schema_text(SchemaName.CONSENT))
    await client.register("apps-value", schema_text(SchemaName.APP))

    assert server.levels == {"apps-value": "BACKWARD", "consents-value": "FULL"}
    configs = [r for r in server.requests if r[1].startswith("/config/")]
    assert [(m, p) for m, p, _, _ in configs] == [
        ("GET", "/config/apps-value"),
        ("PUT", "/config/apps-value"),
        ("GET", "/config/consents-value"),
    ]  # once per subject and client


async def test_a_level_that_lets_old_records_become_unreadable_is_logged(
    stand_in: Served, client: ConfluentSchemaRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = stand_in
    server.levels["apps-value"] = "NONE"

    with caplog.at_level(logging.WARNING, logger="portability.wire.confluent"):
        await client.register("apps-value", schema_text(SchemaName.APP))

    assert "apps-value has compatibility NONE" in caplog.text


async def test_an_incompatible_schema_is_refused_naming_the_subject(
    stand_in: Served, client: ConfluentSchemaRegistry
) -> None:
    server, _ = stand_in
    await client.register("apps-value", _app_schema())
    del server.requests[:]

    with pytest.raises(IncompatibleSchemaError, match="subject 'apps-value'") as caught:
        await client.register("apps-value", _app_schema(name="tier", type="string"))

    assert caught.value.subject == "apps-value"
    assert caught.value.retriable is False
    assert "BACKWARD" in str(caught.value)
    assert "READER_FIELD_MISSING_DEFAULT_VALUE, field tier" in str(caught.value)
    assert server.posts_to("/compatibility/subjects/apps-value/versions/latest") == 1
    assert server.posts_to("/subjects/apps-value/versions") == 0  # never tried to register
    assert server.requests[-1][3] == "verbose=true"


async def test_a_compatible_new_version_is_registered(
    stand_in: Served, client: ConfluentSchemaRegistry
) -> None:
    server, _ = stand_in
    first = await client.register("apps-value", _app_schema())

    second = await client.register(
        "apps-value", _app_schema(name="tier", type="string", default="free")
    )

    assert second != first
    assert server.subjects["apps-value"] == [first, second]


async def test_an_incompatible_answer_to_the_registration_itself_is_refused_too(
    stand_in: Served, client: ConfluentSchemaRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer may register between the check and the registration: the 409 counts."""
    await client.register("apps-value", _app_schema())

    async def compatible(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"is_compatible": True, "messages": []}

    monkeypatch.setattr(client._client, "test_compatibility", compatible)
    with pytest.raises(IncompatibleSchemaError, match="incompatible with an earlier schema"):
        await client.register("apps-value", _app_schema(name="tier", type="string"))


async def test_a_read_only_registry_still_registers_what_it_already_holds(
    stand_in: Served, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = stand_in
    schema_id = await connect().register("apps-value", schema_text(SchemaName.APP))
    server.levels.clear()
    server.read_only = True

    with caplog.at_level(logging.WARNING, logger="portability.wire.confluent"):
        again = await connect().register("apps-value", schema_text(SchemaName.APP))

    assert again == schema_id
    assert "refuses to set compatibility BACKWARD on subject apps-value (HTTP 403)" in caplog.text


async def test_an_invalid_schema_is_refused_before_any_request(
    stand_in: Served, client: ConfluentSchemaRegistry
) -> None:
    server, _ = stand_in
    with pytest.raises(SchemaRegistryError, match="register apps-value: invalid Avro") as caught:
        await client.register("apps-value", '{"type": "record"}')
    assert caught.value.retriable is False
    assert server.requests == []


async def test_a_schema_the_registry_refuses_is_a_non_retriable_registry_error(
    stand_in: Served, client: ConfluentSchemaRegistry
) -> None:
    server, _ = stand_in
    server.reject_schemas = True

    with pytest.raises(SchemaRegistryError, match="HTTP 422") as caught:
        await client.register("apps-value", schema_text(SchemaName.APP))
    assert caught.value.retriable is False
    assert "register apps-value" in str(caught.value)
    assert "input schema or one its references is invalid" in str(caught.value)


# --- fetching -----------------------------------------------------------------------------------


async def test_fetch_returns_the_registered_schema(client: ConfluentSchemaRegistry) -> None:
    text = schema_text(SchemaName.DELIVERY)
    schema_id = await client.register("deliveries-value", text)

    assert json.loads(await client.fetch(schema_id)) == json.loads(text)
    assert json.loads(await client.fetch(schema_id))["name"] == "portability.v1.Delivery"


async def test_unknown_id_is_a_non_retriable_registry_error(
    client: ConfluentSchemaRegistry,
) -> None:
    with pytest.raises(SchemaRegistryError, match="HTTP 404") as caught:
        await client.fetch(12345)
    assert caught.value.retriable is False
    assert "schema id 12345" in str(caught.value)


# --- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
async def test_server_error_is_a_retriable_registry_error(
    stand_in: Served, client: ConfluentSchemaRegistry, status: int
) -> None:
    server, _ = stand_in
    server.fail_with = status

    with pytest.raises(SchemaRegistryError, match=f"HTTP {status}") as fetching:
        await client.fetch(FIRST_ID)
    with pytest.raises(SchemaRegistryError, match=f"HTTP {status}") as registering:
        await client.register("apps-value", schema_text(SchemaName.APP))

    assert fetching.value.retriable is True
    assert registering.value.retriable is True
    assert "register apps-value" in str(registering.value)
    assert "Error in the backend data store" in str(registering.value)


@pytest.mark.parametrize(("status", "retriable"), [(502, True), (404, False)])
async def test_an_answer_that_is_not_json_is_mapped_by_its_status(
    stand_in: Served, client: ConfluentSchemaRegistry, status: int, retriable: bool
) -> None:
    """A proxy's HTML page, not a JSON decoding error mistaken for a bad schema."""
    server, _ = stand_in
    server.html_error = status

    with pytest.raises(SchemaRegistryError, match=f"HTTP {status}: <html>") as caught:
        await client.fetch(FIRST_ID)
    assert caught.value.retriable is retriable


async def test_unreachable_registry_is_a_retriable_registry_error() -> None:
    registry = ConfluentSchemaRegistry(f"http://127.0.0.1:{free_port()}", timeout_s=5.0)
    try:
        with pytest.raises(SchemaRegistryError, match="unreachable") as caught:
            await registry.fetch(1)
    finally:
        await registry.close()
    assert caught.value.retriable is True


async def test_registry_timeout_is_a_retriable_registry_error(stand_in: Served) -> None:
    server, url = stand_in
    server.hang = True
    registry = ConfluentSchemaRegistry(url, timeout_s=0.2)
    try:
        with pytest.raises(SchemaRegistryError) as caught:
            await registry.fetch(1)
    finally:
        await registry.close()
    assert caught.value.retriable is True


async def test_credentials_in_the_url_are_sent_and_never_shown(
    stand_in: Served, connect: Connect
) -> None:
    server, url = stand_in
    server.fail_with = 503
    registry = connect(url.replace("http://", "http://operator:s3cret@"))

    with pytest.raises(SchemaRegistryError) as caught:
        await registry.fetch(1)
    assert "s3cret" not in str(caught.value)
    assert url.rstrip("/") in str(caught.value)
    assert server.authorizations == ["Basic " + base64.b64encode(b"operator:s3cret").decode()]


@pytest.mark.parametrize("url", ["schema-registry:8081", "ftp://host/", "http://"])
def test_a_url_that_is_not_http_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="PORTABILITY_SCHEMA_REGISTRY_URL"):
        ConfluentSchemaRegistry(url)


async def test_close_is_idempotent_and_the_client_still_works(
    client: ConfluentSchemaRegistry,
) -> None:
    await client.close()
    await client.close()
    assert await client.register("apps-value", schema_text(SchemaName.APP)) == FIRST_ID


# --- the codec over the HTTP registry -----------------------------------------------------------


async def test_codec_end_to_end(
    stand_in: Served, client: ConfluentSchemaRegistry, connect: Connect
) -> None:
    server, _ = stand_in
    writer = AvroCodec(client, topic_prefix="t1.")
    await writer.start()

    topics = TopicNames.with_prefix("t1.")
    assert set(server.subjects) == {
        f"{topic}-value"
        for topic in (
            topics.account_changes,
            topics.consents,
            topics.apps,
            topics.deliveries,
            topics.matcher_checkpoints,
            topics.delivery_status,
            topics.notifications,
            topics.delivery_log,
            topics.delivery_ledger,
        )
    }
    assert set(server.levels.values()) == {"BACKWARD"}
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
    reader_client = connect()
    reader = AvroCodec(reader_client, topic_prefix="t1.")
    fetches_before = server.gets("/schemas/ids/")
    for name, data in framed.items():
        assert await reader.decode_fetching(name, data) == records[name]
        assert await reader.decode_fetching(name, data) == records[name]  # cached
    assert server.gets("/schemas/ids/") - fetches_before == len(framed)

    # An id the registry never handed out: a clear unknown-id error after one 404, and no
    # further request for it while the answer is remembered.
    unknown = b"\x00\x00\x00\x7f\xff" + framed[SchemaName.APP][5:]
    for _ in range(50):
        with pytest.raises(UnknownSchemaIdError):
            await reader.decode_fetching(SchemaName.APP, unknown)
    assert server.gets("/schemas/ids/32767") == 1

    # A registry outage while fetching is retriable, not an undecodable record.
    server.fail_with = 503
    fresh = AvroCodec(connect())  # the library caches schemas per client
    with pytest.raises(SchemaRegistryError) as caught:
        await fresh.decode_fetching(SchemaName.APP, framed[SchemaName.APP])
    assert caught.value.retriable is True
