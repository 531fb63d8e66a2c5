"""Delivery throughput: the delivery worker against a bare aiohttp POST loop, same receiver.

One embedded broker and one ``deliveries`` topic filled once with N delivery records for C
consents of A apps, written as the matcher writes them (each with its delta's rendering),
every app registered (``apps`` topic) with the URL of one local receiver running in a process
of its own (see :mod:`benchmarks.delivery_receiver`: it verifies each signature, keeps the
body and answers 204, as a fast app does). Then alternating runs, worker, baseline, worker,
baseline, best of each:

- worker: a real :class:`DeliveryWorker` in a fresh consumer group reads the topic, decodes,
  coalesces each consent's deltas (up to ``delivery_max_batch``), builds, signs and posts
  them, ``delivery_concurrency`` requests at a time, and commits.
- baseline: the requests the receiver got from the worker run just before, replayed: the
  same deltas in the same groups, so the same count and sizes of bodies, rebuilt with
  :func:`head_delta_event` (with each consent's ledger values) and signed with
  :func:`webhook_headers` *before* the clock starts, then posted by ``delivery_concurrency``
  tasks over one aiohttp session configured as the worker's sender configures its own. It
  is the fastest honest sender of those requests.

The ratio is the worker's deltas/s over the baseline's (equal to the ratio of requests/s,
as both carry the same requests): what reading Kafka, decoding, building bodies, signing,
ordering per consent and committing cost against the HTTP traffic alone.

What is timed, on both sides, ends when the receiver has answered the request that carried
the last delta (the receiver's clock, ``CLOCK_MONOTONIC``, is system-wide). The baseline's
clock starts at its first POST; the worker's when its consumer hands over the first batch
of deliveries, which excludes the group join (~5 s on Tansu, printed as ``join s``) but
includes decoding that first batch and opening connections, as the baseline's does.

Every run is checked against the data: each delta received exactly once with the delta id
its consent and sequence require, every signature valid, every body a well-formed delta
event, and for the worker each consent's deltas in sequence order; the baseline must post
exactly the requests and bytes it replays. A run that fails is printed as INVALID, the
ratio line is still printed (from the valid runs), and the benchmark fails.

This machine may have few cores: the sender, the receiver and (in worker runs) the broker
share them, so CPU use of each is printed per run; a receiver near 100 % in the baseline
means the baseline is receiver-bound and the ratio flatters the worker. The sender's CPU time
per delta is printed too, with its own ratio: it holds steadier than rates when other
processes load the machine, but the ratio line is of rates, as the issue defines it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer

from benchmarks.delivery_floor import measure_floor
from benchmarks.delivery_receiver import ReceivedRequest, ReceiverProcess, ReceiverReport
from benchmarks.measurement import InvalidRunError, bench_settings
from benchmarks.population import Records, consent_records, produce
from benchmarks.reporting import print_ratio, print_table
from portability.broker import EmbeddedBroker, KafkaClients
from portability.broker.admin import ensure_topics
from portability.delivery import DeliveryWorker
from portability.matching import delta_id
from portability.runtime import Runtime, settle_collector
from portability.settings import Settings
from portability.simulation import ChangeFactory, user_ids
from portability.webhooks import ledger
from portability.webhooks.payload import (
    delivery_head,
    head_delta_event,
    ledger_digest,
    rendered_delta,
)
from portability.webhooks.signing import generate_secret, webhook_headers
from portability.wire import CATEGORIES, ConsentRecord, SchemaName
from portability.wire.records import AppRecord, DeliveryRecord, with_record_type
from portability.wire.topics import TopicSpec, partition_for_consent

__all__ = ["FULL", "QUICK", "Size", "Workload", "main"]

_SEED = 11
_POLL_S = 0.02
_BODY_EXCERPT = 4096  # as the worker's sender reads an answer
_TARGET = 0.7  # the ratio the issue asks of the worker


@dataclass(frozen=True, slots=True)
class Size:
    consents: int
    deltas: int
    apps: int
    rounds: int
    run_timeout_s: float  # per run, the worker's group join included


FULL = Size(consents=2_000, deltas=50_000, apps=10, rounds=2, run_timeout_s=180.0)
QUICK = Size(consents=500, deltas=10_000, apps=5, rounds=2, run_timeout_s=45.0)


def main(quick: bool = False) -> None:
    """Run the delivery benchmark and print its table and ``bench delivery: ratio=R``."""
    asyncio.run(_main(QUICK if quick else FULL))


async def _main(size: Size) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as folder:
        data_dir = Path(folder)
        async with EmbeddedBroker(log_file=data_dir / "tansu.log") as broker:
            # The receiver is a plain-http loopback endpoint, which only development mode allows.
            settings = bench_settings(data_dir, development_mode=True, webhook_allow_loopback=True)
            runtime = await Runtime.open(settings, broker.bootstrap)
            try:
                workload = Workload.generate(runtime, size)
                print(
                    f"delivery benchmark: {size.deltas:,} deltas of {size.consents:,} consents "
                    f"of {size.apps} apps, {settings.partitions} partitions, "
                    f"{_concurrency(settings, workload)} requests in flight at most "
                    f"(delivery_concurrency={settings.delivery_concurrency}, "
                    f"delivery_endpoint_concurrency={settings.delivery_endpoint_concurrency}), "
                    f"delivery_max_batch={settings.delivery_max_batch}; {_machine()} "
                    f"(generated in {workload.generated_s:.1f} s)",
                    flush=True,
                )
                # The workload's million-odd objects (every delivery, decoded, for the checks)
                # are the benchmark's, not the worker's: frozen out of the collector's sight,
                # they do not make each full collection of the worker run cost a quarter of a
                # second; and the collector is tuned as `portability worker` tunes it.
                settle_collector()
                async with ReceiverProcess(workload.secrets) as receiver:
                    await workload.publish(runtime, receiver)
                    await _bench(runtime, workload, receiver, size)
            finally:
                await runtime.close()


# --- the data -----------------------------------------------------------------------------


@dataclass(slots=True)
class Workload:
    """Apps, consents and their deliveries, generated once; what every run must deliver."""

    size: Size
    secrets: dict[str, str]  # app id -> whsec_ secret
    consents: list[ConsentRecord]
    encoded: Records  # the deliveries topic's records, per partition
    # By (consent, sequence), as the worker decodes them: what the baseline's bodies are
    # built from, so that its bodies are byte for byte the worker's.
    deliveries: dict[tuple[str, int], DeliveryRecord] = field(default_factory=dict)
    last_sequence: dict[str, int] = field(default_factory=dict)
    generated_s: float = 0.0

    @classmethod
    def generate(cls, runtime: Runtime, size: Size) -> Workload:
        started = time.perf_counter()
        secrets = {f"bench-app-{i:02d}": generate_secret() for i in range(size.apps)}
        apps = list(secrets)
        granted_at = datetime.now(UTC) - timedelta(days=1)
        users = user_ids(size.consents)
        consents = [
            _consent(user, apps[index % len(apps)], granted_at) for index, user in enumerate(users)
        ]
        workload = cls(size, secrets, consents, {})
        workload._generate_deliveries(runtime, users)
        workload.generated_s = time.perf_counter() - started
        return workload

    def _generate_deliveries(self, runtime: Runtime, users: list[str]) -> None:
        rng = random.Random(_SEED)
        factory = ChangeFactory(users, seed=_SEED)
        codec, partitions = runtime.codec, runtime.settings.partitions
        matched_at = datetime.now(UTC)
        encoded: dict[int, list[tuple[bytes, bytes]]] = {}
        for _ in range(self.size.deltas):
            consent = rng.choice(self.consents)
            consent_id = consent["consent_id"]
            sequence = self.last_sequence[consent_id] = self.last_sequence.get(consent_id, 0) + 1
            change = with_record_type(
                factory.random_change(consent["user_id"], rng.choice(CATEGORIES))
            )
            delivery: DeliveryRecord = {
                "delta_id": delta_id(consent_id, change["change_id"]),
                "consent_id": consent_id,
                "app_id": consent["app_id"],
                "user_id": consent["user_id"],
                "sequence": sequence,
                "change": change,
                "matched_at": matched_at,
            }
            # Rendered as the matcher renders every delta it emits (see MatcherOutput.emit).
            delivery["rendered"] = rendered_delta(delivery)
            # As the matcher writes them: the worker need not compute the digest.
            delivery["ledger_digest"] = ledger_digest(delivery_head(delivery))
            value = codec.encode(SchemaName.DELIVERY, dict(delivery))
            partition = partition_for_consent(consent_id, partitions)
            encoded.setdefault(partition, []).append((consent_id.encode(), value))
            decoded = codec.decode(SchemaName.DELIVERY, value)
            self.deliveries[consent_id, sequence] = decoded
        self.encoded = encoded

    @property
    def total(self) -> int:
        return self.size.deltas

    async def publish(self, runtime: Runtime, receiver: ReceiverProcess) -> None:
        """Register the apps at the receiver's URL, then produce consents and deliveries."""
        started = time.perf_counter()
        topics, bootstrap = runtime.topics, runtime.kafka.bootstrap
        apps = [
            (
                app_id.encode(),
                runtime.codec.encode(SchemaName.APP, dict(_app(app_id, secret, receiver))),
            )
            for app_id, secret in self.secrets.items()
        ]
        # The apps topic has one partition, as the outbox relay publishes it.
        await produce(bootstrap, topics.apps, {0: apps})
        await produce(bootstrap, topics.consents, consent_records(runtime, self.consents))
        await produce(bootstrap, topics.deliveries, self.encoded)
        print(f"(produced in {time.perf_counter() - started:.1f} s)", flush=True)


