"""An in-memory **stand-in** for a Confluent Schema Registry, served by aiohttp.

No Confluent Schema Registry can run on this machine (it needs a JVM, and its Docker image a
container engine), so the client is tested against this. It implements the endpoints the
client (``python-schema-registry-client``) calls, with Confluent's request and response shapes
and error codes:

* ``POST /subjects/{subject}`` (is this schema in the subject?): ``{"subject", "id",
  "version", "schema"}``, or 404 with 40401 (no such subject) / 40403 (schema not found);
* ``POST /subjects/{subject}/versions`` with ``{"schema": "...", "schemaType": "AVRO"}``:
  ``{"id": N}``; the same schema always gets the same global id (ids start at
  :data:`FIRST_ID`); 422 (error code 42201) for an invalid schema, 409 (error code 409) for an
  incompatible one;
* ``GET /schemas/ids/{id}``: ``{"schema": "..."}``, or 404 (40403);
* ``POST /compatibility/subjects/{subject}/versions/latest[?verbose=true]``:
  ``{"is_compatible": bool[, "messages": [...]]}``, or 404 (40401);
* ``GET /config/{subject}``: ``{"compatibilityLevel": "..."}``, or 404 (40408) when the
  subject has no level of its own; ``PUT /config/{subject}`` with ``{"compatibility": "..."}``.

Schemas are stored compact (no whitespace), as Confluent stores them. Its compatibility check
is a simplification of Avro's: under any level but NONE, a new schema is compatible with the
subject's latest when every top-level field it adds has a default and every field both have
has the same type. That is enough to test the client's side of the contract (URLs, bodies,
ids, levels, error mapping), not the real registry's every behaviour.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import fastavro
from aiohttp import web

__all__ = ["CONTENT_TYPE", "FIRST_ID", "StandInRegistry"]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
FIRST_ID = 100  # not 1: nothing may assume the registry's ids start where ours do
_LEVELS = {"BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL"}
_LEVELS |= {"FULL_TRANSITIVE", "NONE"}


@dataclass
class StandInRegistry:
    """The registry's state, and switches that make it misbehave."""

    ids: dict[str, int] = field(default_factory=dict)  # compact schema -> global id
    schemas: dict[int, str] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)  # versions, oldest first
    levels: dict[str, str] = field(default_factory=dict)  # subject-level compatibility
    global_level: str = "BACKWARD"
    # (method, path, Content-Type, query string) of every request, in order
    requests: list[tuple[str, str, str | None, str]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)  # of every request
    fail_with: int | None = None  # answer every request with this HTTP status (JSON body)
    html_error: int | None = None  # answer every request with this status and an HTML page
    reject_schemas: bool = False  # answer every registration 422, as for an invalid schema
    read_only: bool = False  # refuse configuration changes (403), as read-only credentials
    hang: bool = False  # never answer (until released)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        application = web.Application(middlewares=[self._interfere])
        routes = application.router
        routes.add_post("/subjects/{subject}/versions", self.register)
        routes.add_post("/subjects/{subject}", self.lookup)
        routes.add_get("/schemas/ids/{schema_id}", self.fetch)
        routes.add_post("/compatibility/subjects/{subject}/versions/{version}", self.compatible)
        routes.add_get("/config/{subject}", self.get_config)
        routes.add_put("/config/{subject}", self.put_config)
        return application

    def posts_to(self, path_end: str) -> int:
        """How many POST requests went to a path ending with ``path_end``."""
        return sum(1 for r in self.requests if r[0] == "POST" and r[1].endswith(path_end))

    def gets(self, path_start: str) -> int:
        return sum(1 for r in self.requests if r[0] == "GET" and r[1].startswith(path_start))

    @web.middleware
    async def _interfere(self, request: web.Request, handler: Any) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type")
        self.requests.append((request.method, request.path, content_type, request.query_string))
        self.authorizations.append(request.headers.get("Authorization"))
        if self.hang:
            await self.released.wait()
        if self.html_error is not None:
            return web.Response(
                status=self.html_error, text="<html>Bad Gateway</html>", content_type="text/html"
            )
        if self.fail_with is not None:
            return _error(self.fail_with, 50001, "Error in the backend data store")
        response: web.StreamResponse = await handler(request)
        return response

    async def register(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        body = await request.json()
        compact = _compact_avro(body)
        if compact is None or self.reject_schemas:
            return _error(422, 42201, "Either the input schema or one its references is invalid")
        versions = self.subjects.get(subject, [])
        schema_id = self.ids.get(compact)
        if schema_id is not None and schema_id in versions:
            return _json({"id": schema_id})
        problems = self._problems(subject, compact)
        if problems:
            message = (
                "Schema being registered is incompatible with an earlier schema for subject "
                f'"{subject}", details: {problems}'
            )
            return _error(409, 409, message)
        if schema_id is None:
            schema_id = self.ids.setdefault(compact, FIRST_ID + len(self.ids))
            self.schemas[schema_id] = compact
        self.subjects.setdefault(subject, []).append(schema_id)
        return _json({"id": schema_id})

    async def lookup(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        compact = _compact_avro(await request.json())
        versions = self.subjects.get(subject)
        if versions is None:
            return _error(404, 40401, f"Subject '{subject}' not found.")
        schema_id = self.ids.get(compact or "")
        if schema_id not in versions:
            return _error(404, 40403, "Schema not found")
        version = versions.index(schema_id) + 1
        return _json({"subject": subject, "id": schema_id, "version": version, "schema": compact})

    async def fetch(self, request: web.Request) -> web.Response:
        schema_id = int(request.match_info["schema_id"])
        text = self.schemas.get(schema_id)
        if text is None:
            return _error(404, 40403, f"Schema {schema_id} not found")
        return _json({"schema": text})

    async def compatible(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        if request.match_info["version"] != "latest":
            return _error(422, 42202, "the stand-in checks against 'latest' only")
        if subject not in self.subjects:
            return _error(404, 40401, f"Subject '{subject}' not found.")
        compact = _compact_avro(await request.json())
        if compact is None:
            return _error(422, 42201, "Invalid schema")
        problems = self._problems(subject, compact)
        answer: dict[str, Any] = {"is_compatible": not problems}
        if request.query.get("verbose") == "true":
            answer["messages"] = problems
        return _json(answer)

    async def get_config(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        level = self.levels.get(subject)
        if level is None:
            message = f"Subject '{subject}' does not have subject-level compatibility configured"
            return _error(404, 40408, message)
        return _json({"compatibilityLevel": level})

    async def put_config(self, request: web.Request) -> web.Response:
        if self.read_only:
            return _error(403, 40301, "User is denied operation Write on Subject")
        level = (await request.json()).get("compatibility")
        if level not in _LEVELS:
            return _error(422, 42203, "Invalid compatibility level")
        self.levels[request.match_info["subject"]] = level
        return _json({"compatibility": level})

    def _problems(self, subject: str, compact: str) -> list[str]:
        """Why ``compact`` cannot read the subject's latest schema (the simplified rule)."""
        versions = self.subjects.get(subject)
        if not versions or self.levels.get(subject, self.global_level) == "NONE":
            return []
        new, old = json.loads(compact), json.loads(self.schemas[versions[-1]])
        if not (isinstance(new, dict) and isinstance(old, dict)):
            return [] if new == old else ["the schemas' types differ"]
        old_fields = {f["name"]: f for f in old.get("fields", [])}
        problems = []
        for new_field in new.get("fields", []):
            before = old_fields.get(new_field["name"])
            if before is None and "default" not in new_field:
                problems.append(f"READER_FIELD_MISSING_DEFAULT_VALUE, field {new_field['name']}")
            elif before is not None and before["type"] != new_field["type"]:
                problems.append(f"TYPE_MISMATCH, field {new_field['name']}")
        return problems


def _compact_avro(body: Any) -> str | None:
    """The request's schema, compact, or None if it is not a valid Avro schema."""
    if not isinstance(body, dict) or body.get("schemaType", "AVRO") != "AVRO":
        return None
    text = body.get("schema")
    if not isinstance(text, str):
        return None
    try:
        schema = json.loads(text)
        fastavro.parse_schema(schema)
    except (ValueError, KeyError, TypeError, fastavro.schema.SchemaParseException):
        return None
    return json.dumps(schema, separators=(",", ":"))


def _json(payload: object) -> web.Response:
    return web.json_response(payload, content_type=CONTENT_TYPE)


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {"error_code": code, "message": message}, status=status, content_type=CONTENT_TYPE
    )
