"""Schema evolution is BACKWARD compatible, in both directions.

Variants of this build's schemas are derived here, registered in the same registry under the
same subject, and framed by hand with fastavro, as another build's producer would:

* an OLD writer lacks a field that has a default: the current reader fills in the default;
* a NEW writer has an extra field with a default: the current reader ignores it;
* and the reverse of the first: a consumer still on the OLD schema reads this build's records.

A change that is not compatible (a field without a default removed) is a clear
:class:`WireFormatError`, never a crash.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any

import fastavro
import pytest

from portability.wire import (
    AvroCodec,
    InProcessSchemaRegistry,
    SchemaName,
    UnknownSchemaIdError,
    WireFormatError,
)
from portability.wire.schemas import parsed_schema, schema_text

from .samples import app, change, consent, delivery, tagged

Schema = dict[str, Any]


def _current(name: SchemaName) -> Schema:
    """This build's schema, self-contained, as a mutable JSON object."""
    loaded: Schema = json.loads(schema_text(name))
    return loaded


def _find_record(schema: Any, record_name: str) -> Schema:
    """The record definition named ``record_name`` (short name) anywhere inside ``schema``."""
    if isinstance(schema, dict):
        full_name = str(schema.get("name", ""))
        if schema.get("type") == "record" and full_name.rsplit(".", 1)[-1] == record_name:
            return schema
        children: list[Any] = [f["type"] for f in schema.get("fields", [])]
        children += [schema[key] for key in ("type", "items", "values") if key in schema]
    elif isinstance(schema, list):
        children = schema
    else:
        children = []
    for child in children:
        if isinstance(child, dict | list):
            try:
                return _find_record(child, record_name)
            except LookupError:
                continue
    raise LookupError(record_name)


def _without_field(name: SchemaName, record_name: str, field: str) -> Schema:
    schema = _current(name)
    record = _find_record(schema, record_name)
    before = len(record["fields"])
    record["fields"] = [f for f in record["fields"] if f["name"] != field]
    assert len(record["fields"]) == before - 1, f"{record_name} has no field {field}"
    return schema


def _with_field(name: SchemaName, record_name: str, field: Schema) -> Schema:
    schema = _current(name)
    _find_record(schema, record_name)["fields"].append(field)
    return schema


async def _frame(
    registry: InProcessSchemaRegistry,
    codec: AvroCodec,
    name: SchemaName,
    writer: Schema,
    record: Any,
) -> bytes:
    """Register ``writer`` under ``name``'s subject and frame ``record`` with it."""
    schema_id = await registry.register(codec.subject(name), json.dumps(writer))
    assert schema_id != codec.schema_id(name), "the variant must be a schema of its own"
    buffer = io.BytesIO()
    buffer.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(writer), record)
    return buffer.getvalue()


def _strip(record: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != field}


# --- OLD writer, current reader ----------------------------------------------------------------


async def test_old_app_writer_without_enabled_reads_with_default_true(
    registry: InProcessSchemaRegistry, codec: AvroCodec
) -> None:
    old = _without_field(SchemaName.APP, "App", "enabled")
    written = _strip(dict(app(enabled=False)), "enabled")
    data = await _frame(registry, codec, SchemaName.APP, old, written)

    decoded = await codec.decode_fetching(SchemaName.APP, data)

    assert decoded == {**written, "enabled": True}


async def test_old_consent_writer_without_revoked_at_reads_with_default_null(
    registry: InProcessSchemaRegistry, codec: AvroCodec
) -> None:
    old = _without_field(SchemaName.CONSENT, "Consent", "revoked_at")
    written = _strip(dict(consent()), "revoked_at")
    data = await _frame(registry, codec, SchemaName.CONSENT, old, written)

    decoded = await codec.decode_fetching(SchemaName.CONSENT, data)

    assert decoded == {**written, "revoked_at": None}