def _machine() -> str:
    """Cores and load: the paths share this machine with whatever else runs on it."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} CPU cores, load average {load:.1f}"


def _consent(user: str, app_id: str, granted_at: datetime) -> ConsentRecord:
    return {
        "consent_id": f"c_{user}_{app_id}",
        "user_id": user,
        "app_id": app_id,
        "categories": list(CATEGORIES),
        "mode": "ongoing",
        "status": "active",
        "granted_at": granted_at,
        "expires_at": None,
        "revoked_at": None,
        "version": 1,
    }


def _app(app_id: str, secret: str, receiver: ReceiverProcess) -> AppRecord:
    return {
        "app_id": app_id,
        "name": f"Benchmark app {app_id}",
        "webhook_url": receiver.webhook_url(app_id),
        "signing_secrets": [secret],
        "enabled": True,
        "version": 1,
    }


# --- the runs -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    """One path's pass over the workload, as the receiver saw it."""

    path: str  # "worker" or "baseline"
    run: int
    report: ReceiverReport
    seconds: float
    complete: bool
    cpu: _CpuShares
    join_s: float | None = None  # worker: start() to its first batch in hand (group join)
    failures: list[str] = field(default_factory=list)  # the path's own errors, if any
    problems: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.report.counters.requests

    @property
    def deltas(self) -> int:
        return sum(len(request.sequences) for request in self.report.requests)

    @property
    def bytes(self) -> int:
        return self.report.counters.bytes

    @property
    def rate(self) -> float:
        """Deltas per second."""
        return self.deltas / self.seconds if self.seconds > 0 else 0.0

    @property
    def sender_us_per_delta(self) -> float | None:
        """The sending process's CPU time per delta: unlike the rate, it does not count
        the time the machine's other load took the CPU away."""
        if self.cpu.sender is None or not self.deltas:
            return None
        return self.cpu.sender * self.seconds / self.deltas * 1e6


