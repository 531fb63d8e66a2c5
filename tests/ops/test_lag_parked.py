"""Lag of the delivery worker's retry topic, read from the session's Tansu.

The worker holds a ``deliveries.retry`` partition's commit at the oldest parked record it
still owes, on purpose. These tests put parked copies there as the worker writes them (key:
the consent; ``retry.*`` headers: failures and when it is due), hold a real member's commit
at them, and check that lag calls the partition PARKED until the retry is overdue, not
STALLED or STOPPED; then a real worker parks one app's deliveries while serving another's,
and ``portability lag`` exits 0 with the group PARKED.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from aiohttp import web
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner, Result

from pipeline_harness import APP_A, pipeline_settings, running_pipeline
from portability.broker import BrokerError, EmbeddedBroker
from portability.broker.inspector import Inspector
from portability.cli import app
from portability.delivery.parking import ParkingTicket
from portability.ops.lag import GroupLag, LagMonitor, LagReport, PartitionLag, pipeline_groups
from portability.ops.lag_parked import ParkedReader
from portability.ops.lag_rules import ParkedHold, Status
from portability.ops.lag_sampler import LagSampler, LagView
from portability.ops.metrics import LagCollector
from portability.wire.topics import TopicNames, pipeline_topics
from waiting import wait_until

from .scene import PARTITIONS, Scene, SkippableClock, joined_member

OVERDUE_S = 900.0
APP_DOWN = "app-down"


def _monitor(
    inspector: Inspector,
    names: TopicNames,
    groups: dict[str, tuple[str, ...]],
    partitions: int,
    clock: SkippableClock,
) -> LagMonitor:
    return LagMonitor(
        inspector,
        groups,
        [spec.name for spec in pipeline_topics(names, partitions)],
        window=3,
        stop_after_s=300.0,
        parked_topics=(names.deliveries_retry,),
        parked_overdue_s=OVERDUE_S,
        clock=clock,
    )


def _about(due_at: float) -> float:
    """A due time as a ParkedHold field, equal to any within 10 ms (read back from a header)."""
    return cast(float, pytest.approx(due_at, abs=0.01))


def _partition(group: GroupLag, tp: TopicPartition) -> PartitionLag:
    return next(p for p in group.partitions if p.tp == tp)


def _parked(failures: int, due_at: float) -> list[tuple[str, bytes]]:
    return ParkingTicket("delivery", failures, due_at).headers()


# --- a partition held at a parked record -------------------------------------------------------


async def test_a_partition_held_at_a_parked_record_is_parked_until_overdue(
    scene: Scene, inspector: Inspector
) -> None:
    group = scene.settings.delivery_group
    retry = TopicPartition(scene.names.deliveries_retry, 0)
    due = time.time() + 600
    await scene.produce_keyed(retry.topic, 0, b"cns_1", _parked(2, due), count=3)
    clock = SkippableClock()
    monitor = _monitor(inspector, scene.names, pipeline_groups(scene.settings), PARTITIONS, clock)

    reports: list[LagReport] = []

    async def sample() -> GroupLag:
        reports.append(await monitor.sample())
        return next(g for g in reports[-1].groups if g.group == group)

    async with joined_member(scene.bootstrap, group, retry.topic) as member:
        await member.commit({retry: 0})
        first = await sample()
        clock.skipped = 301.0  # past the stop threshold: a stopped consumer would be STOPPED
        waiting = await sample()
        clock.skipped = 600.0 + 60  # due a minute ago: the worker is at it
        due_now = await sample()
        clock.skipped = 600.0 + OVERDUE_S + 60
        overdue = await sample()

    held = _partition(first, retry)
    assert (held.sample.committed, held.sample.lag, held.verdict.status) == (0, 3, Status.PARKED)
    assert "parked record of consent cns_1: retry 3 due at " in held.verdict.reason
    assert held.sample.parked == ParkedHold(0, "cns_1", 2, _about(due))
    assert held.as_dict()["parked"]["consent_id"] == "cns_1"
    assert first.members == 1
    assert first.verdict.status is Status.PARKED
    assert first.verdict.reason.startswith(f"{retry.topic}[0]: parked record of consent cns_1")
    # Parked records wait on purpose: counted apart, not as lag, and their age is no delay.
    assert (first.lag, first.parked, first.lag_seconds) == (0, 3, 0.0)
    assert first.next_retry_at == pytest.approx(due, abs=0.01)
    document = first.as_dict()
    assert (document["status"], document["lag"], document["parked"]) == ("PARKED", 0, 3)

    check_metrics(scene, reports[0], due)

    assert waiting.verdict.status is Status.PARKED
    assert _partition(due_now, retry).verdict.status is Status.PARKED
    assert re.search(
        r"retry 3 due 1m \d\ds ago, being retried", _partition(due_now, retry).verdict.reason
    )

    late = _partition(overdue, retry)
    assert late.verdict.status is Status.WARNING
    assert "overdue after 900 s" in late.verdict.reason
    assert (overdue.verdict.status, overdue.lag, overdue.parked) == (Status.WARNING, 3, 0)


def check_metrics(scene: Scene, report: LagReport, due: float) -> None:
    """The API process's metrics of that report: the status, the parked records apart."""
    sampler = LagSampler(scene.settings, scene.bootstrap)
    sampler.view = LagView(latest=report)
    registry = CollectorRegistry()
    registry.register(LagCollector(sampler))
    group = {"consumergroup": scene.settings.delivery_group}
    retry = {**group, "topic": scene.names.deliveries_retry, "partition": "0"}

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("portability_consumergroup_status", **group, status="PARKED") == 1
    assert value("portability_consumergroup_status", **group, status="STOPPED") == 0
    assert value("portability_consumergroup_parked_records", **group) == 3
    assert value("kafka_consumergroup_lag", **retry) == 3
    assert value("kafka_consumergroup_max_lag_seconds", **group) == 0
    due_metric = "portability_consumergroup_parked_retry_due_timestamp_seconds"
    assert value(due_metric, **retry) == pytest.approx(due, abs=0.01)


