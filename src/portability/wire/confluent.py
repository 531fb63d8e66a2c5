"""A Confluent-compatible schema registry, through ``python-schema-registry-client``.

The REST side (register, fetch by id, subject compatibility) is the library's
:class:`~schema_registry.client.AsyncSchemaRegistryClient` (over a pooled HTTP client, see
:class:`_Client`); it is off the hot path (a process
registers its schemas once at start and fetches each unknown writer id once). The framing and
the per-record decoding stay in :mod:`portability.wire.codec`, which is measurably faster
than the library's serializer in our batch loops (docs/architecture.md, "Schemas on the wire").

Every failure is a :class:`SchemaRegistryError`: ``retriable`` when the registry could not be
reached, timed out or answered 5xx (asking again may succeed), not for 4xx answers.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fastavro
import httpx
from schema_registry.client import AsyncSchemaRegistryClient
from schema_registry.client.errors import ClientError
from schema_registry.client.schema import AvroSchema

from portability.errors import ConfigurationError
from portability.wire.errors import IncompatibleSchemaError, SchemaRegistryError

__all__ = ["ConfluentSchemaRegistry"]

log = logging.getLogger(__name__)

# Levels under which a subject's new schema can read every record of the one before it: what
# the pipeline's readers need of a writer that evolves (docs/architecture.md, "Schemas on the
# wire").
_READS_OLD_DATA = {"BACKWARD", "BACKWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"}
# A registry that refuses configuration changes to this client (read-only credentials).
_NOT_ALLOWED = {401, 403, 405}
# What a subject's level is when this client may not set one.
_GLOBAL = "the registry's global level"


class _UnreadableAnswer(Exception):
    """A 5xx answer, or one whose body is not JSON: the library would misread both."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:200]}")
        self.status = status


class _Client(AsyncSchemaRegistryClient):
    """The library's client over one pooled HTTP client, reading each answer's status first.

    The library opens a new ``httpx.AsyncClient`` for every request, which costs ~20 ms here
    (it loads the CA bundle each time) and a new connection: ~0.85 s to register this build's
    schemas at start, against ~0.1 s pooled (docs/architecture.md, "Schemas on the wire"). Its
    URLs, bodies, caches and answers are kept; only the transport is this one.

    It also calls ``response.json()`` on every answer, so a proxy's HTML error page would
    surface as a ``JSONDecodeError``, indistinguishable from a bad schema; and some of its
    methods turn a 5xx into ``None`` ("not found"), which must not be negative-cached. Both
    raise :class:`_UnreadableAnswer` here instead.
    """

    def __init__(self, url: str, timeout: httpx.Timeout) -> None:
        super().__init__(url, timeout=timeout)
        self._http: httpx.AsyncClient | None = None

    async def request(
        self,
        url: str,
        method: str = "GET",
        body: dict[Any, Any] | None = None,
        params: dict[Any, Any] | None = None,
        headers: dict[Any, Any] | None = None,
        timeout: Any = httpx.USE_CLIENT_DEFAULT,  # noqa: ASYNC109 - the library's signature
    ) -> httpx.Response:
        if self._http is None:
            self._http = httpx.AsyncClient(**self.client_kwargs)
        response = await self._http.request(
            method,
            url,
            headers=self.prepare_headers(body=body, headers=headers),
            json=body,
            params=params,
            timeout=timeout,
        )
        if response.status_code >= 500:
            raise _UnreadableAnswer(response.status_code, response.text)
        try:
            response.json()
        except ValueError:
            raise _UnreadableAnswer(response.status_code, response.text) from None
        return response

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


