"""``open_codec``: the codec a process builds from its settings, against the stand-in registry.

The registry here is the stand-in of :mod:`tests.wire.registry_stand_in` (no Confluent Schema
Registry can run on this machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portability.runtime import open_codec
from portability.settings import Settings
from portability.wire import (
    ConfluentSchemaRegistry,
    IncompatibleSchemaError,
    InProcessSchemaRegistry,
    SchemaName,
)
from portability.wire.schemas import schema_text

from .conftest import Connect, Served


@pytest.mark.parametrize(
    ("strategy", "subject"),
    [
        ("topic_name", "x.account.changes-value"),
        ("record_name", "portability.v1.AccountChange"),
        ("topic_record_name", "x.account.changes-portability.v1.AccountChange"),
    ],
)
async def test_open_codec_registers_under_the_configured_strategy(
    stand_in: Served, tmp_path: Path, strategy: str, subject: str
) -> None:
    server, url = stand_in
    settings = Settings(
        data_dir=tmp_path,
        topic_prefix="x.",
        schema_registry_url=url,
        schema_subject_strategy=strategy,  # a str, as from the env
    )

    codec = await open_codec(settings)
    await codec.registry.close()

    assert isinstance(codec.registry, ConfluentSchemaRegistry)
    assert codec.subject(SchemaName.ACCOUNT_CHANGE) == subject
    assert server.subjects[subject] == [codec.schema_id(SchemaName.ACCOUNT_CHANGE)]
    assert len(server.subjects) == len(SchemaName)
    assert set(server.levels.values()) == {"BACKWARD"}


async def test_open_codec_fails_start_on_an_incompatible_schema(
    stand_in: Served, connect: Connect, tmp_path: Path
) -> None:
    """A build whose schema breaks its subject does not start, and says which subject."""
    _, url = stand_in
    earlier = json.loads(schema_text(SchemaName.APP))
    assert earlier["fields"][0] == {"name": "app_id", "type": "string"}
    earlier["fields"][0]["type"] = "long"  # what the subject holds: app_id as a number
    await connect().register("apps-value", json.dumps(earlier))
    settings = Settings(data_dir=tmp_path, schema_registry_url=url)

    with pytest.raises(IncompatibleSchemaError, match="subject 'apps-value'") as caught:
        await open_codec(settings)
    assert "TYPE_MISMATCH, field app_id" in str(caught.value)


async def test_open_codec_without_a_url_is_embedded(tmp_path: Path) -> None:
    codec = await open_codec(Settings(data_dir=tmp_path, topic_prefix="e."))

    assert isinstance(codec.registry, InProcessSchemaRegistry)
    assert codec.subject(SchemaName.CONSENT) == "e.consents-value"