@dataclass(frozen=True, slots=True)
class _CpuShares:
    """CPU time over the timed window, in shares of one core (None: not measured)."""

    sender: float | None = None
    receiver: float | None = None
    broker: float | None = None


async def _bench(
    runtime: Runtime, workload: Workload, receiver: ReceiverProcess, size: Size
) -> None:
    broker = _CpuMeter.of_child("tansu")
    results: list[_Run] = []
    for run in range(1, size.rounds + 1):
        worker = _progress(await _worker_run(runtime, workload, receiver, run, broker))
        results.append(worker)
        results.append(_progress(await _baseline_run(runtime, workload, receiver, worker, broker)))
    for result in results:
        result.problems = _problems(result, workload, results)
    _print_results(results)
    for result in results:
        for problem in result.problems:
            print(f"INVALID: {problem}")
    valid = [result for result in results if not result.problems]
    baseline = _best(results, valid, "baseline")
    if baseline.cpu.receiver is not None and baseline.cpu.receiver >= 0.9:
        print(
            f"note: the receiver was {baseline.cpu.receiver:.0%} busy in the best baseline run: "
            "the baseline is receiver-bound, so the ratio flatters the worker"
        )
    worker = _best(results, valid, "worker")
    _print_cpu_ratio(results, valid)
    floor_ratio = await _print_floor(runtime, workload, worker, baseline)
    if floor_ratio is not None:
        print_ratio("delivery_floor", floor_ratio)
    print_ratio("delivery", worker.rate / baseline.rate if baseline.rate else 0.0)
    if len(valid) < len(results):
        # After the ratio line, so that the output keeps its shape; the exit status says it.
        raise InvalidRunError(f"{len(results) - len(valid)} invalid run(s): see INVALID above")


