"""Schema registries: where a schema id on the wire is turned into a schema.

:class:`InProcessSchemaRegistry` is the default (ids handed out in this process, identical in
every process because schemas are registered in a fixed order); :class:`ConfluentSchemaRegistry`
talks to a Confluent-compatible registry by URL.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import aiohttp

from portability.wire.errors import SchemaRegistryError

__all__ = ["ConfluentSchemaRegistry", "InProcessSchemaRegistry", "SchemaRegistry"]


class SchemaRegistry(Protocol):
    """What the codec needs of a registry."""

    async def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` (Avro JSON) under ``subject``; return its global id."""
        ...

    async def fetch(self, schema_id: int) -> str:
        """The schema JSON with this id; raises :class:`SchemaRegistryError` if unknown."""
        ...

    async def close(self) -> None: ...


class InProcessSchemaRegistry:
    """Ids are handed out in registration order; the same schema text gets the same id."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, str] = {}
        self._subjects: dict[str, list[int]] = {}

    async def register(self, subject: str, schema: str) -> int:
        schema_id = self._ids.get(schema)
        if schema_id is None:
            schema_id = len(self._ids) + 1
            self._ids[schema] = schema_id
            self._schemas[schema_id] = schema
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


class ConfluentSchemaRegistry:
    """A Confluent-compatible registry over its REST API."""

    _CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self._url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def register(self, subject: str, schema: str) -> int:
        body = json.dumps({"schema": schema, "schemaType": "AVRO"})
        url = f"{self._url}/subjects/{subject}/versions"
        headers = {"Content-Type": self._CONTENT_TYPE}
        what = f"register {subject}"
        try:
            async with self._http().post(url, data=body, headers=headers) as response:
                payload = await self._json(response, what)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise self._unreachable(what, error) from error
        return int(payload["id"])

    async def fetch(self, schema_id: int) -> str:
        url = f"{self._url}/schemas/ids/{schema_id}"
        what = f"schema id {schema_id}"
        try:
            async with self._http().get(url) as response:
                payload = await self._json(response, what)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise self._unreachable(what, error) from error
        return str(payload["schema"])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _unreachable(self, what: str, error: Exception) -> SchemaRegistryError:
        """A connection failure or timeout: the registry may answer if asked again."""
        unreachable = SchemaRegistryError(
            f"schema registry {self._url}: {what}: unreachable: {error!r}"
        )
        unreachable.retriable = True
        return unreachable

    async def _json(self, response: aiohttp.ClientResponse, what: str) -> dict[str, Any]:
        text = await response.text()
        if response.status != 200:
            error = SchemaRegistryError(
                f"schema registry {self._url}: {what}: HTTP {response.status}: {text[:200]}"
            )
            error.retriable = response.status >= 500
            raise error
        payload: dict[str, Any] = json.loads(text)
        return payload
