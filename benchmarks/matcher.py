"""The matcher's throughput against the raw consume-and-decode path, on the same topic.

One embedded broker, one ``account.changes`` topic filled once, then alternating runs:
baseline, matcher, three times (fresh consumer group and fresh checkpoint topic for each
matcher run), best of each: on two shared cores one run of either side can lose a third of
its rate to a neighbour, and the best of three of each is steadier than of two. The
baseline is the fastest honest reading of the topic: a group-less aiokafka consumer that
decodes *every* value with fastavro. The matcher decodes only the changes of consenting
users, but also matches them, emits deltas, waits for their acks, writes checkpoints and
commits; the ratio says what that work costs against the raw path (or gains, as it skips
most decoding).

What is timed, on both sides: from the moment the first batch of changes is in hand to the
moment the last one is fully handled. Excluded on both sides: producing the data, connecting
and the first fetch's round trip; on the matcher's side also the group join (~5 s on Tansu,
the rebalance timeout) and the loading of consents, which it does before it resumes the
changes (both printed separately). The matcher's clock starts when ``Matcher.process`` is
handed the first batch holding changes: that is the earliest moment at which the matcher
has what the baseline has when its clock starts, and it is measured without polling
(``matcher.ready`` or ``stats.batches`` polled from another task would add a poll interval
of error and steal the loop from the matcher). It stops when a ``process`` call returns
after every partition was handled to its end and ``changes_seen`` reached the total: by then
the deltas and checkpoints of that batch are acknowledged and its offsets committed.

After the runs, the floor (:mod:`benchmarks.matcher_floor`): the CPU per change of the steps
no matcher skips, measured on the same topic, printed as ``bench matcher_floor: ratio=R`` (the
floor's CPU per change over the best matcher run's), and the raw read's rate, printed as
``bench matcher_raw: ratio=R`` (the matcher's rate over it).

Every run is checked against what the data requires (changes counted, decoded, deltas): a
run that skipped work is printed as INVALID, the ratio line is still printed, and the
benchmark fails (exit status 1), because a fast matcher that drops changes is no result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks import faust_agent
from benchmarks.matcher_floor import MatcherFloor, measure_floor, open_changes_reader
from benchmarks.measurement import InvalidRunError, Measurement, bench_settings
from benchmarks.population import Population, consent_records, produce
from benchmarks.reporting import print_ratio, print_table
from portability.broker import EmbeddedBroker, KafkaClients, ensure_topics
from portability.matching import Matcher
from portability.privacy import default_policy_path
from portability.runtime import Runtime, settle_collector
from portability.wire import SchemaName, TopicSpec
from portability.wire.schemas import parsed_schema

__all__ = ["Size", "main", "policy_without_figures"]

_FRAME_HEADER = 5  # magic byte and 4-byte schema id


@dataclass(frozen=True, slots=True)
class Size:
    users: int
    changes: int
    rounds: int
    run_timeout_s: float
    faust: bool = True


FULL = Size(users=50_000, changes=200_000, rounds=3, run_timeout_s=60.0)
QUICK = Size(users=5_000, changes=20_000, rounds=1, run_timeout_s=15.0, faust=False)


def main(quick: bool = False) -> None:
    """Run the matcher benchmark and print its table and ``bench matcher: ratio=R``."""
    asyncio.run(_main(QUICK if quick else FULL))


async def _main(size: Size) -> None:
    with tempfile.TemporaryDirectory(prefix="portability-bench-") as data_dir:
        async with EmbeddedBroker(log_file=Path(data_dir) / "tansu.log") as broker:
            policy = policy_without_figures(Path(data_dir))
            settings = bench_settings(Path(data_dir), privacy_policy_path=policy)
            runtime = await Runtime.open(settings, broker.bootstrap)
            try:
                await _bench(runtime, size)
            finally:
                await runtime.close()


def policy_without_figures(data_dir: Path) -> Path:
    """The shipped policy with no activity kinds counted toward audience figures.

    The runs share one ``account.changes`` topic, and a matcher writes its audience updates
    into that very topic: one run's updates would be read by the runs after it. The
    population carries no audience headers, so only the decoded activity of consenting
    users would count; without figures every run reads exactly the records produced.
    """
    document = yaml.safe_load(default_policy_path().read_text())
    document["audience"]["kinds"] = []
    path = data_dir / "privacy-policy.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def _bench(runtime: Runtime, size: Size) -> None:
    population = await _populate(runtime, size)
    settle_collector()  # as `portability matcher` does once started (the population frozen)
    results: list[Measurement] = []
    for run in range(1, size.rounds + 1):
        results.append(_progress(await _baseline(runtime, run, size)))
        results.append(_progress(await _matcher(runtime, run, size, population)))
    if size.faust:
        results.append(
            _progress(await faust_agent.measure(runtime, population, size.run_timeout_s))
        )
    _print_results(results)
    problems = [(m, _problems(m, population)) for m in results]
    for _, found in problems:
        for problem in found:
            print(f"INVALID: {problem}")
    valid = [m for m, found in problems if not found]
    matcher = _best(results, valid, "matcher")
    floor = await _print_floor(runtime, population, matcher, size)
    if floor is not None:
        if matcher.cpu_s:
            print_ratio("matcher_floor", floor.per_change_us / _us_per_change(matcher))
        print_ratio("matcher_raw", matcher.rate / floor.raw_rate if floor.raw_rate else 0.0)
    if size.faust:
        agent = _best(results, valid, "faust agent")
        print_ratio("matcher_vs_faust_agent", _ratio(matcher, agent))
    print_ratio("matcher", _ratio(matcher, _best(results, valid, "baseline")))
    if len(valid) < len(results):
        # After the ratio line, so that the output keeps its shape; the exit status says it.
        raise InvalidRunError(f"{len(results) - len(valid)} invalid run(s): see INVALID above")


async def _print_floor(
    runtime: Runtime, population: Population, matcher: Measurement, size: Size
) -> MatcherFloor | None:
    """Measure and print the floor and the raw read (see :mod:`benchmarks.matcher_floor`)."""
    try:
        floor = await measure_floor(runtime, population, size.run_timeout_s)
    except InvalidRunError as error:
        print(f"floor: not measured: {error}")
        return None
    spent = f"{_us_per_change(matcher):.1f}" if matcher.cpu_s else "(not measured)"
    print(
        f"floor, CPU per change that no matcher skips: reading every record "
        f"{floor.read_us:.2f} us + decoding the consenting users' changes {floor.decode_us:.2f} "
        f"us + rendering, encoding and producing their {floor.deltas:,} deltas "
        f"{floor.emit_us:.2f} us = {floor.per_change_us:.2f} us; the matcher spends {spent} us "
        f"per change. Raw read (every record, its key looked at): {floor.raw_rate:,.0f} "
        f"changes/s, the matcher {matcher.rate:,.0f}"
    )
    return floor


def _us_per_change(measured: Measurement) -> float:
    return (measured.cpu_s or 0.0) / measured.changes * 1e6 if measured.changes else 0.0


async def _populate(runtime: Runtime, size: Size) -> Population:
    started = time.perf_counter()
    population = Population(users=size.users, changes=size.changes)
    population.generate(runtime)
    generated = time.perf_counter()
    bootstrap = runtime.kafka.bootstrap
    await produce(bootstrap, runtime.topics.consents, consent_records(runtime, population.consents))
    await produce(bootstrap, runtime.topics.account_changes, population.change_records)
    produced = time.perf_counter()
    print(
        f"matcher benchmark: {size.changes:,} changes of {size.users:,} users, "
        f"{len(population.consents):,} ongoing consents of "
        f"{int(size.users * population.consenting_share):,} users, "
        f"{runtime.settings.partitions} partitions; "
        f"expected {population.expected_decoded:,} changes to decode, "
        f"{population.expected_deltas:,} deltas "
        f"(generated in {generated - started:.1f} s, produced in {produced - generated:.1f} s)",
        flush=True,
    )
    return population


def _progress(measurement: Measurement) -> Measurement:
    print(
        f"  {measurement.path} run {measurement.run}: {measurement.rate:,.0f} changes/s",
        file=sys.stderr,
        flush=True,
    )
    return measurement


def _best(results: list[Measurement], valid: list[Measurement], path: str) -> Measurement:
    """The fastest valid run of ``path``; the fastest of all if none is valid."""
    candidates = [m for m in valid if m.path == path] or [m for m in results if m.path == path]
    return max(candidates, key=lambda m: m.rate)


def _ratio(measured: Measurement, reference: Measurement) -> float:
    return measured.rate / reference.rate if reference.rate else 0.0


def _problems(m: Measurement, population: Population) -> list[str]:
    """Why a run's rate means nothing: it skipped work it had to do (or did extra)."""
    problems = []
    if not m.complete:
        problems.append(f"{m.path} run {m.run} did not handle every change in time")
    if m.seen is not None and m.seen != population.changes:
        problems.append(
            f"{m.path} run {m.run} counted {m.seen:,} changes, expected {population.changes:,}"
        )
    if m.deltas is None:
        return problems
    if m.decoded != population.expected_decoded:
        problems.append(
            f"{m.path} run {m.run} decoded {m.decoded:,} changes, "
            f"expected {population.expected_decoded:,}"
        )
    if m.deltas != population.expected_deltas:
        problems.append(
            f"{m.path} run {m.run} matched {m.deltas:,} deltas, "
            f"expected {population.expected_deltas:,}"
        )
    return problems