def _progress(result: _Run) -> _Run:
    print(
        f"  {result.path} run {result.run}: {result.rate:,.0f} deltas/s "
        f"in {result.requests:,} requests",
        file=sys.stderr,
        flush=True,
    )
    return result


def _best(results: list[_Run], valid: list[_Run], path: str) -> _Run:
    """The fastest valid run of ``path``; the fastest of all if none is valid."""
    candidates = [r for r in valid if r.path == path] or [r for r in results if r.path == path]
    return max(candidates, key=lambda r: r.rate)


async def _worker_run(
    runtime: Runtime,
    workload: Workload,
    receiver: ReceiverProcess,
    run: int,
    broker: _CpuMeter | None,
) -> _Run:
    """A real DeliveryWorker, in a group of its own, over the whole deliveries topic."""
    probe = _FirstBatch()
    settings = runtime.settings.model_copy(
        update={"delivery_group": f"{runtime.settings.delivery_group}-{run}"}
    )
    # A ledger of its own too: the heads an earlier run recorded would say every delta of
    # this one was delivered already (a worker taking over does not send them again).
    topics = dataclasses.replace(
        runtime.topics, delivery_ledger=f"{runtime.topics.delivery_ledger}-{run}"
    )
    await ensure_topics(
        runtime.kafka.bootstrap, [TopicSpec(topics.delivery_ledger, settings.partitions, "compact")]
    )
    isolated = dataclasses.replace(
        runtime,
        settings=settings,
        topics=topics,
        kafka=_ProbedClients(runtime.kafka.bootstrap, settings, probe),
    )
    await receiver.reset()
    worker = DeliveryWorker(isolated, client_id=f"bench-delivery-{run}")
    joining = time.monotonic_ns()
    await worker.start()
    task = asyncio.create_task(worker.run(), name=f"delivery worker {run}")
    window = _Window(broker)
    try:
        complete = await _until_delivered(
            receiver, workload.total, workload.size.run_timeout_s, task, probe, window
        )
    finally:
        window.stop()
        await worker.stop()
        failures = await _finish(task)
    report = await receiver.report()
    counters = report.counters
    started = probe.first_ns or counters.first_ns or joining
    ended = counters.last_ns if complete else (window.stopped_ns or time.monotonic_ns())
    return _Run(
        "worker",
        run,
        report,
        max(0, ended - started) / 1e9,
        complete,
        window.shares(report.cpu_s, started, ended),
        join_s=(started - joining) / 1e9,
        failures=failures,
    )


