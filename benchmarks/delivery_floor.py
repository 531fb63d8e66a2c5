"""The floor under the delivery benchmark's ratio: what any delivery worker spends per delta.

A worker cannot skip three steps: reading the deliveries from Kafka, building and signing
each request's body (its signature covers the send time, so it cannot be made in advance),
and posting it. The baseline pays only the last: its bodies are built and signed before its
clock starts. This module measures the other two, by CPU time, in the benchmark's process,
on the same workload and in the same run:

- reading: the whole ``deliveries`` topic, through a consumer configured as the worker's;
- building and signing: the bodies of the worker's own requests (same deltas, same groups),
  from the records' heads, with :func:`head_delta_event` and :func:`webhook_headers`, as the
  worker makes each request.

It also times reading each record's head with this build's reader, for information: that is
this worker's way of learning a record's consent and sequence, not a step every worker takes
as it is.

With the baseline's own CPU time per delta for posting, the three give the *ceiling*: the
ratio that a worker doing nothing but those three steps, in one process and CPU-bound, would
reach against this baseline. A real worker also reads each record's fields, keeps each
consent's deltas in order, tracks offsets, retries and parks, and stays under the ceiling.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import TopicPartition

from benchmarks.delivery_receiver import ReceivedRequest
from benchmarks.measurement import InvalidRunError
from portability.runtime import Runtime
from portability.webhooks.payload import head_delta_event
from portability.webhooks.signing import webhook_headers
from portability.wire.records import DeliveryHead

__all__ = ["Floor", "measure_floor"]

_ROUNDS = 3  # each step's best of three: the machine is shared
_READ_TIMEOUT_S = 60.0
_POLL_MS = 200


@dataclass(frozen=True, slots=True)
class Floor:
    """CPU microseconds per delta of the steps no worker skips (and of reading heads)."""

    read_us: float
    build_sign_us: float
    head_us: float

    def per_delta_us(self, post_us: float) -> float:
        """The floor's total, with ``post_us`` (the baseline's CPU per delta) for posting."""
        return self.read_us + self.build_sign_us + post_us

    def ceiling(
        self, post_us: float, baseline_rate: float, cores: int = 1, shared_us: float = 0.0
    ) -> float:
        """The ratio a CPU-bound worker doing only the floor's steps reaches, spread over
        ``cores`` processes on as many cores, which it shares with other processes taking
        ``shared_us`` of CPU per delta (the receiver, the broker). Capped at 1: a receiver that
        holds the baseline back holds it back too."""
        if baseline_rate <= 0:
            return 0.0
        rate = cores * 1e6 / (self.per_delta_us(post_us) + shared_us)
        return min(1.0, rate / baseline_rate)

    def spare_us(
        self, target: float, post_us: float, baseline_rate: float, cores: int, shared_us: float
    ) -> float:
        """CPU per delta left above the floor for all else a worker does (reading a record's
        fields, ordering, offsets, retries), if it is to reach ratio ``target`` over
        ``cores`` cores; negative: not even the floor fits."""
        budget_us = cores * 1e6 / (target * baseline_rate)
        return budget_us - shared_us - self.per_delta_us(post_us)


async def measure_floor(
    runtime: Runtime,
    total: int,
    requests: Sequence[ReceivedRequest],
    secrets: dict[str, str],
) -> Floor:
    """Measure the floor over the ``total`` records of the deliveries topic, building the
    bodies of ``requests`` (as a worker run's receiver recorded them) signed with ``secrets``."""
    reads = [await _read(runtime, total, round_) for round_ in range(_ROUNDS)]
    values = reads[0][1]
    head_us, heads = min((_read_heads(runtime, values) for _ in range(_ROUNDS)), key=_first)
    plan = _plan(heads, requests, secrets)
    per_request_s = min(_build_and_sign(plan) for _ in range(_ROUNDS))
    build_sign_us = per_request_s * 1e6 * len(plan) / total
    return Floor(min(us for us, _ in reads), build_sign_us, head_us)


async def _read(runtime: Runtime, total: int, round_: int) -> tuple[float, list[bytes]]:
    """CPU us per record to consume the topic from the start; the values read."""
    consumer = runtime.kafka.group_consumer(
        f"{runtime.settings.delivery_group}-floor-{round_}", "bench-delivery-floor"
    )
    await consumer.start()
    try:
        topic = runtime.topics.deliveries
        partitions = [TopicPartition(topic, p) for p in range(runtime.settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        deadline = time.monotonic() + _READ_TIMEOUT_S
        started = time.process_time()
        while len(values) < total:
            if time.monotonic() > deadline:
                raise InvalidRunError(f"floor: read {len(values):,} of {total:,} deliveries")
            batch = await consumer.getmany(timeout_ms=_POLL_MS)
            for records in batch.values():
                values.extend(record.value for record in records if record.value is not None)
        return (time.process_time() - started) / len(values) * 1e6, values
    finally:
        await consumer.stop()


def _read_heads(runtime: Runtime, values: list[bytes]) -> tuple[float, list[DeliveryHead]]:
    started = time.process_time()
    heads = [runtime.codec.delivery_head(value) for value in values]
    elapsed = time.process_time() - started
    missing = sum(head is None for head in heads)
    if missing:
        raise InvalidRunError(f"floor: {missing:,} deliveries carry no rendering")
    return elapsed / len(values) * 1e6, [head for head in heads if head is not None]


_Request = tuple[list[DeliveryHead], list[str]]


def _plan(
    heads: list[DeliveryHead], requests: Sequence[ReceivedRequest], secrets: dict[str, str]
) -> list[_Request]:
    by_delta = {(head["consent_id"], head["sequence"]): head for head in heads}
    try:
        return [
            (
                [by_delta[request.consent_id, s] for s in request.sequences],
                [secrets[request.app_id]],
            )
            for request in requests
        ]
    except KeyError as error:
        raise InvalidRunError(f"floor: a request carried an unknown delta {error}") from error


def _build_and_sign(plan: list[_Request]) -> float:
    """CPU seconds per request to build and sign every request of ``plan``."""
    started = time.process_time()
    for heads, secrets in plan:
        msg_id, body = head_delta_event(heads)
        webhook_headers(secrets, msg_id, body)
    return (time.process_time() - started) / len(plan)


def _first(pair: tuple[float, list[DeliveryHead]]) -> float:
    return pair[0]
