"""Failover: how long a killed matcher's partitions wait before another matcher resumes them.

Two ``portability matcher`` processes share a group on a topic that a producer in this
process keeps feeding (a steady trickle of changes on every partition). Once both hold
partitions and every partition's committed offset moves, one matcher is killed with SIGKILL
(no goodbye to the group, as a crash or a lost machine). From outside, every 50 ms, the
group's committed offsets are read: a partition has *resumed* once its committed offset passes
the end it had at the kill (the trickle feeds every partition, so records produced after the
kill were matched and committed). The time for the last partition to resume is the failover time;
the survivor's own partitions resume too, after the rebalance that hands the dead member's
over (the Kafka client rebalances eagerly: every member gives its partitions up meanwhile).

The group's timeouts are the settings' (``PORTABILITY_KAFKA_SESSION_TIMEOUT_MS`` and
``..._HEARTBEAT_INTERVAL_MS`` in the environment change them), so the benchmark measures
the deployment's defaults, or the values an operator considers. It prints
``bench failover: seconds=S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import TopicPartition

from benchmarks.matcher import policy_without_figures
from benchmarks.measurement import InvalidRunError, bench_settings
from benchmarks.population import Population, consent_records, produce
from benchmarks.roles import matchers_ready, role_processes
from portability.broker import EmbeddedBroker, free_port
from portability.broker.inspector import Inspector
from portability.runtime import Runtime
from portability.settings import Settings

__all__ = ["main"]

_POLL_S = 0.05
_TRICKLE_S = 0.05  # a batch of changes every 50 ms, on every partition


@dataclass(frozen=True, slots=True)
class Size:
    users: int
    changes: int  # generated once, produced in a loop as the trickle
    batch: int  # changes per trickle batch
    timeout_s: float


FULL = Size(users=10_000, changes=50_000, batch=60, timeout_s=90.0)
QUICK = Size(users=2_000, changes=10_000, batch=30, timeout_s=60.0)


def main(quick: bool = False) -> None:
    """Run the failover benchmark and print ``bench failover: seconds=S``."""
    asyncio.run(_main(QUICK if quick else FULL))


async def _main(size: Size) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as folder:
        data_dir = Path(folder)
        async with EmbeddedBroker(log_file=data_dir / "tansu.log") as broker:
            settings = bench_settings(
                data_dir, privacy_policy_path=policy_without_figures(data_dir)
            )
            settings = settings.model_copy(
                update={
                    # The environment's (or the defaults'), not the benchmarks' usual ones.
                    "kafka_session_timeout_ms": Settings().kafka_session_timeout_ms,
                    "kafka_heartbeat_interval_ms": Settings().kafka_heartbeat_interval_ms,
                    "kafka_rebalance_timeout_ms": Settings().kafka_rebalance_timeout_ms,
                }
            )
            runtime = await Runtime.open(settings, broker.bootstrap)
            try:
                population = Population(users=size.users, changes=size.changes)
                population.generate(runtime)
                consents = consent_records(runtime, population.consents)
                await produce(broker.bootstrap, runtime.topics.consents, consents)
                seconds = await _measure(runtime, population, size)
            finally:
                await runtime.close()
    print(
        f"failover: session {settings.kafka_session_timeout_ms} ms, heartbeat "
        f"{settings.kafka_heartbeat_interval_ms} ms, rebalance "
        f"{settings.kafka_rebalance_timeout_ms} ms; every partition resumed {seconds:.1f} s "
        "after one of two matchers was killed (SIGKILL)"
    )
    print(f"bench failover: seconds={seconds:.1f}", flush=True)


async def _measure(runtime: Runtime, population: Population, size: Size) -> float:
    settings = runtime.settings
    topic = runtime.topics.account_changes
    partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
    ports = [free_port(), free_port()]
    logs = Path(settings.data_dir) / "failover"
    feeding = asyncio.create_task(_trickle(runtime, population, size))
    try:
        with role_processes("matcher", runtime.kafka.bootstrap, settings, ports, logs) as started:
            async with Inspector(runtime.kafka.bootstrap) as inspector:
                deadline = time.monotonic() + size.timeout_s
                await _until_all_move(inspector, settings.matcher_group, partitions, deadline)
                await matchers_ready(ports, 2)
                ends = {
                    tp: read.end
                    for tp, read in (await inspector.read(dict.fromkeys(partitions))).items()
                }
                killed_at = time.monotonic()
                started[0].send_signal(signal.SIGKILL)
                await _until_past(inspector, settings.matcher_group, ends, deadline)
                return time.monotonic() - killed_at
    finally:
        feeding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeding


async def _trickle(runtime: Runtime, population: Population, size: Size) -> None:
    """Produce the population's changes, a small batch per partition every 50 ms, forever."""
    rng = random.Random(5)
    records = population.change_records
    while True:
        batch = {
            partition: [rng.choice(pairs) for _ in range(size.batch // len(records) + 1)]
            for partition, pairs in records.items()
        }
        await produce(runtime.kafka.bootstrap, runtime.topics.account_changes, batch)
        await asyncio.sleep(_TRICKLE_S)


async def _committed(
    inspector: Inspector, group: str, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    return {
        tp: offset or 0 for tp, offset in (await inspector.committed(group, partitions)).items()
    }


async def _until_all_move(
    inspector: Inspector, group: str, partitions: list[TopicPartition], deadline: float
) -> None:
    """Until every partition's committed offset has moved (both matchers hold and work)."""
    first: dict[TopicPartition, int] | None = None
    while time.monotonic() < deadline:
        now = await _committed(inspector, group, partitions)
        if first is None:
            if all(now.values()):
                first = now  # every partition committed once: now each must move on
        elif all(now[tp] > first[tp] for tp in partitions):
            return
        await asyncio.sleep(_POLL_S)
    raise InvalidRunError("the matchers did not start committing on every partition in time")


async def _until_past(
    inspector: Inspector, group: str, ends: dict[TopicPartition, int], deadline: float
) -> None:
    """Until every partition's committed offset passed its end at the kill: records produced
    after the kill (the trickle feeds every partition) were matched and committed."""
    while time.monotonic() < deadline:
        now = await _committed(inspector, group, list(ends))
        if all(now[tp] > end for tp, end in ends.items()):
            return
        await asyncio.sleep(_POLL_S)
    raise InvalidRunError("the surviving matcher did not resume every partition in time")