def _print_results(results: list[Measurement]) -> None:
    rows = [
        [
            m.path,
            str(m.run),
            f"{m.seconds:.2f}",
            f"{m.rate:,.0f}",
            f"{m.decoded / m.changes:.1%}",
            "-" if m.deltas is None else f"{m.deltas:,}",
            "-" if m.start_s is None else f"{m.start_s:.1f}",
            "-" if m.consents_s is None else f"{m.consents_s:.2f}",
        ]
        for m in results
    ]
    print_table(
        ["path", "run", "seconds", "changes/s", "decoded", "deltas", "start s", "consents s"],
        rows,
    )
    print(
        "(seconds: first batch of changes to the last handled; start: group join and partition "
        "set-up; consents: reading them before the changes resume)"
    )


async def _baseline(runtime: Runtime, run: int, size: Size) -> Measurement:
    """Read every change with a group-less consumer and decode every value with fastavro."""
    consumer = await open_changes_reader(runtime, f"bench-baseline-{run}")
    try:
        seconds, decoded = await _consume_and_decode(consumer, size)
    finally:
        await consumer.stop()
    return Measurement("baseline", run, size.changes, seconds, decoded)


async def _consume_and_decode(consumer: AIOKafkaConsumer, size: Size) -> tuple[float, int]:
    schema = parsed_schema(SchemaName.ACCOUNT_CHANGE)
    reader = fastavro.schemaless_reader
    loop = asyncio.get_running_loop()
    deadline = loop.time() + size.run_timeout_s
    started: float | None = None
    decoded = 0
    while decoded < size.changes:
        if loop.time() > deadline:
            raise TimeoutError(f"baseline read {decoded} of {size.changes} changes in time")
        batch = await consumer.getmany(timeout_ms=200)
        if batch and started is None:
            started = time.perf_counter()
        for records in batch.values():
            for record in records:
                body = io.BytesIO(record.value)
                body.seek(_FRAME_HEADER)
                reader(body, schema, None)
            decoded += len(records)
    assert started is not None
    return time.perf_counter() - started, decoded