async def test_old_profile_writer_without_bio_reads_with_default_empty(
    registry: InProcessSchemaRegistry, codec: AvroCodec
) -> None:
    """The changed record is a branch of a union, nested in AccountChange."""
    old = _without_field(SchemaName.ACCOUNT_CHANGE, "Profile", "bio")
    value = change("profile")
    assert value["record"] is not None
    written = tagged(value)
    assert written["record"] is not None
    written["record"] = _strip(written["record"], "bio")
    data = await _frame(registry, codec, SchemaName.ACCOUNT_CHANGE, old, written)

    decoded = await codec.decode_fetching(SchemaName.ACCOUNT_CHANGE, data)

    assert decoded == {**value, "record": {**value["record"], "bio": ""}}


async def test_old_profile_writer_inside_a_delivery(
    registry: InProcessSchemaRegistry, codec: AvroCodec
) -> None:
    old = _without_field(SchemaName.DELIVERY, "Profile", "bio")
    nested = change("profile")
    assert nested["record"] is not None
    to_write = tagged(nested)
    assert to_write["record"] is not None
    to_write["record"] = _strip(to_write["record"], "bio")
    data = await _frame(registry, codec, SchemaName.DELIVERY, old, delivery(to_write))

    decoded = await codec.decode_fetching(SchemaName.DELIVERY, data)

    expected = delivery({**nested, "record": {**nested["record"], "bio": ""}})
    assert decoded == expected


async def test_decode_without_fetching_does_not_know_the_old_writer(
    registry: InProcessSchemaRegistry, codec: AvroCodec
) -> None:
    old = _without_field(SchemaName.APP, "App", "enabled")
    data = await _frame(registry, codec, SchemaName.APP, old, _strip(dict(app()), "enabled"))

    with pytest.raises(UnknownSchemaIdError):
        codec.decode(SchemaName.APP, data)
    await codec.decode_fetching(SchemaName.APP, data)
    assert codec.decode(SchemaName.APP, data)["enabled"] is True


# --- NEW writer, current reader ----------------------------------------------------------------

_NEW_FIELDS: list[tuple[SchemaName, str, Schema, Any, Callable[[], Any]]] = [
    (
        SchemaName.APP,
        "App",
        {"name": "description", "type": "string", "default": ""},
        "Backs up photos",
        app,
    ),
    (
        SchemaName.CONSENT,
        "Consent",
        {"name": "granted_via", "type": ["null", "string"], "default": None},
        "settings-page",
        consent,
    ),
]


@pytest.mark.parametrize(
    ("name", "record_name", "field", "value", "make"), _NEW_FIELDS, ids=["app", "consent"]
)
async def test_new_writer_extra_field_is_ignored(
    registry: InProcessSchemaRegistry,
    codec: AvroCodec,
    name: SchemaName,
    record_name: str,
    field: Schema,
    value: Any,
    make: Callable[[], Any],
) -> None:
    new = _with_field(name, record_name, field)
    original = dict(make())
    data = await _frame(registry, codec, name, new, {**original, field["name"]: value})

    assert await codec.decode_fetching(name, data) == original


async def test_new_profile_writer_extra_nested_field_is_ignored(
    registry: InProcessSchemaRegistry, codec: AvroCodec
) -> None:
    new = _with_field(
        SchemaName.ACCOUNT_CHANGE,
        "Profile",
        {"name": "pronouns", "type": "string", "default": ""},
    )
    value = change("profile")
    written = tagged(value)
    assert written["record"] is not None
    written["record"] = {**written["record"], "pronouns": "she/her"}
    data = await _frame(registry, codec, SchemaName.ACCOUNT_CHANGE, new, written)

    assert await codec.decode_fetching(SchemaName.ACCOUNT_CHANGE, data) == value


async def test_new_writer_extra_top_level_field_on_account_change(
    registry: InProcessSchemaRegistry, codec: AvroCodec
) -> None:
    new = _with_field(
        SchemaName.ACCOUNT_CHANGE,
        "AccountChange",
        {"name": "source", "type": ["null", "string"], "default": None},
    )
    value = change("direct_message", delete=True)
    data = await _frame(
        registry, codec, SchemaName.ACCOUNT_CHANGE, new, {**value, "source": "mobile"}
    )

    assert await codec.decode_fetching(SchemaName.ACCOUNT_CHANGE, data) == value


# --- current writer, OLD reader (a consumer not yet upgraded) ------------------------------------