class ConfluentSchemaRegistry:
    """A Confluent-compatible registry over its REST API.

    Registering a schema under a subject first makes sure the subject keeps old records
    readable: a subject without a compatibility level of its own gets ``compatibility``
    (BACKWARD by default), and a schema the subject does not hold yet is checked with the
    registry's compatibility endpoint before it is registered; an incompatible one raises
    :class:`IncompatibleSchemaError` naming the subject.

    Args:
        url: The registry's base URL (``http://`` or ``https://``; credentials may be in it).
        timeout_s: Timeout of each phase of a request (connect, read, write).
        compatibility: The level set on a subject that has none.
    """

    def __init__(self, url: str, timeout_s: float = 10.0, compatibility: str = "BACKWARD") -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Not the URL itself: credentials may be in it.
            raise ConfigurationError(
                "PORTABILITY_SCHEMA_REGISTRY_URL is not an http:// or https:// URL with a host; "
                "set it to e.g. http://schema-registry:8081"
            )
        # Messages name the registry without the credentials a URL may carry.
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self._where = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._client = _Client(url, timeout=httpx.Timeout(timeout_s))
        self._compatibility = compatibility
        self._levels: dict[str, str] = {}

    async def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` (Avro JSON) under ``subject``; return its global id.

        A schema the subject already holds gets its id back without any check, as with
        Confluent's own serializers.

        Raises:
            IncompatibleSchemaError: The subject's compatibility level refuses the schema.
            SchemaRegistryError: Anything else; ``retriable`` as the module docstring says.
        """
        what = f"register {subject}"
        try:
            parsed = AvroSchema(schema)
        except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as error:
            raise SchemaRegistryError(
                self._message(what, f"invalid Avro schema: {error}")
            ) from error
        async with self._mapped(what):
            await self._ensure_level(subject)
            known = await self._client.check_version(subject, parsed)
            if known is not None:
                return int(known.schema_id)
            verdict = await self._client.test_compatibility(subject, parsed, verbose=True)
            # False (not a dict): the subject has no version yet, so nothing to break.
            if isinstance(verdict, dict) and verdict.get("is_compatible") is False:
                raise self._incompatible(subject, parsed, verdict.get("messages"))
            try:
                return int(await self._client.register(subject, parsed))
            except ClientError as error:
                if error.http_code == 409:  # another writer registered first, in between
                    raise self._incompatible(subject, parsed, _server_message(error)) from error
                raise

    async def fetch(self, schema_id: int) -> str:
        """The schema JSON with this id.

        Raises:
            SchemaRegistryError: Unknown id (404) or not an Avro schema (not retriable), or
                the registry could not answer (retriable).
        """
        what = f"schema id {schema_id}"
        async with self._mapped(what):
            try:
                schema = await self._client.get_by_id(schema_id)
            except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as error:
                # The answer was JSON (see _Client) but its schema does not parse.
                raise SchemaRegistryError(
                    self._message(what, f"not a valid Avro schema: {error}")
                ) from error
        if schema is None:
            raise SchemaRegistryError(self._message(what, "HTTP 404: schema not found"))
        if schema.schema_type != "AVRO":
            raise SchemaRegistryError(self._message(what, f"a {schema.schema_type} schema"))
        return json.dumps(schema.raw_schema)

    async def close(self) -> None:
        """Close the pooled connections; the registry opens new ones if used again."""
        await self._client.aclose()

    async def _ensure_level(self, subject: str) -> None:
        """Give ``subject`` the configured compatibility level unless it has its own."""
        if subject in self._levels:
            return
        try:
            level = await self._client.get_compatibility(subject)
        except ClientError as error:
            if error.http_code != 404:  # 404 (40408): no subject-level configuration
                raise
            level = await self._set_level(subject)
        self._levels[subject] = level
        if level not in _READS_OLD_DATA and level != _GLOBAL:
            log.warning(
                "schema registry subject %s has compatibility %s: the registry will not stop a "
                "schema that cannot read the subject's older records",
                subject,
                level,
            )

    async def _set_level(self, subject: str) -> str:
        try:
            await self._client.update_compatibility(self._compatibility, subject)
        except ClientError as error:
            if error.http_code not in _NOT_ALLOWED:
                raise
            # Read-only credentials: the registry's global level applies, and every new
            # schema is still checked against the subject before it is registered.
            log.warning(
                "schema registry %s refuses to set compatibility %s on subject %s (HTTP %s)",
                self._where,
                self._compatibility,
                subject,
                error.http_code,
            )
            return _GLOBAL
        log.info(
            "schema registry subject %s: compatibility set to %s", subject, self._compatibility
        )
        return self._compatibility

    @contextlib.asynccontextmanager
    async def _mapped(self, what: str) -> AsyncIterator[None]:
        """Turn the library's and httpx's errors into :class:`SchemaRegistryError`."""
        try:
            yield
        except SchemaRegistryError:
            raise
        except _UnreadableAnswer as answer:
            raise self._error(what, str(answer), retriable=answer.status >= 500) from answer
        except ClientError as error:
            code = error.http_code
            detail = f"HTTP {code}: {error.message}" if code else error.message
            server = _server_message(error)
            detail += f": {server}" if server else ""
            retriable = code is not None and code >= 500
            raise self._error(what, detail, retriable=retriable) from error
        except httpx.HTTPError as error:  # connection refused, reset, timeouts
            raise self._error(what, f"unreachable: {error!r}", retriable=True) from error

    def _incompatible(
        self, subject: str, schema: AvroSchema, messages: object
    ) -> IncompatibleSchemaError:
        level = self._levels.get(subject, self._compatibility)
        reasons = "; ".join(str(m) for m in messages) if isinstance(messages, list) else messages
        return IncompatibleSchemaError(
            self._message(
                f"register {subject}",
                f"schema {schema.name} is incompatible with subject {subject!r} "
                f"(compatibility {level})" + (f": {reasons}" if reasons else "") + "; make the "
                "change compatible (a new field needs a default) or use another subject",
            ),
            subject,
        )

    def _error(self, what: str, detail: str, *, retriable: bool) -> SchemaRegistryError:
        error = SchemaRegistryError(self._message(what, detail))
        error.retriable = retriable
        return error

    def _message(self, what: str, detail: str) -> str:
        return f"schema registry {self._where}: {what}: {detail}"


def _server_message(error: ClientError) -> str:
    """The registry's own message in an error answer (``{"error_code", "message"}``)."""
    body = error.server_traceback
    if isinstance(body, dict):
        return str(body.get("message", ""))
    return str(body or "")