async def test_a_parked_partition_of_a_group_without_members_is_stopped(
    scene: Scene, inspector: Inspector
) -> None:
    """Nobody is left to retry it: the ordinary rules apply."""
    group = scene.settings.delivery_group
    retry = TopicPartition(scene.names.deliveries_retry, 1)
    await scene.produce_keyed(retry.topic, 1, b"cns_2", _parked(1, time.time() + 600), count=2)
    await scene.commit(group, {retry: 0})
    monitor = _monitor(
        inspector, scene.names, pipeline_groups(scene.settings), PARTITIONS, SkippableClock()
    )

    judged = next(g for g in (await monitor.sample()).groups if g.group == group)

    assert _partition(judged, retry).verdict.status is Status.STOPPED
    assert judged.verdict.status is Status.STOPPED
    assert (judged.lag, judged.parked) == (2, 0)


# --- reading what holds a partition ------------------------------------------------------------


async def test_a_record_never_tried_takes_the_due_time_of_its_consents_newer_copy(
    scene: Scene, inspector: Inspector
) -> None:
    """A consent's first record failed again and was copied anew, behind a record of it
    never tried: the partition is held at that one, which waits for the newer copy's retry.
    Read two records a sample, the newer copy is found at the second sample."""
    topic = scene.names.deliveries_retry
    tp = TopicPartition(topic, 1)
    now = time.time()
    await scene.produce_keyed(topic, 1, b"cns_a", _parked(0, 0.0))  # 0: never tried
    await scene.produce_keyed(topic, 1, b"cns_b", _parked(1, now + 100))  # 1: another consent
    await scene.produce_keyed(topic, 1, b"cns_a", _parked(4, now + 1200))  # 2: the newer copy
    await scene.produce_keyed(topic, 1, b"cns_c", _parked(3, 0.0))  # 3: endpoint disabled
    await scene.produce_keyed(topic, 1, b"cns_a", _parked(0, 0.0))  # 4: never tried
    reader = ParkedReader({topic}, per_sample=2)
    key = ("delivery", tp)

    first = await reader.read(inspector, {key: (0, 5)})
    second = await reader.read(inspector, {key: (0, 5)})
    moved = await reader.read(inspector, {key: (1, 5)})  # a new hold is read afresh
    disabled = await reader.read(inspector, {key: (3, 5)})

    assert first[key] == ParkedHold(0, "cns_a", 0, None)
    assert second[key] == ParkedHold(0, "cns_a", 4, _about(now + 1200))
    assert moved[key] == ParkedHold(1, "cns_b", 1, _about(now + 100))
    assert disabled[key] == ParkedHold(3, "cns_c", 3, None, endpoint_disabled=True)


async def test_a_record_without_good_retry_headers_holds_no_parked_partition(
    scene: Scene, inspector: Inspector
) -> None:
    topic = scene.names.deliveries_retry
    await scene.produce(topic, 0, 2)
    broken = [("retry.kind", b"delivery"), ("retry.history", b'[{"status": 500}]')]
    await scene.produce_keyed(topic, 1, b"cns_x", broken)  # an attempt without its time
    plain, odd = ("delivery", TopicPartition(topic, 0)), ("delivery", TopicPartition(topic, 1))

    assert await ParkedReader({topic}).read(inspector, {plain: (0, 2), odd: (0, 1)}) == {}