async def _until_delivered(
    receiver: ReceiverProcess,
    total: int,
    timeout_s: float,
    task: asyncio.Task[None],
    probe: _FirstBatch,
    window: _Window,
) -> bool:
    """Wait until the receiver counted ``total`` deltas; False if the time ran out.

    Polls shared memory, not the receiver, so the wait costs the measured traffic nothing.
    """
    deadline = time.monotonic() + timeout_s
    while receiver.counters().deltas < total:
        if window.started_ns is None and (probe.first_ns or receiver.counters().requests):
            window.start()
        if task.done():
            error = None if task.cancelled() else task.exception()
            raise InvalidRunError(f"the delivery worker stopped before the end: {error!r}")
        receiver.check_alive()
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_POLL_S)
    return True


async def _finish(task: asyncio.Task[None]) -> list[str]:
    """Wait for the worker's run() to return after stop(); its error, if any."""
    done, _ = await asyncio.wait({task}, timeout=10)
    if not done:
        task.cancel()
        return ["run() did not return within 10 s of stop()"]
    if task.cancelled() or task.exception() is None:
        return []
    return [f"run() failed: {task.exception()!r}"]


_Request = tuple[str, bytes, dict[str, str]]


async def _baseline_run(
    runtime: Runtime,
    workload: Workload,
    receiver: ReceiverProcess,
    replayed: _Run,
    broker: _CpuMeter | None,
) -> _Run:
    """Post the requests of the worker run ``replayed``, prebuilt and signed, at its concurrency."""
    plan = sorted(replayed.report.requests, key=lambda request: request.received_ns)
    requests = _rebuild(workload, plan, receiver)
    settings = runtime.settings
    failures: list[str] = []
    await receiver.reset()
    window = _Window(broker)
    async with _session(settings) as session:
        pending = iter(requests)
        started = time.monotonic_ns()
        window.start()
        posting = asyncio.gather(
            *(
                _post_all(session, pending, failures)
                for _ in range(_concurrency(settings, workload))
            )
        )
        try:
            await asyncio.wait_for(posting, workload.size.run_timeout_s)
            complete = True
        except TimeoutError:
            complete = False
        window.stop()
    report = await receiver.report()
    ended = report.counters.last_ns if complete else (window.stopped_ns or started)
    return _Run(
        "baseline",
        replayed.run,
        report,
        max(0, ended - started) / 1e9,
        complete,
        window.shares(report.cpu_s, started, ended),
        failures=failures,
    )


def _concurrency(settings: Settings, workload: Workload) -> int:
    """The worker's: ``delivery_concurrency`` at once, at most so many per app's endpoint."""
    return min(
        settings.delivery_concurrency, workload.size.apps * settings.delivery_endpoint_concurrency
    )


def _rebuild(
    workload: Workload, plan: Sequence[ReceivedRequest], receiver: ReceiverProcess
) -> list[_Request]:
    """The bodies and signed headers of ``plan``'s requests, built before any clock starts."""
    requests: list[_Request] = []
    chains: dict[str, str] = {}  # each consent's ledger, extended request by request
    for planned in plan:
        records = [workload.deliveries.get((planned.consent_id, s)) for s in planned.sequences]
        if None in records:
            continue  # a delta the worker made up: that run is invalid already
        heads = [delivery_head(r) for r in records if r is not None]
        before = chains.get(planned.consent_id) or ledger.start(planned.consent_id)
        values = ledger.chain(before, (ledger_digest(head) for head in heads))
        chains[planned.consent_id] = values[-1]
        msg_id, body = head_delta_event(heads, values)
        headers = webhook_headers([workload.secrets[planned.app_id]], msg_id, body)
        requests.append((receiver.webhook_url(planned.app_id), body, headers))
    return requests


