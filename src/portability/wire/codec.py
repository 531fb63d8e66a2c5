"""Confluent framing over Avro: magic byte 0, a 4-byte big-endian schema id, the Avro body.

One :class:`AvroCodec` per process; schemas are parsed once. Decoding resolves the writer's
schema (by id) against the reader's (this build's ``.avsc``), so records written with an
older or newer compatible schema read correctly.

Decoding is typed per schema: :meth:`AvroCodec.decode` and :meth:`AvroCodec.decode_fetching`
of ``SchemaName.CONSENT`` return a ``ConsentRecord``, and so on for each schema (overloads;
a ``SchemaName`` known only at run time gives a read-only mapping). The reader's schema is the
``.avsc`` the TypedDict in :mod:`portability.wire.records` spells, so the decoded dict has its
shape; that is the one place the shape is taken on trust rather than checked by mypy, and
callers need no cast of their own.
"""

from __future__ import annotations

import io
import json
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, overload

import fastavro

from portability.wire.change_encoder import ChangeEncoder
from portability.wire.delivery_encoder import DeliveryEncoder
from portability.wire.delivery_head import HeadReader
from portability.wire.delivery_log import DeliveryLogEntry
from portability.wire.errors import SchemaRegistryError, UnknownSchemaIdError, WireFormatError
from portability.wire.records import (
    AccountChange,
    AppRecord,
    ConsentRecord,
    DeliveryHead,
    DeliveryRecord,
    DeliveryStatusRecord,
    MatcherCheckpoint,
    NotificationRecord,
)
from portability.wire.registry import SchemaRegistry
from portability.wire.schemas import SchemaName, parsed_schema, schema_text
from portability.wire.subjects import SubjectStrategy, subject_for
from portability.wire.topics import TopicNames

__all__ = ["AvroCodec"]

_MAGIC = 0
_HEADER = struct.Struct(">bI")
# How long an id the registry does not know is not asked for again. A bad producer can put an
# unknown id on every record; asking once per record would hammer the registry and slow the
# partition to one request per record. Short, so a schema registered meanwhile is found soon.
UNKNOWN_ID_TTL_S = 5.0
# Unknown ids remembered at most; corrupt frames carry random ids, and each is one entry.
_UNKNOWN_IDS_MAX = 4096