async def _matcher(runtime: Runtime, run: int, size: Size, population: Population) -> Measurement:
    """Run a real Matcher over the topic, in a new group with its own checkpoint topic."""
    isolated = await _isolated_runtime(runtime, run)
    matcher = Matcher(isolated, client_id=f"bench-matcher-{run}")
    ends = {partition: len(pairs) for partition, pairs in population.change_records.items()}
    probe = _Probe(matcher, isolated.topics.account_changes, ends)
    joining = time.perf_counter()
    await matcher.start()
    task = asyncio.create_task(matcher.run())
    try:
        await asyncio.wait_for(probe.done.wait(), size.run_timeout_s)
    except TimeoutError:
        pass  # reported as an incomplete run, with what it did in the time
    finally:
        await matcher.stop()
        await asyncio.wait_for(task, 10)
    ended = probe.last_change or time.perf_counter()
    first_batch = probe.first_batch or ended
    first_change = probe.first_change or ended
    stats = matcher.stats
    return Measurement(
        "matcher",
        run,
        size.changes if probe.done.is_set() else stats.changes_seen,
        ended - first_change,
        stats.changes_decoded,
        complete=probe.done.is_set(),
        seen=stats.changes_seen,
        deltas=stats.deltas_emitted,
        start_s=first_batch - joining,
        consents_s=first_change - first_batch,
        cpu_s=None
        if probe.cpu_first is None or probe.cpu_last is None
        else probe.cpu_last - probe.cpu_first,
    )