@contextlib.asynccontextmanager
async def _session(settings: Settings) -> Any:
    """An aiohttp session configured as the worker's WebhookSender configures its own."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60)
    timeout = aiohttp.ClientTimeout(
        total=settings.delivery_timeout_s, connect=settings.delivery_connect_timeout_s
    )
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, raise_for_status=False, trust_env=False
    ) as session:
        yield session


async def _post_all(
    session: aiohttp.ClientSession, pending: Iterator[_Request], failures: list[str]
) -> None:
    """Post requests from the shared iterator until it is empty: one of N concurrent posters."""
    for url, body, headers in pending:
        try:
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as answer:
                excerpt = (await answer.content.read(_BODY_EXCERPT)).decode(errors="replace")
                if not 200 <= answer.status < 300:
                    failures.append(f"HTTP {answer.status} from {url}: {excerpt[:200]}")
        except (aiohttp.ClientError, TimeoutError) as error:
            # Not retried: a lost request shows as lost deltas, and the run as invalid.
            failures.append(f"POST {url} failed: {error!r}")


# --- timing helpers -----------------------------------------------------------------------


class _FirstBatch:
    """When the worker's consumer first handed over records: the worker's clock starts."""

    def __init__(self) -> None:
        self.first_ns: int | None = None

    def wrap(self, consumer: AIOKafkaConsumer) -> AIOKafkaConsumer:
        inner: Callable[..., Coroutine[Any, Any, dict[Any, list[Any]]]] = consumer.getmany

        async def getmany(*partitions: Any, **options: Any) -> dict[Any, list[Any]]:
            batch = await inner(*partitions, **options)
            if batch and self.first_ns is None:
                self.first_ns = time.monotonic_ns()
            return batch

        consumer.getmany = getmany
        return consumer


@dataclass(frozen=True, slots=True)
class _ProbedClients(KafkaClients):
    """The runtime's Kafka clients, with the worker's group consumer timed by ``probe``."""

    probe: _FirstBatch = field(default_factory=_FirstBatch)

    def group_consumer(self, group_id: str, client_id: str) -> AIOKafkaConsumer:
        # Explicit base call: zero-argument super() breaks in slots dataclasses.
        return self.probe.wrap(KafkaClients.group_consumer(self, group_id, client_id))


@dataclass(frozen=True, slots=True)
class _CpuMeter:
    """CPU seconds of a process, from /proc (Linux); the broker's, to show what it takes."""

    pid: int

    @classmethod
    def of_child(cls, name: str) -> _CpuMeter | None:
        """The child process of this one called ``name``; None where /proc cannot say."""
        with contextlib.suppress(OSError, ValueError):
            for task in Path("/proc/self/task").iterdir():
                for pid in (task / "children").read_text().split():
                    if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                        return cls(int(pid))
        return None

    def seconds(self) -> float | None:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Window:
    """CPU time of this process (the sender) and of the broker over a run's timed window."""

    def __init__(self, broker: _CpuMeter | None) -> None:
        self._broker = broker
        self.started_ns: int | None = None
        self.stopped_ns: int | None = None
        self._cpu: list[float] = []
        self._broker_cpu: list[float | None] = []

    def start(self) -> None:
        self.started_ns = time.monotonic_ns()
        self._cpu = [time.process_time()]
        self._broker_cpu = [self._broker.seconds() if self._broker else None]

    def stop(self) -> None:
        if self.started_ns is None or self.stopped_ns is not None:
            return
        self.stopped_ns = time.monotonic_ns()
        self._cpu.append(time.process_time())
        self._broker_cpu.append(self._broker.seconds() if self._broker else None)

    def shares(self, receiver_cpu_s: float, started_ns: int, ended_ns: int) -> _CpuShares:
        """Shares of one core: the sender's and broker's over this window, the receiver's
        (its CPU since its reset) over the timed interval."""
        timed_s = (ended_ns - started_ns) / 1e9
        receiver = receiver_cpu_s / timed_s if timed_s > 0 else None
        if self.started_ns is None or self.stopped_ns is None:
            return _CpuShares(receiver=receiver)
        window_s = (self.stopped_ns - self.started_ns) / 1e9
        if window_s <= 0:
            return _CpuShares(receiver=receiver)
        broker_before, broker_after = self._broker_cpu
        broker = (
            (broker_after - broker_before) / window_s
            if broker_before is not None and broker_after is not None
            else None
        )
        return _CpuShares((self._cpu[1] - self._cpu[0]) / window_s, receiver, broker)