async def test_a_failed_read_costs_the_hold_not_the_sample() -> None:
    """Reading on is an extra: a fetch that times out leaves the partition to the ordinary
    rules for this sample instead of failing it."""

    class Timing:
        async def records(self, *_: object) -> list[object]:
            raise BrokerError("Kafka at k:9092 did not answer within 1 s (fetch)")

    key = ("delivery", TopicPartition("p.deliveries.retry", 0))
    reader = ParkedReader({"p.deliveries.retry"})

    assert await reader.read(Timing(), {key: (0, 5)}) == {}  # type: ignore[arg-type]


# --- a real worker parks one app's deliveries and serves another -----------------------------


@contextlib.asynccontextmanager
async def endpoint_down() -> AsyncIterator[str]:
    """An endpoint answering 503 to everything; yields its URL."""

    async def down(_request: web.Request) -> web.Response:
        return web.Response(status=503, text="down for maintenance")

    application = web.Application()
    application.router.add_post("/hook", down)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()


async def _lag_command(*args: str) -> Result:
    """The command in a thread (it runs its own loop); the logging it sets up is undone at
    once, as the pipeline still logs while it stops."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return await asyncio.to_thread(CliRunner().invoke, app, list(args), catch_exceptions=False)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("cli_environment")
async def test_one_apps_parked_retries_leave_the_worker_parked_not_stopped(
    broker: EmbeddedBroker, inspector: Inspector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second attempt comes ten minutes after the first: parked (park_after 1 s) till then.
    settings = pipeline_settings(tmp_path).model_copy(
        update={
            "delivery_retry_schedule_s": [0, 600],
            "delivery_retry_jitter": 0.0,
            "delivery_park_after_s": 1.0,
            "delivery_circuit_failures": 1000,
        }
    )
    names = TopicNames.with_prefix(settings.topic_prefix)
    known = pipeline_groups(settings)
    groups = {g: known[g] for g in (settings.matcher_group, settings.delivery_group)}
    clock = SkippableClock()
    monitor = _monitor(inspector, names, groups, settings.partitions, clock)

    async def delivery() -> GroupLag:
        report = await monitor.sample()
        return next(g for g in report.groups if g.group == settings.delivery_group)

    async with running_pipeline(settings, broker.bootstrap) as p, endpoint_down() as url:
        await asyncio.to_thread(p.service.register_app, "Down app", url, APP_DOWN)
        healthy = await p.grant("u-ok", APP_A, ["post"])
        await p.grant("u-down", APP_DOWN, ["post"])
        await p.wait_matcher_ready()
        await p.publish(p.changes("u-down", "post", "post"))
        await p.wait_until(lambda: p.worker.stats.parked >= 2, "the down app's deltas parked")
        served = p.changes("u-ok", "post", "post")
        await p.publish(served)
        await p.wait_for_changes(healthy.consent_id, [c["change_id"] for c in served])
        parked_at = time.time()

        async def parked_and_caught_up() -> bool:
            judged = await delivery()
            return judged.verdict.status is Status.PARKED and judged.lag == 0

        await wait_until(parked_and_caught_up, "the delivery group PARKED, all else consumed")
        clock.skipped = 301.0  # past the stop threshold: the commit alone would say STOPPED
        later = await delivery()
        for name in ("topic_prefix", "partitions", "matcher_group", "delivery_group"):
            monkeypatch.setenv(f"PORTABILITY_{name.upper()}", str(getattr(settings, name)))
        result = await _lag_command(
            "--bootstrap", broker.bootstrap, "lag", "--samples", "1", "--json",
            "--group", settings.delivery_group, "--group", settings.matcher_group,
        )  # fmt: skip

    assert later.members == 1
    assert later.verdict.status is Status.PARKED, later.verdict
    assert f"{names.deliveries_retry}[" in later.verdict.reason
    (held,) = [partition for partition in later.partitions if partition.parked]
    assert held.sample.parked is not None
    assert held.sample.parked.failures == 1
    due_at = held.sample.parked.due_at
    assert due_at is not None
    assert parked_at - 30 < due_at - 600 <= parked_at  # the first attempt's time, plus 600 s
    assert (later.lag, later.parked) == (0, held.sample.lag)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["status"] == "PARKED"
    statuses = {g["group"]: g["status"] for g in document["groups"]}
    assert statuses == {settings.delivery_group: "PARKED", settings.matcher_group: "OK"}