async def _isolated_runtime(runtime: Runtime, run: int) -> Runtime:
    """The same topics but a fresh group and checkpoint topic.

    A matcher resumes from its checkpoints, not only from its group's commits: a second run
    sharing the first one's checkpoint topic would start at the end of the changes.
    """
    settings = runtime.settings.model_copy(
        update={"matcher_group": f"{runtime.settings.matcher_group}-{run}"}
    )
    topics = dataclasses.replace(
        runtime.topics, matcher_checkpoints=f"{runtime.topics.matcher_checkpoints}.{run}"
    )
    await ensure_topics(
        runtime.kafka.bootstrap,
        [TopicSpec(topics.matcher_checkpoints, settings.partitions, "compact")],
    )
    kafka = KafkaClients(runtime.kafka.bootstrap, settings)
    return dataclasses.replace(runtime, settings=settings, topics=topics, kafka=kafka)


class _Probe:
    """Times a matcher's batches by wrapping its ``process``, without polling.

    Done when a batch reaching the end of every partition of the changes has been handled and
    the matcher has counted them all (a matcher that drops records to fetch them again after
    a rebalance is done only once it handled them).
    """

    def __init__(self, matcher: Matcher, changes_topic: str, ends: dict[int, int]) -> None:
        self._matcher = matcher
        self._inner = matcher.process
        self._changes_topic = changes_topic
        self._ends = ends
        self._behind = set(ends)
        self._total = sum(ends.values())
        self.first_batch: float | None = None
        self.first_change: float | None = None
        self.last_change: float | None = None
        self.cpu_first: float | None = None  # process CPU at first_change and last_change
        self.cpu_last: float | None = None
        self.done = asyncio.Event()
        matcher.process = self.process  # type: ignore[method-assign]

    async def process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        now = time.perf_counter()
        if batch and self.first_batch is None:
            self.first_batch = now
        if self.first_change is None and any(tp.topic == self._changes_topic for tp in batch):
            self.first_change = now
            self.cpu_first = time.process_time()
        await self._inner(batch)
        for tp, records in batch.items():
            if (
                tp.topic == self._changes_topic
                and records[-1].offset + 1 >= self._ends[tp.partition]
            ):
                self._behind.discard(tp.partition)
        if self.done.is_set() or self._behind:
            return
        if self._matcher.stats.changes_seen >= self._total:
            self.last_change = time.perf_counter()
            self.cpu_last = time.process_time()
            self.done.set()