class AvroCodec:
    """Encodes and decodes the pipeline's records with a schema registry.

    Args:
        registry: Where schemas are registered and writer schemas fetched.
        topic_prefix: Shorthand for ``topics=TopicNames.with_prefix(topic_prefix)``.
        topics: The topic names, which name the subjects (see :mod:`portability.wire.subjects`).
        subject_strategy: How a schema's subject is named.
        unknown_id_ttl_s: How long an id the registry does not know is not asked for again.
        clock: Monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        registry: SchemaRegistry,
        topic_prefix: str = "",
        *,
        topics: TopicNames | None = None,
        subject_strategy: SubjectStrategy = SubjectStrategy.TOPIC_NAME,
        unknown_id_ttl_s: float = UNKNOWN_ID_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._topics = topics if topics is not None else TopicNames.with_prefix(topic_prefix)
        self._strategy = subject_strategy
        self._unknown_ttl_s = unknown_id_ttl_s
        self._clock = clock
        # schema id -> when the registry may be asked about it again
        self._unknown: dict[int, float] = {}
        self._writer_ids: dict[SchemaName, int] = {}
        self._headers: dict[SchemaName, bytes] = {}
        # (writer schema id, reader schema name) -> parsed writer schema
        self._writers: dict[int, Any] = {}
        # The Delivery schema whose records delivery_head reads directly, and its reader.
        self._head_schema_id: int | None = None
        self._head_reader: HeadReader | None = None
        # Writes Delivery records around their change's bytes (the matcher's hot path); set
        # by start(), as the schema ids it frames with are.
        self.delivery_encoder: DeliveryEncoder
        # The generated writer of this build's AccountChange bodies (encode_body's hot path).
        self._change_encoder: ChangeEncoder | None = None

    @property
    def registry(self) -> SchemaRegistry:
        return self._registry

    async def start(self) -> None:
        """Register this build's schemas (idempotent); call before encoding."""
        for name in SchemaName:
            schema_id = await self._registry.register(self.subject(name), schema_text(name))
            self._writer_ids[name] = schema_id
            self._headers[name] = _HEADER.pack(_MAGIC, schema_id)
            self._writers[schema_id] = parsed_schema(name)
        self._head_reader = HeadReader.of(json.loads(schema_text(SchemaName.DELIVERY)))
        if self._head_reader is not None:
            self._head_schema_id = self._writer_ids[SchemaName.DELIVERY]
        self.delivery_encoder = DeliveryEncoder(
            json.loads(schema_text(SchemaName.DELIVERY)), self._writer_ids[SchemaName.DELIVERY]
        )
        self._change_encoder = ChangeEncoder.of(
            parsed_schema(SchemaName.ACCOUNT_CHANGE), SchemaName.ACCOUNT_CHANGE.value
        )

    def subject(self, name: SchemaName) -> str:
        """The registry subject of schema ``name``: by the strategy, of the topic it is on."""
        return subject_for(name, self._topics, self._strategy)

    def schema_id(self, name: SchemaName) -> int:
        return self._writer_ids[name]

    def encode(self, name: SchemaName, record: Mapping[str, Any]) -> bytes:
        """Frame and encode ``record`` with this build's schema ``name``."""
        return _written(name, record, self._headers[name])

    def encode_body(self, name: SchemaName, record: Mapping[str, Any]) -> bytes:
        """``record`` encoded with this build's schema ``name``, unframed: the bytes of a
        field of that type inside another record (see :attr:`delivery_encoder`).

        An AccountChange goes through the writer generated for its schema at :meth:`start`
        (:mod:`portability.wire.change_encoder`: fastavro's bytes, several times faster).
        """
        if name is SchemaName.ACCOUNT_CHANGE and self._change_encoder is not None:
            return self._change_encoder.encode(record)
        return _written(name, record, b"")

    @overload
    def decode(
        self, name: Literal[SchemaName.ACCOUNT_CHANGE], data: bytes | None
    ) -> AccountChange: ...

    @overload
    def decode(self, name: Literal[SchemaName.CONSENT], data: bytes | None) -> ConsentRecord: ...

    @overload
    def decode(self, name: Literal[SchemaName.APP], data: bytes | None) -> AppRecord: ...

    @overload
    def decode(self, name: Literal[SchemaName.DELIVERY], data: bytes | None) -> DeliveryRecord: ...

    @overload
    def decode(
        self, name: Literal[SchemaName.DELIVERY_STATUS], data: bytes | None
    ) -> DeliveryStatusRecord: ...

    @overload
    def decode(
        self, name: Literal[SchemaName.NOTIFICATION], data: bytes | None
    ) -> NotificationRecord: ...

    @overload
    def decode(
        self, name: Literal[SchemaName.MATCHER_CHECKPOINT], data: bytes | None
    ) -> MatcherCheckpoint: ...

    @overload
    def decode(
        self, name: Literal[SchemaName.DELIVERY_LOG_ENTRY], data: bytes | None
    ) -> DeliveryLogEntry: ...

    @overload
    def decode(self, name: SchemaName, data: bytes | None) -> Mapping[str, Any]: ...

    def decode(self, name: SchemaName, data: bytes | None) -> Any:
        """Decode a framed record into this build's schema ``name`` (typed by the overloads:
        ``Any`` here is the one unchecked step from fastavro's dict to the schema's TypedDict).

        Raises :class:`WireFormatError` for a missing value, a bad frame, a schema id this
        process has not loaded (see :meth:`load_schema_id`) or a body that does not decode.
        """
        schema_id = self.frame_schema_id(data)
        writer = self._writers.get(schema_id)
        if writer is None:
            raise UnknownSchemaIdError(schema_id)
        try:
            body = io.BytesIO(data)  # type: ignore[arg-type]  # frame_schema_id rejected None
            body.seek(_HEADER.size)
            reader = parsed_schema(name)
            # Same schema on both sides: skip resolution, which compares schemas on every call.
            decoded = fastavro.schemaless_reader(body, writer, None if writer is reader else reader)
        # fastavro raises many unrelated types for a corrupt body; all mean "undecodable".
        except Exception as error:
            # Only the error's first line: a schema resolution error's repr holds both
            # schemas whole (25 KB), which would flood logs and dead-letter listings.
            first_line = str(error).strip().split("\n", 1)[0][:200]
            raise WireFormatError(
                f"undecodable {name.value} body: {type(error).__name__}: {first_line}"
            ) from error
        if not isinstance(decoded, dict):
            raise WireFormatError(f"{name.value} body is not a record")
        return decoded

    def delivery_head(self, data: bytes | None) -> DeliveryHead | None:
        """The head of a framed Delivery record, read without decoding its change.

        Returns None for a record written with another schema than this build's, or without
        a rendering: decode it with :meth:`decode_fetching` then. Raises
        :class:`WireFormatError` as :meth:`decode` does.
        """
        if self.frame_schema_id(data) != self._head_schema_id or self._head_reader is None:
            return None
        return self._head_reader.read(data, _HEADER.size)  # type: ignore[arg-type]  # not None

    @staticmethod
    def frame_schema_id(data: bytes | None) -> int:
        """The schema id in a Confluent frame; :class:`WireFormatError` if not framed."""
        if data is None:
            raise WireFormatError("record has no value")
        if len(data) < _HEADER.size:
            raise WireFormatError(f"record of {len(data)} bytes is shorter than the frame header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise WireFormatError(f"bad magic byte {magic} (expected 0: Confluent framing)")
        return int(schema_id)

    @overload
    async def decode_fetching(
        self, name: Literal[SchemaName.ACCOUNT_CHANGE], data: bytes | None
    ) -> AccountChange: ...

    @overload
    async def decode_fetching(
        self, name: Literal[SchemaName.CONSENT], data: bytes | None
    ) -> ConsentRecord: ...

    @overload
    async def decode_fetching(
        self, name: Literal[SchemaName.APP], data: bytes | None
    ) -> AppRecord: ...

    @overload
    async def decode_fetching(
        self, name: Literal[SchemaName.DELIVERY], data: bytes | None
    ) -> DeliveryRecord: ...

    @overload
    async def decode_fetching(
        self, name: Literal[SchemaName.DELIVERY_STATUS], data: bytes | None
    ) -> DeliveryStatusRecord: ...

    @overload
    async def decode_fetching(
        self, name: Literal[SchemaName.NOTIFICATION], data: bytes | None
    ) -> NotificationRecord: ...

    @overload
    async def decode_fetching(
        self, name: Literal[SchemaName.MATCHER_CHECKPOINT], data: bytes | None
    ) -> MatcherCheckpoint: ...

    @overload
    async def decode_fetching(self, name: SchemaName, data: bytes | None) -> Mapping[str, Any]: ...

    async def decode_fetching(self, name: SchemaName, data: bytes | None) -> Any:
        """Like :meth:`decode`, but first fetches a writer schema id not seen before."""
        try:
            return self.decode(name, data)
        except UnknownSchemaIdError as error:
            if not await self.load_schema_id(error.schema_id):
                raise
        return self.decode(name, data)

    async def load_schema_id(self, schema_id: int) -> bool:
        """Fetch a writer schema this process does not know yet; False if the registry lacks it.

        An id the registry did not know (or answered with something that is not a schema) is
        remembered for ``unknown_id_ttl_s``: within that time it is False without a request.
        A retriable registry error is raised, and not remembered.
        """
        if schema_id in self._writers:
            return True
        now = self._clock()
        if self._unknown.get(schema_id, now) > now:
            return False
        try:
            text = await self._registry.fetch(schema_id)
            self._writers[schema_id] = fastavro.parse_schema(json.loads(text))
        except SchemaRegistryError as error:
            if error.retriable:
                raise
        except (ValueError, TypeError, fastavro.schema.SchemaParseException):
            pass  # not a schema: unknown, as an id the registry lacks
        if schema_id in self._writers:
            self._unknown.pop(schema_id, None)
            return True
        if len(self._unknown) >= _UNKNOWN_IDS_MAX:
            self._unknown = {i: until for i, until in self._unknown.items() if until > now}
            if len(self._unknown) >= _UNKNOWN_IDS_MAX:
                self._unknown.clear()  # a flood of distinct ids: start over rather than grow
        self._unknown[schema_id] = now + self._unknown_ttl_s
        return False

    def writer_name(self, schema_id: int) -> str | None:
        """The full name of a loaded writer schema (see :meth:`load_schema_id`); None for an
        id not loaded, or a schema that is not a named record."""
        writer = self._writers.get(schema_id)
        if not isinstance(writer, dict) or writer.get("type") != "record":
            return None
        return str(writer.get("name", "")) or None


def _written(name: SchemaName, record: Mapping[str, Any], header: bytes) -> bytes:
    """``header`` and ``record`` encoded by fastavro with this build's schema ``name``."""
    buffer = io.BytesIO()
    buffer.write(header)
    try:
        fastavro.schemaless_writer(buffer, parsed_schema(name), record)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise WireFormatError(f"cannot encode {name.value}: {error}") from error
    return buffer.getvalue()
