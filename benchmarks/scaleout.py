"""Scale-out: one matcher process against two, on the same changes, as an operator runs them.

Each run starts ``portability matcher`` as OS processes (one, or two in one consumer group),
on topics of its own holding the same consents and changes (generated once), and watches the
group's committed offsets on ``account.changes`` from outside (every 50 ms, as an operator's
lag monitor would). Its rate counts from the first commit seen to the commit of the last
change: the group join, the processes' start-up and the loading of consents come before and
are not timed, on both sides alike. Runs alternate (one, two, one, two), best of each.

``bench scaleout: ratio=R`` is two processes' rate over one's: how the matcher's throughput
grows with processes on this machine. Partitions bound it (a group gives each partition to
one member); here the broker, the bench and both processes share the machine's cores, so R
says what a second process gains where cores are scarce, not the per-core rate of a larger
machine (see docs/scale.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiokafka import TopicPartition

from benchmarks.matcher import policy_without_figures
from benchmarks.measurement import InvalidRunError, bench_settings
from benchmarks.population import Population, consent_records, produce
from benchmarks.reporting import print_ratio, print_table
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
    rounds: int
    timeout_s: float


FULL = Size(users=100_000, changes=400_000, rounds=2, timeout_s=120.0)
QUICK = Size(users=10_000, changes=40_000, rounds=1, timeout_s=60.0)


@dataclass(frozen=True, slots=True)
class _Run:
    processes: int
    run: int
    seconds: float
    changes: int  # counted from the first commit seen

    @property
    def rate(self) -> float:
        return self.changes / self.seconds if self.seconds > 0 else 0.0


def main(quick: bool = False) -> None:
    """Run the scale-out benchmark and print its table and ``bench scaleout: ratio=R``."""
    asyncio.run(_main(QUICK if quick else FULL))


async def _main(size: Size) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as folder:
        data_dir = Path(folder)
        async with EmbeddedBroker(log_file=data_dir / "tansu.log") as broker:
            policy = policy_without_figures(data_dir)
            first = bench_settings(data_dir, privacy_policy_path=policy)
            runtime = await Runtime.open(first, broker.bootstrap)
            try:
                population = Population(users=size.users, changes=size.changes)
                population.generate(runtime)
            finally:
                await runtime.close()
            print(
                f"scale-out benchmark: {size.changes:,} changes of {size.users:,} users, "
                f"{len(population.consents):,} consents, {first.partitions} partitions; "
                f"{os.cpu_count()} CPU cores, matcher processes: 1 and 2",
                flush=True,
            )
            results: list[_Run] = []
            for run in range(1, size.rounds + 1):
                for processes in (1, 2):
                    settings = bench_settings(data_dir, privacy_policy_path=policy)
                    result = await _run(
                        broker.bootstrap, settings, population, processes, run, size
                    )
                    print(
                        f"  {processes} process(es) run {run}: {result.rate:,.0f} changes/s",
                        file=sys.stderr,
                        flush=True,
                    )
                    results.append(result)
    print_table(
        ["processes", "run", "seconds", "changes/s"],
        [[str(r.processes), str(r.run), f"{r.seconds:.2f}", f"{r.rate:,.0f}"] for r in results],
    )
    print("(seconds: from the first commit seen to the commit of the last change)")
    one = max((r for r in results if r.processes == 1), key=lambda r: r.rate)
    two = max((r for r in results if r.processes == 2), key=lambda r: r.rate)
    print_ratio("scaleout", two.rate / one.rate if one.rate else 0.0)


async def _run(
    bootstrap: str,
    settings: Settings,
    population: Population,
    processes: int,
    run: int,
    size: Size,
) -> _Run:
    """One run on topics of its own: consents and changes produced, then the processes."""
    runtime = await Runtime.open(settings, bootstrap)
    try:
        await produce(
            bootstrap, runtime.topics.consents, consent_records(runtime, population.consents)
        )
        await produce(bootstrap, runtime.topics.account_changes, population.change_records)
        topic = runtime.topics.account_changes
    finally:
        await runtime.close()
    partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
    ports = [free_port() for _ in range(processes)]
    logs = Path(settings.data_dir) / f"scaleout-{run}-{processes}"
    with _matchers(bootstrap, settings, ports, logs) as started:
        async with Inspector(bootstrap) as inspector:
            seconds, counted = await _watch(inspector, settings, partitions, size, started)
            members = await inspector.member_count(settings.matcher_group)
        await _check_ready(ports, processes)
    if members is not None and members != processes:
        raise InvalidRunError(f"the group had {members} members, expected {processes}")
    return _Run(processes, run, seconds, counted)


async def _watch(
    inspector: Inspector,
    settings: Settings,
    partitions: list[TopicPartition],
    size: Size,
    processes: list[subprocess.Popen[bytes]],
) -> tuple[float, int]:
    """Seconds from the first commit seen to the last change's, and the changes in between."""
    deadline = time.monotonic() + size.timeout_s
    first: tuple[float, int] | None = None
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise InvalidRunError(f"a matcher process exited ({process.returncode})")
        committed = await inspector.committed(settings.matcher_group, partitions)
        now = time.monotonic()
        done = sum(offset or 0 for offset in committed.values())
        if first is None and done > 0:
            first = (now, done)
        if done >= size.changes:
            assert first is not None
            if done == first[1]:
                raise InvalidRunError("every change was committed at the first look: too small")
            return now - first[0], size.changes - first[1]
        await asyncio.sleep(_POLL_S)
    raise InvalidRunError(f"the matchers did not commit {size.changes:,} changes in time")


async def _check_ready(ports: list[int], processes: int) -> None:
    """Each process held partitions at the end (a process that held none did no work)."""
    ready = 0
    async with aiohttp.ClientSession() as session:
        for port in ports:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
            ready += any(
                line.split()[1:] in (["1"], ["1.0"])
                for line in text.splitlines()
                if line.startswith("portability_matcher_ready ")
            )
    if ready != processes:
        raise InvalidRunError(f"{ready} of {processes} matcher processes held partitions")


@contextlib.contextmanager
def _matchers(
    bootstrap: str, settings: Settings, ports: list[int], logs: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``portability matcher`` processes of one group, stopped (SIGTERM) on the way out."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTABILITY_")}
    env.update(
        {
            "PORTABILITY_KAFKA_BOOTSTRAP": bootstrap,
            "PORTABILITY_TOPIC_PREFIX": settings.topic_prefix,
            "PORTABILITY_PARTITIONS": str(settings.partitions),
            "PORTABILITY_MATCHER_GROUP": settings.matcher_group,
            "PORTABILITY_DATA_DIR": str(settings.data_dir),
            "PORTABILITY_PRIVACY_POLICY_PATH": str(settings.privacy_policy_path),
        }
    )
    started: list[subprocess.Popen[bytes]] = []
    try:
        for index, port in enumerate(ports):
            with (logs / f"matcher-{index}.log").open("wb") as log:
                started.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "portability", "matcher"],
                        env={**env, "PORTABILITY_WEB_PORT": str(port)},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield started
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
