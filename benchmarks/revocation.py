"""Revocation latency: from the revoke call's response to the last delivery attempt it let by.

The whole pipeline runs in this process (embedded broker, SQLite consent store with its outbox
relay, matcher, delivery worker, reference receiver over HTTP) with the consent API served by
uvicorn on a local port. Every user has an ongoing consent and a steady stream of changes, so
each consent has deltas on their way when it is revoked. Consents are then revoked one after
another through ``POST /v1/consents/{id}/revoke``, as the platform does for a user; the
stream goes on meanwhile and for a settling period after the last one.

For each consent, the latency is the receipt time of the last request that carried its deltas
minus the time the revoke call's response arrived (0 when nothing came after the response).
What it covers: the outbox relay's poll, publishing the revocation, the worker's directory
reading it, and whatever request was already on the wire. The receiver must also get one
``authorization.removed`` per consent and no delta after it; a run where that fails is
invalid.

The baseline, measured in the same run, is the p99 of ordinary delta latency (change
occurred on the platform to receipt at the app): a revocation should take effect about as
fast as a change does. Printed last: ``bench revocation: p99_ms=N``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import uvicorn

from benchmarks.measurement import InvalidRunError, bench_settings
from benchmarks.reporting import print_table
from portability.api.app import create_app
from portability.broker import EmbeddedBroker
from portability.broker.embedded import free_port
from portability.consent import ConsentView
from portability.demo.local import LocalPipeline, local_pipeline
from portability.simulation import ChangeFactory
from portability.wire import Category

__all__ = ["Size", "main"]

_PLATFORM_TOKEN = secrets.token_urlsafe(16)
_APP_ID = "bench-app"
_CATEGORIES: list[Category] = ["post", "profile", "follow", "activity", "direct_message"]


@dataclass(frozen=True, slots=True)
class Size:
    users: int  # one consent each, every one revoked
    changes_per_user_s: float  # the steady stream, per user
    revoke_interval_s: float  # between two revoke calls
    settle_s: float  # stream on after the last revocation, to catch late deliveries


FULL = Size(users=200, changes_per_user_s=10.0, revoke_interval_s=0.1, settle_s=3.0)
QUICK = Size(users=20, changes_per_user_s=10.0, revoke_interval_s=0.1, settle_s=2.0)


@dataclass(frozen=True, slots=True)
class Revocation:
    consent_id: str
    responded_at: float  # wall clock, as the receiver's receipt times
    call_ms: float  # the revoke call's own duration


def main(quick: bool = False) -> None:
    asyncio.run(_main(QUICK if quick else FULL))


async def _main(size: Size) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-revocation-") as folder:
        async with EmbeddedBroker() as broker, _pipeline(broker, Path(folder)) as pipeline:
            await _bench(pipeline, size)


@contextlib.asynccontextmanager
async def _pipeline(broker: EmbeddedBroker, data_dir: Path) -> AsyncIterator[LocalPipeline]:
    settings = bench_settings(
        data_dir,
        kafka_bootstrap=broker.bootstrap,
        api_platform_token=_PLATFORM_TOKEN,
        api_rate_limit_per_minute=1_000_000,
    )
    async with local_pipeline(settings, transfers=False) as pipeline:
        yield pipeline


async def _bench(pipeline: LocalPipeline, size: Size) -> None:
    app = await asyncio.to_thread(
        pipeline.service.register_app,
        "Benchmark app",
        f"{pipeline.receiver_url}/webhooks/{_APP_ID}",
        _APP_ID,
    )
    pipeline.receiver.add_app(_APP_ID, app.signing_secret)
    users = [f"bench-user-{index:05d}" for index in range(size.users)]
    consents = [
        await asyncio.to_thread(pipeline.service.grant, user, _APP_ID, ["all"]) for user in users
    ]
    await _until(pipeline, lambda: pipeline.matcher.consents_held == len(consents), 60.0)
    stop_stream = asyncio.Event()
    stream = asyncio.create_task(_stream(pipeline, users, size, stop_stream), name="stream")
    async with _api(pipeline) as base_url:
        await _until(
            pipeline,
            lambda: all(pipeline.receiver.deltas(c.consent_id) for c in consents),
            60.0,
        )
        revocations = await _revoke_all(base_url, consents, size.revoke_interval_s, pipeline)
        await asyncio.sleep(size.settle_s)  # the measured window: the stream goes on
    stop_stream.set()
    await stream
    await _until(pipeline, lambda: pipeline.worker.pending == 0, 30.0)
    _report(pipeline, revocations)


async def _stream(
    pipeline: LocalPipeline, users: list[str], size: Size, stop: asyncio.Event
) -> None:
    """Publish changes for every user at a steady rate until ``stop``."""
    factory = ChangeFactory(users, seed=5)
    rng = random.Random(5)
    tick_s = 0.05
    per_tick = max(1, round(len(users) * size.changes_per_user_s * tick_s))
    while not stop.is_set():
        started = time.monotonic()
        changes = [
            factory.random_change(rng.choice(users), rng.choice(_CATEGORIES))
            for _ in range(per_tick)
        ]
        await pipeline.publisher.publish(changes)
        pipeline.check_alive()
        await asyncio.sleep(max(0.0, tick_s - (time.monotonic() - started)))


@contextlib.asynccontextmanager
async def _api(pipeline: LocalPipeline) -> AsyncIterator[str]:
    """The consent API on a local port, as ``portability api`` serves it."""
    port = free_port()
    settings = pipeline.runtime.settings
    config = uvicorn.Config(
        create_app(settings, pipeline.engine), host="127.0.0.1", port=port, log_config=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="api")
    try:
        await _until(pipeline, lambda: server.started, 30.0)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _revoke_all(
    base_url: str, consents: list[ConsentView], interval_s: float, pipeline: LocalPipeline
) -> list[Revocation]:
    headers = {"Authorization": f"Bearer {_PLATFORM_TOKEN}"}
    revocations = []
    async with aiohttp.ClientSession(headers=headers) as session:
        for consent in consents:
            started = time.perf_counter()
            url = f"{base_url}/v1/consents/{consent.consent_id}/revoke"
            async with session.post(url) as response:
                if response.status != 200:
                    raise InvalidRunError(f"revoke answered {response.status}")
                await response.read()
            revocations.append(
                Revocation(consent.consent_id, time.time(), (time.perf_counter() - started) * 1000)
            )
            pipeline.check_alive()
            await asyncio.sleep(interval_s)
    return revocations


async def _until(pipeline: LocalPipeline, condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        pipeline.check_alive()
        if time.monotonic() > deadline:
            raise InvalidRunError(f"not reached within {timeout_s} s")
        await asyncio.sleep(0.02)


def _percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def _report(pipeline: LocalPipeline, revocations: list[Revocation]) -> None:
    receiver = pipeline.receiver
    stops, removals, calls = [], [], []
    late_consents = 0
    for revocation in revocations:
        last = receiver.last_delta_at(revocation.consent_id) or 0.0
        after_ms = max(0.0, (last - revocation.responded_at) * 1000)
        late_consents += after_ms > 0
        stops.append(after_ms)
        removal = receiver.removal(revocation.consent_id)
        if removal is not None:
            removals.append((removal.received_at - revocation.responded_at) * 1000)
        calls.append(revocation.call_ms)
    stats = receiver.stats()
    problems = []
    if len(removals) != len(revocations):
        problems.append(f"{len(revocations) - len(removals)} apps never told of the removal")
    if stats.deltas_after_removal:
        problems.append(f"{stats.deltas_after_removal} deltas arrived after their removal")
    if stats.duplicates or stats.missing_sequences or stats.verification_failures:
        problems.append(f"delivery problems: {stats}")
    baseline_p99 = stats.latency_p99_ms or 0.0
    rows = [
        _row("revoke response -> last delivery", stops),
        _row("revoke response -> authorization.removed", removals),
        _row("revoke call itself", calls),
    ]
    print(
        f"revocation: {len(revocations)} consents revoked under a steady stream; "
        f"{late_consents} had a delivery after the response; "
        f"{stats.deltas_received} deltas delivered in all"
    )
    print_table(["measure", "", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows)
    print(
        f"baseline (same run): delta latency occurred -> received p99 = {baseline_p99:.0f} ms; "
        f"ratio revocation p99 / delta p99 = {_percentile(stops, 99) / baseline_p99:.2f}"
        if baseline_p99
        else "baseline: no delta latency measured"
    )
    print(f"bench revocation: p99_ms={_percentile(stops, 99):.0f}", flush=True)
    if problems:
        raise InvalidRunError("; ".join(problems))


def _row(label: str, values: list[float]) -> list[str]:
    if not values:
        return [label, "", "-", "-", "-", "-"]
    return [
        label,
        "",
        f"{statistics.median(values):.0f}",
        f"{_percentile(values, 95):.0f}",
        f"{_percentile(values, 99):.0f}",
        f"{max(values):.0f}",
    ]