# --- checks and report --------------------------------------------------------------------


def _problems(result: _Run, workload: Workload, results: list[_Run]) -> list[str]:
    """Why a run's rate means nothing: it lost, duplicated, misordered or forged work."""
    name = f"{result.path} run {result.run}"
    counters = result.report.counters
    problems = [f"{name}: {failure}" for failure in result.failures[:3]]
    if not result.complete:
        problems.append(
            f"{name} did not deliver all {workload.total:,} deltas within "
            f"{workload.size.run_timeout_s:.0f} s ({counters.deltas:,} arrived)"
        )
    if counters.rejected:
        problems.append(f"{name}: {counters.rejected} requests failed signature verification")
    problems.extend(f"{name}: malformed body: {error}" for error in result.report.malformed[:3])
    problems.extend(_delivery_problems(name, result, workload))
    if result.path == "baseline":
        problems.extend(_replay_problems(name, result, results))
    return problems


def _delivery_problems(name: str, result: _Run, workload: Workload) -> list[str]:
    """Every delta exactly once, with the right id; the worker's in sequence per consent."""
    received: dict[str, list[int]] = {}
    wrong_ids = 0
    for request in sorted(result.report.requests, key=lambda r: r.received_ns):
        got = received.setdefault(request.consent_id, [])
        for sequence, delta in zip(request.sequences, request.delta_ids, strict=True):
            expected = workload.deliveries.get((request.consent_id, sequence))
            wrong_ids += expected is None or expected["delta_id"] != delta
            got.append(sequence)
    lost = duplicated = misordered = 0
    for consent_id, last in workload.last_sequence.items():
        got = received.get(consent_id, [])
        unique = set(got)
        lost += last - len(unique & set(range(1, last + 1)))
        duplicated += len(got) - len(unique)
        misordered += result.path == "worker" and got != sorted(got)
    problems = []
    if lost or duplicated or wrong_ids:
        problems.append(
            f"{name}: {lost:,} deltas lost, {duplicated:,} duplicated, "
            f"{wrong_ids:,} with an unknown (consent, sequence) or a wrong delta id"
        )
    if misordered:
        problems.append(f"{name}: {misordered:,} consents got their deltas out of sequence")
    return problems


def _replay_problems(name: str, result: _Run, results: list[_Run]) -> list[str]:
    """The baseline must post exactly the requests of the worker run it replays."""
    replayed = next(r for r in results if r.path == "worker" and r.run == result.run)
    if (result.requests, result.bytes) == (replayed.requests, replayed.bytes):
        return []
    return [
        f"{name} posted {result.requests:,} requests of {result.bytes:,} bytes, but replays "
        f"{replayed.requests:,} requests of {replayed.bytes:,} bytes"
    ]


def _print_results(results: list[_Run]) -> None:
    rows = [
        [
            result.path,
            str(result.run),
            f"{result.requests:,}",
            f"{result.deltas:,}",
            f"{result.bytes:,}",
            f"{result.seconds:.2f}",
            f"{result.requests / result.seconds if result.seconds else 0:,.0f}",
            f"{result.rate:,.0f}",
            f"{result.deltas / result.requests if result.requests else 0:.1f}",
            _share(result.cpu.sender),
            "-" if result.sender_us_per_delta is None else f"{result.sender_us_per_delta:.0f}",
            _share(result.cpu.receiver),
            _share(result.cpu.broker),
            "-" if result.join_s is None else f"{result.join_s:.1f}",
        ]
        for result in results
    ]
    print_table(
        [
            "path",
            "run",
            "requests",
            "deltas",
            "bytes",
            "seconds",
            "requests/s",
            "deltas/s",
            "deltas/req",
            "sender cpu",
            "sender us/delta",
            "receiver cpu",
            "broker cpu",
            "join s",
        ],
        rows,
    )
    print(
        "(seconds: worker from its first batch of deliveries in hand, baseline from its first "
        "POST, to the receiver's answer to the last delta; cpu: share of one core over that "
        f"time; join: worker start and group join, not timed; at the end: {_machine()})"
    )