@pytest.mark.parametrize(
    ("name", "record_name", "field", "record"),
    [
        (SchemaName.APP, "App", "enabled", app(enabled=False)),
        (SchemaName.CONSENT, "Consent", "revoked_at", consent(revoked_at=consent()["expires_at"])),
    ],
    ids=["app", "consent"],
)
def test_old_reader_reads_current_records(
    codec: AvroCodec, name: SchemaName, record_name: str, field: str, record: Any
) -> None:
    old_reader = fastavro.parse_schema(_without_field(name, record_name, field))
    data = codec.encode(name, record)

    body = io.BytesIO(data[5:])
    decoded = fastavro.schemaless_reader(body, parsed_schema(name), old_reader)

    assert decoded == _strip(dict(record), field)


# --- not compatible ------------------------------------------------------------------------------


async def test_writer_without_a_field_that_has_no_default_is_a_wire_format_error(
    registry: InProcessSchemaRegistry, codec: AvroCodec
) -> None:
    """Removing ``App.name`` (no default) is not BACKWARD compatible: reported, not a crash."""
    incompatible = _without_field(SchemaName.APP, "App", "name")
    data = await _frame(registry, codec, SchemaName.APP, incompatible, _strip(dict(app()), "name"))

    with pytest.raises(WireFormatError, match="undecodable app body"):
        await codec.decode_fetching(SchemaName.APP, data)


def test_every_field_an_old_writer_may_lack_has_a_default() -> None:
    """The fields the tests above drop are the ones the schemas give defaults."""
    for name, record_name, field in [
        (SchemaName.APP, "App", "enabled"),
        (SchemaName.APP, "App", "sealed_signing_secrets"),
        (SchemaName.APP, "App", "delivery_mode"),
        (SchemaName.CONSENT, "Consent", "revoked_at"),
        (SchemaName.ACCOUNT_CHANGE, "Profile", "bio"),
    ]:
        fields = {f["name"]: f for f in _find_record(_current(name), record_name)["fields"]}
        assert "default" in fields[field], (name, field)


# --- sealed signing secrets (app.avsc) -----------------------------------------------------------


def _app_before_sealing() -> Schema:
    """app.avsc as it was before secrets were sealed: clear secrets only, without a default."""
    schema = _without_field(SchemaName.APP, "App", "sealed_signing_secrets")
    for field in _find_record(schema, "App")["fields"]:
        if field["name"] == "signing_secrets":
            del field["default"]
    return schema


async def test_app_written_before_sealing_keeps_its_clear_secrets(
    registry: InProcessSchemaRegistry, codec: AvroCodec
) -> None:
    """A record from before sealing still on the compacted topic: its clear secrets are read
    (the worker signs with them until the app's next record), and no sealed one."""
    written = {
        **_strip(dict(app()), "sealed_signing_secrets"),
        "signing_secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    }
    data = await _frame(registry, codec, SchemaName.APP, _app_before_sealing(), written)

    decoded = await codec.decode_fetching(SchemaName.APP, data)

    assert decoded == {**written, "sealed_signing_secrets": []}


def test_worker_from_before_sealing_finds_no_secret_in_current_records(codec: AvroCodec) -> None:
    """Readable, but without a secret to sign with: why workers are upgraded before the API."""
    old_reader = fastavro.parse_schema(_app_before_sealing())
    data = codec.encode(SchemaName.APP, app())

    body = io.BytesIO(data[5:])
    decoded = fastavro.schemaless_reader(body, parsed_schema(SchemaName.APP), old_reader)

    assert decoded == _strip(dict(app()), "sealed_signing_secrets")
    assert isinstance(decoded, dict)
    assert decoded["signing_secrets"] == []


# --- delivery modes (app.avsc) -------------------------------------------------------------------


async def test_app_written_before_delivery_modes_reads_as_a_webhook_app(
    registry: InProcessSchemaRegistry, codec: AvroCodec
) -> None:
    """A record from before poll mode: the worker keeps POSTing to its webhook URL."""
    written = _strip(dict(app()), "delivery_mode")
    schema = _without_field(SchemaName.APP, "App", "delivery_mode")
    data = await _frame(registry, codec, SchemaName.APP, schema, written)

    decoded = await codec.decode_fetching(SchemaName.APP, data)

    assert decoded == {**written, "delivery_mode": "webhook"}
