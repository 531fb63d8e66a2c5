"""Schema registries: where a schema id on the wire is turned into a schema.

:class:`InProcessSchemaRegistry` is the default (embedded mode). Its ids are not handed out in
registration order but computed from the schema itself (:func:`embedded_schema_id`), so every
process, and a platform producer writing to the embedded broker, arrives at the same id for
the same schema without asking anyone. :class:`ConfluentSchemaRegistry`
(:mod:`portability.wire.confluent`) talks to a Confluent-compatible registry by URL, which
hands out its own ids; it is imported only where a URL is configured, as its HTTP client
library takes a noticeable share of a process's start.
"""

from __future__ import annotations

import json
from typing import Protocol

import fastavro

from portability.wire.errors import SchemaRegistryError

__all__ = [
    "InProcessSchemaRegistry",
    "SchemaRegistry",
    "canonical_form",
    "embedded_schema_id",
]

# Ids are positive signed 32-bit ints in Confluent's frame and API; 0 is never handed out.
_ID_MODULUS = 2**31 - 1


class SchemaRegistry(Protocol):
    """What the codec needs of a registry."""

    async def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` (Avro JSON) under ``subject``; return its global id."""
        ...

    async def fetch(self, schema_id: int) -> str:
        """The schema JSON with this id; raises :class:`SchemaRegistryError` if unknown."""
        ...

    async def close(self) -> None: ...


def canonical_form(schema: str) -> str:
    """The Avro spec's Parsing Canonical Form of the schema JSON ``schema``.

    Raises:
        ValueError: ``schema`` is not JSON, or not a valid Avro schema.
    """
    try:
        form: str = fastavro.schema.to_parsing_canonical_form(json.loads(schema))
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as error:
        # UnknownType is a ValueError; SchemaParseException is not.
        raise ValueError(f"not a valid Avro schema: {error}") from error
    return form


def embedded_schema_id(schema: str) -> int:
    """The embedded mode's schema id of the schema JSON ``schema``: a pure function of it.

    ``1 + F mod (2**31 - 1)``, where ``F`` is the Avro spec's CRC-64-AVRO (Rabin) fingerprint
    of the schema's Parsing Canonical Form as an unsigned 64-bit integer (Java:
    ``Long.remainderUnsigned(SchemaNormalization.parsingFingerprint64(schema), 0x7FFFFFFF) + 1``).
    The result is in ``1 .. 2**31 - 1``: never 0, and a positive int in Confluent's frame.
    Schemas that differ only in what the canonical form drops (doc, defaults, aliases,
    logical types) share an id: their records are the same bytes.

    Raises:
        ValueError: ``schema`` is not a valid Avro schema.
    """
    digest = fastavro.schema.fingerprint(canonical_form(schema), "CRC-64-AVRO")
    # fastavro spells the fingerprint's bytes little-endian, as Java's implementation does.
    fingerprint = int.from_bytes(bytes.fromhex(digest), "little")
    return 1 + fingerprint % _ID_MODULUS


class InProcessSchemaRegistry:
    """Ids are :func:`embedded_schema_id`; two canonical forms may not share one."""

    def __init__(self) -> None:
        self._schemas: dict[int, str] = {}
        self._canonical: dict[int, str] = {}
        self._subjects: dict[str, list[int]] = {}

    async def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` under ``subject`` and return its id.

        Raises:
            SchemaRegistryError: ``schema`` is not a valid Avro schema, or its id is already
                held by a schema with another canonical form (a fingerprint collision, which
                would make records of one read as the other). Neither is retriable.
        """
        try:
            form = canonical_form(schema)
        except ValueError as error:
            raise SchemaRegistryError(f"register {subject}: {error}") from error
        schema_id = embedded_schema_id(schema)
        held = self._canonical.setdefault(schema_id, form)
        if held != form:
            raise SchemaRegistryError(
                f"register {subject}: schema id {schema_id} collision: the schema's canonical "
                f"form {form[:120]!r} has the same embedded id as the registered {held[:120]!r}; "
                "rename a record or field of the new schema"
            )
        # The first text of a canonical form is kept: the others read the same bytes.
        self._schemas.setdefault(schema_id, schema)
        versions = self._subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return schema_id

    async def fetch(self, schema_id: int) -> str:
        try:
            return self._schemas[schema_id]
        except KeyError:
            raise SchemaRegistryError(f"unknown schema id {schema_id}") from None

    async def close(self) -> None:
        return None
