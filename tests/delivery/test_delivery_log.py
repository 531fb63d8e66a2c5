"""The worker's message log entries, read off ``delivery.log`` on the real broker.

Every attempt at a message becomes one entry: a failed one and the successful retry share
the message id, count 1 and 2, and name the records, the sources and the body's hash that the
endpoint really received.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from aiokafka import AIOKafkaConsumer

from delivery.test_worker_faults import World, wait_until
from portability.delivery import DeliveryWorker
from portability.runtime import Runtime
from portability.wire.delivery_log import DeliveryLogEntry
from portability.wire.schemas import SchemaName
from running_roles import running


@dataclass(slots=True)
class Scripted:
    """An endpoint answering each request with the next status of ``answers`` (then 200)."""

    answers: list[int]
    seen: list[tuple[str, bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.headers["webhook-id"], await request.read()))
        status = self.answers.pop(0) if self.answers else 200
        return web.Response(status=status, text="busy, come back" if status >= 400 else "")


@contextlib.asynccontextmanager
async def scripted(endpoint: Scripted) -> AsyncIterator[Scripted]:
    application = web.Application()
    application.router.add_post("/webhooks/{app}", endpoint.handle)
    runner = web.AppRunner(application, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        endpoint.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield endpoint
    finally:
        await runner.cleanup()


async def read_log(runtime: Runtime, expected: int) -> list[DeliveryLogEntry]:
    """The entries on delivery.log, waiting (bounded) until ``expected`` are there."""
    consumer = AIOKafkaConsumer(
        runtime.topics.delivery_log,
        bootstrap_servers=runtime.kafka.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    entries: list[DeliveryLogEntry] = []
    try:

        async def read_more() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                entries.extend(
                    runtime.codec.decode(SchemaName.DELIVERY_LOG_ENTRY, record.value)
                    for record in records
                )
            return len(entries) >= expected

        await wait_until(read_more, f"{expected} log entries", timeout_s=20.0)
    finally:
        await consumer.stop()
    return sorted(entries, key=lambda entry: (entry["attempted_at"], entry["attempt"]))


async def test_a_failed_and_a_successful_attempt_are_logged_as_sent(world: World) -> None:
    async with scripted(Scripted(answers=[503])) as endpoint:
        await world.register("app-log", endpoint.url, None)
        produced = await world.produce("app-log", "cns_log", 3)
        async with running(DeliveryWorker(world.runtime)) as worker:
            await wait_until(lambda: worker.stats.deltas_delivered == 3, "3 delivered")
            await wait_until(lambda: worker.stats.log_entries == 2, "2 attempts logged")
        failed, succeeded = await read_log(world.runtime, 2)

    (first_id, first_body), (second_id, second_body) = endpoint.seen
    assert first_id == second_id == failed["message_id"] == succeeded["message_id"]
    assert first_body == second_body  # the retry sends the same bytes
    assert [failed["attempt"], succeeded["attempt"]] == [1, 2]
    assert [failed["ok"], succeeded["ok"]] == [False, True]
    assert [failed["status"], succeeded["status"]] == [503, 200]
    assert "503" in failed["reason"]
    assert failed["response_excerpt"] == "busy, come back"
    assert succeeded["reason"] == ""
    for entry in (failed, succeeded):
        assert entry["origin"] == "worker"
        assert entry["event_type"] == "portability.delta"
        assert entry["app_id"] == "app-log"
        assert entry["consent_id"] == "cns_log"
        assert entry["user_id"] == produced[0]["user_id"]
        assert entry["endpoint_url"] == f"{endpoint.url}/webhooks/app-log"
        assert entry["size"] == len(second_body)
        assert entry["body_sha256"] == hashlib.sha256(second_body).hexdigest()
        assert (entry["first_sequence"], entry["last_sequence"]) == (1, 3)
        assert [r["delta_id"] for r in entry["records"]] == [r["delta_id"] for r in produced]
        assert [r["record_id"] for r in entry["records"]] == [
            r["change"]["record_id"] for r in produced
        ]
        assert {r["category"] for r in entry["records"]} == {"post"}
        assert [r["sequence"] for r in entry["records"]] == [1, 2, 3]
        assert [s["topic"] for s in entry["sources"]] == [world.runtime.topics.deliveries] * 3
        assert entry["duration_ms"] >= 0


async def test_a_refused_connection_is_logged_without_a_status(world: World) -> None:
    from portability.broker import free_port

    await world.register("app-gone", f"http://127.0.0.1:{free_port()}", None)
    await world.produce("app-gone", "cns_gone", 1)
    async with running(DeliveryWorker(world.runtime)) as worker:
        await wait_until(lambda: worker.stats.log_entries >= 2, "2 attempts logged")
    entries = await read_log(world.runtime, 2)

    assert all(not entry["ok"] and entry["status"] is None for entry in entries)
    assert all("refused" in entry["reason"] for entry in entries)
    assert [entry["attempt"] for entry in entries[:2]] == [1, 2]


async def test_a_commit_round_cancelled_mid_way_leaves_what_it_took_to_the_next(
    world: World,
) -> None:
    """A stop (or a rebalance) may cancel the commit loop while a round waits on the broker:
    the offsets, ledger heads and log entries that round took are committed by the next one
    (here the stop's own), not lost, or the next owner would send those deltas again."""
    async with scripted(Scripted(answers=[])) as endpoint:
        await world.register("app-log", endpoint.url, None)
        await world.produce("app-log", "cns_cancel", 4)
        worker = DeliveryWorker(world.runtime)
        real_flush = worker.log.flush
        stuck = asyncio.Event()

        async def flush_that_hangs_once_all_are_delivered() -> None:
            if worker.stats.deltas_delivered < 4:
                await real_flush()
                return
            stuck.set()
            await asyncio.Event().wait()  # the broker never answers: cancelled by stop()

        worker.log.flush = flush_that_hangs_once_all_are_delivered  # type: ignore[method-assign]
        async with running(worker):
            await wait_until(stuck.is_set, "a commit round stuck after taking the 4 offsets")
            worker.log.flush = real_flush  # type: ignore[method-assign]  # the broker is back

        assert await world.committed() == 4
        logged = await read_log(world.runtime, 1)
    assert [entry["ok"] for entry in logged] == [True]
    assert [r["sequence"] for r in logged[0]["records"]] == [1, 2, 3, 4]
