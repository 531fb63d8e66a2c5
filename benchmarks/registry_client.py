"""Decoding per record: this project's codec against python-schema-registry-client's serializer.

Why it matters: the issue asks to use ``python-schema-registry-client`` for the registry, or to
say with a measurement why not. Its REST client is used (``portability.wire.confluent``); its
``AsyncAvroMessageSerializer`` would also replace the framing in ``portability.wire.codec``, and
this measures what that would cost where it matters, per record in the batch loops.

The same account changes (from the simulated platform, framed once by the codec) are decoded
by each path, in the same process and event loop, alternating, best of ``repeats``:

* ``codec (started)``: :meth:`AvroCodec.decode`, called synchronously in a loop as the matcher
  does; the writer id is this build's schema, so no schema resolution (what every pipeline
  process sees for records of its own build);
* ``codec (fetched writer)``: the same, in a codec that fetched the writer schema by id: the
  writer is then another object than the reader, and fastavro compares the two schemas on
  every record (and would resolve them, were they different);
* ``library (reader schema)``: ``await serializer.decode_message(data)`` per record, with this
  build's schema as the reader schema, as the pipeline needs it to read other builds'
  records (schema evolution): a serializer has one reader schema, which fastavro compares
  with (or resolves against) the writer's on every record;
* ``library (writer schema only)``: the same without a reader schema, its default, which
  returns records in their writer's shape (no evolution): the floor of its per-record cost.

Encoding is measured the same way (``codec.encode`` against ``encode_record_with_schema_id``).
The library fetches the writer schema from a small aiohttp endpoint serving the codec's
registry (``GET /schemas/ids/{id}``, once, then cached). The time of one registry request is
printed too, through the library's own transport (a new ``httpx.AsyncClient`` per request)
and through :class:`ConfluentSchemaRegistry` (the library over one pooled client).

Printed last: ``bench registry_client: ratio=R``, the library's µs per decoded record (with the
reader schema) over the started codec's.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from schema_registry.client import AsyncSchemaRegistryClient
from schema_registry.serializers.message_serializer import AsyncAvroMessageSerializer

from benchmarks.measurement import InvalidRunError
from benchmarks.reporting import print_ratio, print_table
from portability.simulation import ChangeFactory, user_ids
from portability.wire import AvroCodec, InProcessSchemaRegistry, SchemaName, SchemaRegistryError
from portability.wire.confluent import ConfluentSchemaRegistry
from portability.wire.records import with_record_type
from portability.wire.schemas import parsed_schema

__all__ = ["main"]

_NAME = SchemaName.ACCOUNT_CHANGE
_UNKNOWN_ID = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Size:
    records: int
    repeats: int
    fetches: int


QUICK = Size(records=2_000, repeats=2, fetches=5)
FULL = Size(records=50_000, repeats=5, fetches=50)


def main(quick: bool = False) -> None:
    asyncio.run(_main(QUICK if quick else FULL))


async def _main(size: Size) -> None:
    registry = InProcessSchemaRegistry()
    codec = AvroCodec(registry)
    await codec.start()
    factory = ChangeFactory(user_ids(1_000), seed=11)
    changes = [factory.random_change() for _ in range(size.records)]
    frames = [codec.encode(_NAME, with_record_type(change)) for change in changes]
    expected = [codec.decode(_NAME, frame) for frame in frames]

    runner, url = await _serve(registry)
    try:
        fetched = AvroCodec(registry)  # not started: learns the writer id from the registry
        await fetched.load_schema_id(AvroCodec.frame_schema_id(frames[0]))
        with_reader = AsyncAvroMessageSerializer(
            AsyncSchemaRegistryClient(url), reader_schema=parsed_schema(_NAME)
        )
        writer_only = AsyncAvroMessageSerializer(AsyncSchemaRegistryClient(url))
        await with_reader.decode_message(frames[0])  # each fetches the writer schema once
        await writer_only.decode_message(frames[0])
        schema_id = codec.schema_id(_NAME)
        tagged = [with_record_type(change) for change in changes]

        decoders: dict[str, Callable[[], Awaitable[list[Any]]]] = {
            "codec (started)": _sync(lambda f: codec.decode(_NAME, f), frames),
            "codec (fetched writer)": _sync(lambda f: fetched.decode(_NAME, f), frames),
            "library (reader schema)": _async(with_reader.decode_message, frames),
            "library (writer schema only)": _async(writer_only.decode_message, frames),
        }
        encoders: dict[str, Callable[[], Awaitable[list[Any]]]] = {
            "codec": _sync(lambda r: codec.encode(_NAME, r), tagged),
            "library": _async(
                lambda r: with_reader.encode_record_with_schema_id(schema_id, r), tagged
            ),
        }
        decoding = await _best(decoders, size.repeats, lambda out: out == expected)
        encoding = await _best(encoders, size.repeats, lambda out: out == frames)
        request_ms = await _request_ms(url, size.fetches)
    finally:
        await runner.cleanup()
    _report(size, decoding, encoding, request_ms)


def _sync(call: Callable[[Any], Any], items: list[Any]) -> Callable[[], Awaitable[list[Any]]]:
    async def run() -> list[Any]:
        return [call(item) for item in items]

    return run


def _async(
    call: Callable[[Any], Awaitable[Any]], items: list[Any]
) -> Callable[[], Awaitable[list[Any]]]:
    async def run() -> list[Any]:
        return [await call(item) for item in items]

    return run


async def _best(
    paths: dict[str, Callable[[], Awaitable[list[Any]]]],
    repeats: int,
    correct: Callable[[list[Any]], bool],
) -> dict[str, float]:
    """Seconds of each path's best run, the paths alternating; every run's output checked."""
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, run in paths.items():
            started = time.perf_counter()
            output = await run()
            seconds[name].append(time.perf_counter() - started)
            if not correct(output):
                raise InvalidRunError(f"{name} did not reproduce the records")
    return {name: min(runs) for name, runs in seconds.items()}


async def _request_ms(url: str, count: int) -> tuple[float, float]:
    """Median milliseconds of one registry request, the library's transport and ours.

    Each asks for an id the registry does not know (a 404, never cached by either), as the
    codec does for an unknown id once per ``UNKNOWN_ID_TTL_S``.
    """
    library = AsyncSchemaRegistryClient(url)
    ours = ConfluentSchemaRegistry(url)
    times: dict[str, list[float]] = {"library": [], "ours": []}
    try:
        for _ in range(count):
            started = time.perf_counter()
            if await library.get_by_id(_UNKNOWN_ID) is not None:
                raise InvalidRunError(f"the library found schema id {_UNKNOWN_ID}")
            times["library"].append(time.perf_counter() - started)
            started = time.perf_counter()
            try:
                await ours.fetch(_UNKNOWN_ID)
            except SchemaRegistryError as error:
                if error.retriable:
                    raise InvalidRunError(f"the registry failed: {error}") from error
            else:
                raise InvalidRunError(f"ConfluentSchemaRegistry found schema id {_UNKNOWN_ID}")
            times["ours"].append(time.perf_counter() - started)
    finally:
        await ours.close()
    return (statistics.median(times["library"]) * 1000, statistics.median(times["ours"]) * 1000)


async def _serve(registry: InProcessSchemaRegistry) -> tuple[web.AppRunner, str]:
    """``GET /schemas/ids/{id}`` over ``registry``, as a Confluent registry answers it."""

    async def schema_by_id(request: web.Request) -> web.Response:
        try:
            text = await registry.fetch(int(request.match_info["schema_id"]))
        except SchemaRegistryError:
            body = {"error_code": 40403, "message": "Schema not found"}
            return web.json_response(body, status=404)
        return web.json_response({"schema": text})

    application = web.Application()
    application.router.add_get("/schemas/ids/{schema_id}", schema_by_id)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/"


def _report(
    size: Size,
    decoding: dict[str, float],
    encoding: dict[str, float],
    request_ms: tuple[float, float],
) -> None:
    def us(seconds: float) -> float:
        return seconds / size.records * 1e6

    base = decoding["codec (started)"]
    print(f"{size.records} account changes, best of {size.repeats} runs per path")
    rows = [["decode", name, f"{us(s):.2f}", f"{s / base:.2f}x"] for name, s in decoding.items()]
    encode_base = encoding["codec"]
    rows += [
        ["encode", name, f"{us(s):.2f}", f"{s / encode_base:.2f}x"] for name, s in encoding.items()
    ]
    print_table(["", "path", "us/record", "vs codec"], rows)
    library_ms, pooled_ms = request_ms
    print(
        f"one registry request (GET /schemas/ids, 404), median: {library_ms:.2f} ms with the "
        f"library's transport (a new HTTP client each), {pooled_ms:.2f} ms pooled "
        "(ConfluentSchemaRegistry)"
    )
    print_ratio("registry_client", decoding["library (reader schema)"] / base)