def _print_cpu_ratio(results: list[_Run], valid: list[_Run]) -> None:
    """The ratio of CPU cost per delta, printed beside the rate ratio: steadier when other
    processes load the machine, and blind to a receiver that holds the baseline back."""
    costs: dict[str, float] = {}
    for path in ("worker", "baseline"):
        measured = [
            cost
            for r in (valid or results)
            if r.path == path and (cost := r.sender_us_per_delta) is not None
        ]
        if not measured:
            return
        costs[path] = min(measured)
    print(
        f"sender CPU per delta, best run: worker {costs['worker']:.1f} us, baseline "
        f"{costs['baseline']:.1f} us; ratio {costs['baseline'] / costs['worker']:.2f} "
        "(for information: the ratio below is of delivery rates)"
    )


async def _print_floor(
    runtime: Runtime, workload: Workload, worker: _Run, baseline: _Run
) -> float | None:
    """What any worker spends per delta, and the ratios that alone would leave it (see
    :mod:`benchmarks.delivery_floor`). Returns the floor's CPU per delta over the worker's
    (the ``delivery_floor`` ratio), None where it could not be measured."""
    post_us, worker_us = baseline.sender_us_per_delta, worker.sender_us_per_delta
    if post_us is None or worker_us is None:
        print("floor: not measured (no CPU times on this platform)")
        return None
    try:
        floor = await measure_floor(
            runtime, workload.total, worker.report.requests, workload.secrets
        )
    except InvalidRunError as error:
        print(f"floor: not measured: {error}")
        return None
    # The CPU the receiver (baseline run) and the broker (worker run) take per delta: what a
    # worker spread over every core would share them with.
    receiver_us = _us_per_delta(baseline, baseline.cpu.receiver)
    broker_us = _us_per_delta(worker, worker.cpu.broker)
    cores = os.cpu_count() or 1
    print(
        f"floor, CPU per delta that no worker skips: reading from Kafka {floor.read_us:.1f} us "
        f"+ building and signing bodies {floor.build_sign_us:.1f} us + posting (the baseline's) "
        f"{post_us:.1f} us = {floor.per_delta_us(post_us):.1f} us; reading heads with this "
        f"build's reader {floor.head_us:.1f} us (for information)"
    )
    shared_us = receiver_us + broker_us
    spare_us = floor.spare_us(_TARGET, post_us, baseline.rate, cores, shared_us)
    print(
        "ceiling: a worker doing only the floor's steps would reach ratio "
        f"{floor.ceiling(post_us, baseline.rate):.2f} in one process, "
        f"{floor.ceiling(post_us, baseline.rate, cores, shared_us):.2f} over all {cores} cores "
        f"shared with the receiver ({receiver_us:.1f} us per delta) and the broker "
        f"({broker_us:.1f} us); at ratio {_TARGET} over all cores, "
        f"{max(spare_us, 0.0):.1f} us per delta would be left for the rest of its work. "
        f"This worker spends {worker_us:.1f} us per delta in one process, "
        f"{worker_us - floor.per_delta_us(post_us):.1f} us above the floor"
    )
    return floor.per_delta_us(post_us) / worker_us


def _us_per_delta(result: _Run, share: float | None) -> float:
    """CPU us per delta of a process that took ``share`` of a core over ``result``'s run."""
    if share is None or not result.deltas:
        return 0.0
    return share * result.seconds / result.deltas * 1e6


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
