"""Prometheus metrics: the right values after known workloads, served by every process.

- The pipeline roles' metrics, read off a real pipeline (matcher, worker, receiver) after a
  workload whose outcome is known change by change.
- The Faust worker's ``/metrics`` over HTTP.
- The API process's metrics: lag from the lag sampler and letters from the dead-letter
  counter against offsets and letters a :class:`Scene` put on the broker; consents and the
  outbox from a consent store; ``/metrics`` over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from pipeline_harness import APP_A, APP_B, running_pipeline
from portability.api import create_app
from portability.api.delivery_status import DeliveryStatusBoard
from portability.api.operator_status import OperatorStatus
from portability.broker import EmbeddedBroker, free_port
from portability.consent import ConsentService, OutboxEvent, create_store_engine, init_schema
from portability.delivery.stats import LatencyHistogram
from portability.ops.dead_letters.counts import DeadLetterCounter, follow_dead_letters
from portability.ops.lag_sampler import LagSampler
from portability.ops.metrics import SPECS, api_registry, exported_names, render, worker_registry
from portability.ops.worker_app import Role, build_app
from portability.settings import Settings
from portability.wire.dead_letters import DeadLetter
from portability.wire.headers import MARKER_HEADER
from waiting import wait_until

from .scene import Scene

_DEADLINE_S = 60.0


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# --- the pipeline roles ----------------------------------------------------------------------


async def test_role_metrics_after_a_known_workload(
    broker: EmbeddedBroker, settings: Settings
) -> None:
    async with running_pipeline(settings, broker.bootstrap) as p:
        registry = worker_registry(lambda: p.matcher, lambda: p.worker)
        to_a = await p.grant("u1", APP_A, ["post"])
        to_b = await p.grant("u2", APP_B, ["post", "profile"])
        await p.wait_matcher_ready()
        for_a = p.changes("u1", "post", "post", "post", "post", "post")
        not_granted = p.changes("u1", "profile", "profile")
        nobody = p.changes("nobody", "post", "post", "profile", "follow")
        await p.publish(for_a + not_granted + nobody)
        await p.publisher.publish_raw("u1", b"not an Avro record")
        await p.wait_for_changes(to_a.consent_id, [c["change_id"] for c in for_a])
        # app-b's first two requests fail (503), the third succeeds.
        p.receiver.fail_next(2, 503)
        for_b = p.changes("u2", "post", "profile", "post")
        await p.publish(for_b)
        await p.wait_for_changes(to_b.consent_id, [c["change_id"] for c in for_b])
        await p.wait_idle()
        await p.wait_until(lambda: p.matcher.stats.changes_seen >= 15, "every change read")

        changes = "portability_matcher_changes_total"
        assert value(registry, changes, outcome="matched", reason="") == 8
        assert value(registry, changes, outcome="dropped", reason="no_consent") == 4
        assert value(registry, changes, outcome="dropped", reason="not_granted") == 2
        assert value(registry, changes, outcome="dead_lettered", reason="not_framed") == 1
        letters = "portability_ingress_dead_letters_total"
        assert value(registry, letters, stage="matcher", reason="not_framed") == 1
        assert value(registry, "portability_matcher_deltas_total") == 8
        assert value(registry, "portability_matcher_ready") == 1
        assert value(registry, "portability_matcher_consents") == 2
        assert value(registry, "portability_dead_letters_written_total", stage="matcher") == 1
        assert value(registry, "portability_dead_letters_written_total", stage="delivery") == 0

        delivered = "portability_deliveries_total"
        assert value(registry, delivered, app=APP_A, kind="delta", outcome="delivered") == 5
        assert value(registry, delivered, app=APP_B, kind="delta", outcome="delivered") == 3
        requests = "portability_delivery_requests_total"
        assert value(registry, requests, app=APP_B, result="failed") == 2
        assert (value(registry, requests, app=APP_B, result="ok") or 0) >= 1
        assert value(registry, requests, app=APP_A, result="failed") is None
        assert value(registry, "portability_delivery_retries_total") == 2

        latency = "portability_delivery_latency_seconds"
        assert value(registry, f"{latency}_count") == 8
        assert value(registry, f"{latency}_bucket", le="+Inf") == 8
        total = value(registry, f"{latency}_sum")
        assert total is not None
        assert 0 < total < 8 * 30

        for app in (APP_A, APP_B):
            circuit = "portability_endpoint_circuit_state"
            assert value(registry, circuit, app=app, state="closed") == 1
            assert value(registry, circuit, app=app, state="open") == 0
            assert value(registry, "portability_endpoint_disabled", app=app) == 0
            assert value(registry, "portability_endpoint_consecutive_failures", app=app) == 0
        assert value(registry, "portability_delivery_pending_records") == 0
        assert value(registry, "portability_delivery_parked_records") == 0
        assert value(registry, "portability_delivery_retrying_consents") == 0

        body, content_type = render(registry, None)
    assert content_type.startswith("text/plain")
    parsed = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {"portability_matcher_changes", "portability_delivery_latency_seconds"} <= parsed


def test_latency_histogram_buckets_are_cumulative() -> None:
    histogram = LatencyHistogram()
    for seconds in (0.01, 0.05, 0.3, 4.0, 100_000.0, -1.0):
        histogram.observe(seconds)
    buckets = dict(histogram.cumulative())
    assert buckets[0.05] == 3  # 0.01, 0.05 (le is inclusive) and the clock skew as 0
    assert buckets[0.5] == 4
    assert buckets[5.0] == 5
    assert buckets[36000.0] == 5
    assert buckets[float("inf")] == 6
    assert histogram.count == 6
    assert histogram.total_s == pytest.approx(100_004.36)


def test_latency_from_epoch_millis_counts_as_observing_each_delay() -> None:
    # The worker's per-delta form (heads carry epoch milliseconds) must bucket as observe().
    now = 1_700_000_100.0
    moments_ms = [1_700_000_099_990, 1_700_000_099_950, 1_700_000_099_700, 1_700_000_096_000,
                  1_600_000_000_000, 1_700_000_101_000]  # fmt: skip
    by_millis, one_by_one = LatencyHistogram(), LatencyHistogram()
    by_millis.observe_since_ms(iter(moments_ms), now)
    for moment_ms in moments_ms:
        one_by_one.observe(now - moment_ms / 1000)
    assert by_millis.counts == one_by_one.counts
    assert by_millis.count == one_by_one.count == 6
    assert by_millis.total_s == pytest.approx(one_by_one.total_s)
    assert by_millis.cumulative()[0] == (0.05, 3)  # 10 ms, 50 ms and a future moment as 0


@pytest.fixture
async def worker_app(broker: EmbeddedBroker, settings: Settings) -> AsyncIterator[str]:
    port = free_port(settings.web_host)
    configured = settings.model_copy(update={"web_port": port})
    app = build_app(configured, broker.bootstrap, {Role.MATCHER, Role.DELIVERY})
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        await asyncio.wait_for(app.start(), _DEADLINE_S)
        yield f"http://{configured.web_host}:{port}"
    finally:
        await asyncio.wait_for(app.stop(), _DEADLINE_S)
        root.handlers[:] = handlers
        root.setLevel(level)


async def test_faust_worker_serves_metrics(worker_app: str) -> None:
    async with aiohttp.ClientSession() as session:
        body = ""

        async def matcher_ready() -> bool:
            nonlocal body
            with contextlib.suppress(aiohttp.ClientConnectionError, TimeoutError):
                async with session.get(f"{worker_app}/metrics") as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"].startswith("text/plain")
                    body = await response.text()
            return "portability_matcher_ready 1.0" in body

        await wait_until(matcher_ready, "the matcher ready in /metrics", _DEADLINE_S, poll_s=0.1)
        openmetrics = "application/openmetrics-text; version=1.0.0"
        async with session.get(f"{worker_app}/metrics", headers={"Accept": openmetrics}) as om:
            assert om.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await om.text()).rstrip().endswith("# EOF")
    families = {family.name for family in text_string_to_metric_families(body)}
    assert "portability_matcher_ready 1.0" in body
    assert "portability_delivery_latency_seconds" in families
    assert "process_cpu_seconds" in families  # the process collector too


# --- the API process -------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Engine]:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'consents.db'}")
    init_schema(engine)
    yield engine
    engine.dispose()


async def put_letters(scene: Scene) -> None:
    """Two delivery letters of app-x, one matcher letter, one replay marker."""
    producer = AIOKafkaProducer(bootstrap_servers=scene.bootstrap, acks="all")
    await producer.start()
    try:
        for offset, stage, extra in (
            (0, "delivery", {"app_id": "app-x", "consent_id": "cns_1"}),
            (1, "delivery", {"app_id": "app-x", "consent_id": "cns_1"}),
            (7, "matcher", {}),
        ):
            topic = scene.names.deliveries if stage == "delivery" else scene.names.account_changes
            letter = DeadLetter(
                topic=topic,
                partition=0,
                offset=offset,
                key=b"cns_1",
                value=b"x",
                reason="HTTP 500 after 8 attempt(s): down",
                stage=stage,
                extra=extra,
            )
            await producer.send_and_wait(
                scene.names.dead_letters, letter.value, key=letter.key, headers=letter.headers()
            )
        marker = [(MARKER_HEADER, b"replay"), ("dlq.replayed_from", b"0")]
        await producer.send_and_wait(scene.names.dead_letters, None, key=b"cns_1", headers=marker)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def running(*loops: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(loop) for loop in loops]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_api_metrics_lag_letters_and_consents(
    scene: Scene, ops_settings: Settings, store: Engine
) -> None:
    names = scene.names
    await scene.produce(names.deliveries, 0, 5)
    await scene.commit(ops_settings.delivery_group, {TopicPartition(names.deliveries, 0): 2})
    await scene.produce(names.account_changes, 1, 3)
    await scene.commit(ops_settings.matcher_group, {TopicPartition(names.account_changes, 1): 3})
    await put_letters(scene)
    service = ConsentService(store)
    service.register_app("X", "https://x.example/hooks", "app-x")
    service.grant("u1", "app-x", ["post"])
    service.revoke(service.grant("u2", "app-x", ["post"]).consent_id)
    settings = ops_settings.model_copy(update={"lag_sample_interval_s": 0.1})
    sampler, counter = LagSampler(settings, scene.bootstrap), DeadLetterCounter()
    registry, stop = api_registry(store, sampler, counter), asyncio.Event()

    follow = follow_dead_letters(settings, scene.bootstrap, counter, stop)
    async with running(sampler.run(stop), follow):
        await wait_until(lambda: sampler.samples >= 2, "two lag samples", 20.0)
        await wait_until(lambda: counter.summary.end_offset >= 4, "the letters counted", 20.0)
        check_lag(registry, settings, names.deliveries, names.account_changes)
        check_letters(registry)
    check_store(registry, store)


def check_lag(
    registry: CollectorRegistry, settings: Settings, deliveries: str, changes: str
) -> None:
    delivery, matcher = settings.delivery_group, settings.matcher_group
    where = {"consumergroup": delivery, "topic": deliveries, "partition": "0"}
    assert registry.get_sample_value("kafka_consumergroup_lag", where) == 3
    assert registry.get_sample_value("kafka_consumergroup_current_offset", where) == 2
    assert registry.get_sample_value("kafka_consumergroup_lag_seconds", where) is not None
    group = {"consumergroup": delivery}
    assert value(registry, "kafka_consumergroup_lag_sum", **group, topic=deliveries) == 3
    assert value(registry, "kafka_consumergroup_members", **group) == 0
    partition = {"topic": deliveries, "partition": "0"}
    assert value(registry, "kafka_topic_partition_current_offset", **partition) == 5
    assert value(registry, "kafka_topic_partition_oldest_offset", **partition) == 0
    # No members and an offset that does not move: stopped, as `portability lag` says.
    status = "portability_consumergroup_status"
    assert value(registry, status, **group, status="STOPPED") == 1
    assert value(registry, status, **group, status="OK") == 0
    assert value(registry, "kafka_consumergroup_lag_sum", consumergroup=matcher, topic=changes) == 0
    assert value(registry, status, consumergroup=matcher, status="OK") == 1
    assert value(registry, "portability_lag_sample_ok") == 1


def check_letters(registry: CollectorRegistry) -> None:
    assert value(registry, "portability_dead_letters", stage="delivery", app="app-x") == 2
    assert value(registry, "portability_dead_letters", stage="matcher", app="") == 1
    assert value(registry, "portability_dead_letter_replays") == 1


def check_store(registry: CollectorRegistry, store: Engine) -> None:
    consents = "portability_consents"
    assert value(registry, consents, app="app-x", mode="ongoing", status="active") == 1
    assert value(registry, consents, app="app-x", mode="ongoing", status="revoked") == 1
    with Session(store) as session:
        rows = session.exec(select(func.count()).select_from(OutboxEvent)).one()
    assert value(registry, "portability_outbox_pending") == rows  # no relay ran
    assert value(registry, "portability_consent_store_up") == 1


async def test_api_serves_metrics_and_guards_the_status_page(store: Engine, tmp_path: Path) -> None:
    token = "operator-token-for-metrics-tests"
    settings = Settings(data_dir=tmp_path, api_operator_token=SecretStr(token))
    ConsentService(store).register_app("X", "https://x.example/hooks", "app-x")
    ConsentService(store).grant("u1", "app-x", ["post"])
    api = create_app(
        settings, store, operator_status=OperatorStatus(settings, store, DeliveryStatusBoard())
    )
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        metrics = await client.get("/metrics")
        page = await client.get("/status")
        basic = await client.get("/status", auth=("anyone", token))
        wrong = await client.get("/status", auth=("operator", "not-the-token"))
        bearer = await client.get("/status.json", headers={"Authorization": f"Bearer {token}"})
        no_bearer = await client.get("/status.json")
        schema = (await client.get("/openapi.json")).json()
    assert metrics.status_code == 200
    assert 'portability_consents{app="app-x",mode="ongoing",status="active"} 1.0' in metrics.text
    assert page.status_code == 401
    assert page.headers["WWW-Authenticate"].startswith("Basic ")
    assert wrong.status_code == 401
    assert basic.status_code == 200
    assert '<svg class="lag-chart"' in basic.text
    assert bearer.status_code == 200
    assert bearer.json()["health"] == "unknown"  # no Kafka: nothing to judge
    assert bearer.json()["consents"] == {"active": 1}
    assert no_bearer.status_code == 401
    assert no_bearer.json()["error"] == "unauthorized"
    assert not {"/metrics", "/status", "/status.json"} & set(schema["paths"])


def test_every_spec_is_exported_and_documented(store: Engine) -> None:
    exported = exported_names([worker_registry(lambda: None, lambda: None), api_registry(store)])
    readme = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    for spec in SPECS.values():
        assert set(spec.sample_names) <= exported, spec.name
        documented = spec.name if spec.kind == "histogram" else spec.sample_names[0]
        assert f"`{documented}`" in readme, f"{documented} is not in docs/operations.md"
