"""Scale-out: one process against two, matchers and workers, as an operator runs them.

Each run starts ``portability matcher`` (or ``portability worker``) as OS processes, one or
two in one consumer group, on topics of their own holding the same records (generated once:
consents and changes for the matchers; apps, consents and deliveries for the workers, which
post to one receiver in a process of its own, as in ``bench delivery``). It watches the
group's committed offsets (on ``account.changes``, or ``deliveries``) from outside, every
50 ms, as an operator's lag monitor would. A run's rate counts from the first commit seen to
the commit of the last record: the group join, start-up and loading come before and are not
timed, on both sides alike. Runs alternate (one, two, one, two), best of each.

``bench scaleout_worker: ratio=R`` and ``bench scaleout: ratio=R`` (the matcher's: it reads
the platform's whole change stream) are two processes' rate over one's: how throughput grows
with processes on this machine. Partitions bound it (a group gives each partition to
one member); here the broker, the bench and both processes share the machine's cores, so R
says what a second process gains where cores are scarce, not the per-core rate of a larger
machine (see docs/scale.md).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import TopicPartition

from benchmarks import delivery
from benchmarks.delivery_receiver import ReceiverProcess
from benchmarks.matcher import policy_without_figures
from benchmarks.measurement import InvalidRunError, bench_settings
from benchmarks.population import Population, consent_records, produce
from benchmarks.reporting import print_ratio, print_table
from benchmarks.roles import Role, matchers_ready, role_processes
from portability.broker import EmbeddedBroker, free_port
from portability.broker.inspector import Inspector
from portability.runtime import Runtime
from portability.settings import Settings

__all__ = ["main"]

_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Size:
    users: int
    changes: int
    deliveries: delivery.Size
    rounds: int
    timeout_s: float


FULL = Size(users=100_000, changes=400_000, deliveries=delivery.FULL, rounds=2, timeout_s=120.0)
QUICK = Size(users=10_000, changes=40_000, deliveries=delivery.QUICK, rounds=1, timeout_s=60.0)


@dataclass(frozen=True, slots=True)
class _Run:
    role: str
    processes: int
    run: int
    seconds: float
    records: int  # counted from the first commit seen

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def main(quick: bool = False) -> None:
    """Run the scale-out benchmark: its table and ``bench scaleout: ratio=R`` lines."""
    asyncio.run(_main(QUICK if quick else FULL))


async def _main(size: Size) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as folder:
        data_dir = Path(folder)
        async with EmbeddedBroker(log_file=data_dir / "tansu.log") as broker:
            policy = policy_without_figures(data_dir)
            settings = bench_settings(
                data_dir,
                privacy_policy_path=policy,
                # The receiver is a plain-http loopback endpoint (development mode only).
                development_mode=True,
                webhook_allow_loopback=True,
            )
            runtime = await Runtime.open(settings, broker.bootstrap)
            try:
                population = Population(users=size.users, changes=size.changes)
                population.generate(runtime)
                workload = delivery.Workload.generate(runtime, size.deliveries)
            finally:
                await runtime.close()
            print(
                f"scale-out benchmark: matchers on {size.changes:,} changes of {size.users:,} "
                f"users ({len(population.consents):,} consents), workers on "
                f"{size.deliveries.deltas:,} deltas of {size.deliveries.consents:,} consents; "
                f"{settings.partitions} partitions, {os.cpu_count()} CPU cores; 1 and 2 "
                "processes of each",
                flush=True,
            )
            results: list[_Run] = []
            async with ReceiverProcess(workload.secrets) as receiver:
                for run in range(1, size.rounds + 1):
                    for processes in (1, 2):
                        matchers = _matcher_run(
                            broker.bootstrap, _fresh(settings), population, processes, run, size
                        )
                        results.append(_progress(await matchers))
                    for processes in (1, 2):
                        workers = _worker_run(
                            broker.bootstrap,
                            _fresh(settings),
                            workload,
                            receiver,
                            processes,
                            run,
                            size,
                        )
                        results.append(_progress(await workers))
    print_table(
        ["role", "processes", "run", "seconds", "records/s"],
        [
            [r.role, str(r.processes), str(r.run), f"{r.seconds:.2f}", f"{r.rate:,.0f}"]
            for r in results
        ],
    )
    print("(seconds: from the first commit seen to the commit of the last record)")
    print_ratio("scaleout_worker", _ratio(results, "worker"))
    print_ratio("scaleout", _ratio(results, "matcher"))


def _fresh(settings: Settings) -> Settings:
    """The settings on topics and groups of their own (a run must not read another's)."""
    unique = bench_settings(settings.data_dir)
    return settings.model_copy(
        update={
            "topic_prefix": unique.topic_prefix,
            "matcher_group": unique.matcher_group,
            "delivery_group": unique.delivery_group,
        }
    )


def _progress(result: _Run) -> _Run:
    print(
        f"  {result.role}, {result.processes} process(es), run {result.run}: "
        f"{result.rate:,.0f} records/s",
        file=sys.stderr,
        flush=True,
    )
    return result


def _ratio(results: list[_Run], role: str) -> float:
    one = max((r.rate for r in results if r.role == role and r.processes == 1), default=0.0)
    two = max((r.rate for r in results if r.role == role and r.processes == 2), default=0.0)
    return two / one if one else 0.0


async def _matcher_run(
    bootstrap: str,
    settings: Settings,
    population: Population,
    processes: int,
    run: int,
    size: Size,
) -> _Run:
    """Matchers on topics of their own, the consents and changes produced before they start."""
    runtime = await Runtime.open(settings, bootstrap)
    try:
        consents = consent_records(runtime, population.consents)
        await produce(bootstrap, runtime.topics.consents, consents)
        await produce(bootstrap, runtime.topics.account_changes, population.change_records)
        topic = runtime.topics.account_changes
    finally:
        await runtime.close()
    watched = _Watched(settings.matcher_group, topic, settings.partitions, population.changes)
    return await _timed("matcher", bootstrap, settings, watched, (processes, run), size)


async def _worker_run(
    bootstrap: str,
    settings: Settings,
    workload: delivery.Workload,
    receiver: ReceiverProcess,
    processes: int,
    run: int,
    size: Size,
) -> _Run:
    """Workers on topics of their own, the apps, consents and deliveries produced first."""
    runtime = await Runtime.open(settings, bootstrap)
    try:
        await workload.publish(runtime, receiver)
        topic = runtime.topics.deliveries
    finally:
        await runtime.close()
    watched = _Watched(settings.delivery_group, topic, settings.partitions, workload.total)
    return await _timed("worker", bootstrap, settings, watched, (processes, run), size)


async def _timed(
    role: Role,
    bootstrap: str,
    settings: Settings,
    watched: _Watched,
    processes_and_run: tuple[int, int],
    size: Size,
) -> _Run:
    """Start the processes, time them through ``watched``, stop them."""
    processes, run = processes_and_run
    ports = [free_port() for _ in range(processes)]
    logs = Path(settings.data_dir) / f"scaleout-{role}-{run}-{processes}"
    with role_processes(role, bootstrap, settings, ports, logs) as started:
        seconds, counted = await _watch(bootstrap, watched, processes, size, started)
        if role == "matcher":
            await matchers_ready(ports, processes)
    return _Run(role, processes, run, seconds, counted)


@dataclass(frozen=True, slots=True)
class _Watched:
    """A group's committed offsets on a topic, watched until they reach ``total``."""

    group: str
    topic: str
    partitions: int
    total: int


async def _watch(
    bootstrap: str,
    watched: _Watched,
    processes: int,
    size: Size,
    started: list[subprocess.Popen[bytes]],
) -> tuple[float, int]:
    """Seconds from the first commit seen to the last record's, and the records in between."""
    partitions = [TopicPartition(watched.topic, p) for p in range(watched.partitions)]
    deadline = time.monotonic() + size.timeout_s
    first: tuple[float, int] | None = None
    async with Inspector(bootstrap) as inspector:
        while time.monotonic() < deadline:
            for process in started:
                if process.poll() is not None:
                    raise InvalidRunError(f"a process exited ({process.returncode})")
            committed = await inspector.committed(watched.group, partitions)
            now = time.monotonic()
            done = sum(offset or 0 for offset in committed.values())
            if first is None and done > 0:
                first = (now, done)
            if done >= watched.total:
                assert first is not None
                if done == first[1]:
                    raise InvalidRunError("every record was committed at the first look")
                members = await inspector.member_count(watched.group)
                if members is not None and members != processes:
                    raise InvalidRunError(f"the group had {members} members, not {processes}")
                return now - first[0], watched.total - first[1]
            await asyncio.sleep(_POLL_S)
    raise InvalidRunError(f"{watched.group} did not commit {watched.total:,} records in time")
