"""The same matching done the Faust way: one agent, one event at a time (``async for``).

The agent reads the same ``account.changes`` topic with raw key and value bytes, looks the key
up in an index of the same consents, decodes only the changes of consenting users and checks
each consent's scope, as the matcher does. It produces no deltas, writes no checkpoints and
commits on Faust's timer, so the comparison flatters Faust: the per-event loop alone is what
costs. Timed from the first event to the last, excluding the group join.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid

import faust

from benchmarks.measurement import Measurement
from benchmarks.population import Population
from portability.matching import ConsentIndex
from portability.runtime import Runtime
from portability.wire import SchemaName
from portability.wire.records import to_millis

__all__ = ["measure"]


class _Counter:
    def __init__(self, total: int) -> None:
        self.total = total
        self.seen = 0
        self.decoded = 0
        self.deltas = 0
        self.first: float | None = None
        self.last: float | None = None
        self.done = asyncio.Event()


async def measure(runtime: Runtime, population: Population, timeout_s: float) -> Measurement:
    """Run the agent over every change, once."""
    index = ConsentIndex()
    for consent in population.consents:
        index.apply(consent)
    counter = _Counter(population.changes)
    with tempfile.TemporaryDirectory(prefix="portability-bench-faust-") as data_dir:
        app = _app(runtime, data_dir, index, counter)
        await app.start()
        try:
            await asyncio.wait_for(counter.done.wait(), timeout_s)
        except TimeoutError:
            pass  # reported as an incomplete run, with what it did in the time
        finally:
            await app.stop()
    ended = counter.last or time.perf_counter()
    return Measurement(
        "faust agent",
        1,
        counter.seen,
        ended - (counter.first or ended),
        counter.decoded,
        complete=counter.done.is_set(),
        seen=counter.seen,
        deltas=counter.deltas,
    )


def _app(runtime: Runtime, data_dir: str, index: ConsentIndex, counter: _Counter) -> faust.App:
    app = faust.App(
        f"bench-faust-{uuid.uuid4().hex[:10]}",
        broker=f"kafka://{runtime.kafka.bootstrap}",
        store="memory://",
        datadir=data_dir,
        web_enabled=False,
        autodiscover=False,
        topic_partitions=runtime.settings.partitions,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        # Short group timeouts: with the defaults the first join on Tansu takes ~30 s.
        broker_rebalance_timeout=5,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
    )
    topic = app.topic(
        runtime.topics.account_changes,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=runtime.settings.partitions,
    )
    codec = runtime.codec

    async def match(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            if counter.first is None:
                counter.first = time.perf_counter()
            counter.seen += 1
            consents = index.get(event.key)
            if consents is not None:
                change = codec.decode(SchemaName.ACCOUNT_CHANGE, event.value)
                counter.decoded += 1
                occurred = to_millis(change["occurred_at"])
                counter.deltas += sum(c.covers(change["category"], occurred) for c in consents)
            if counter.seen >= counter.total and not counter.done.is_set():
                counter.last = time.perf_counter()
                counter.done.set()

    app.agent(topic, name="bench-match")(match)
    return app
