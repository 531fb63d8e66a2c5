"""Two ``portability relay`` processes on one store; the publishing one is SIGKILLed mid-way.

Both run against one database (SQLite file and PostgreSQL) while one consent is changed many
times, with app and notification records in between. One publishes, the other stands by
(their ``/stats/`` say which). While changes keep coming, the publisher is killed with
SIGKILL; the other takes over and publishes the rest. Every outbox row reaches Kafka; the
only rows sent twice are ones the killed relay had not marked published when it died (sent
and acknowledged, then killed before the mark: at-least-once, as after any crash), and those
are named exactly: the standby is paused (SIGSTOP) for the instant of the kill, so the rows
still unmarked after the killed process is gone are known before anyone else can send.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from consent.relay_helpers import expected_ids, identity, published_ids, unpublished
from portability.broker import free_port
from portability.consent import AppView, ConsentService, OutboxEvent
from portability.consent.transfer_requests import TransferStore
from portability.runtime import Runtime
from waiting import wait_until

pytestmark = pytest.mark.timeout(300)

START_S = 90.0  # a Faust worker's first start, on a loaded machine
MAX_ROUNDS = 3000  # the writer's bound; it is stopped long before


@dataclass
class RelayProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    async def status(self) -> dict[str, Any] | None:
        """The ``relay`` field of its ``/stats/``; None while it does not answer."""
        url = f"http://127.0.0.1:{self.port}/stats/"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(url) as response,
            ):
                document = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        relay: dict[str, Any] | None = document.get("relay")
        return relay


@asynccontextmanager
async def relay_processes(
    runtime: Runtime, database_url: str, folder: Path
) -> AsyncIterator[list[RelayProcess]]:
    """Two ``portability relay`` processes, killed at the end whatever happened."""
    settings = runtime.settings
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTABILITY_")}
    env |= {
        "PORTABILITY_KAFKA_BOOTSTRAP": runtime.kafka.bootstrap,
        "PORTABILITY_TOPIC_PREFIX": settings.topic_prefix,
        "PORTABILITY_PARTITIONS": str(settings.partitions),
        "PORTABILITY_DATA_DIR": str(settings.data_dir),
        "PORTABILITY_DATABASE_URL": database_url,
        "PORTABILITY_KAFKA_REBALANCE_TIMEOUT_MS": "2000",
    }
    relays: list[RelayProcess] = []
    try:
        for name in ("a", "b"):
            port, log = free_port(), folder / f"relay-{name}.log"
            process = start_relay(env | {"PORTABILITY_WEB_PORT": str(port)}, log)
            relays.append(RelayProcess(process, port, log))
        yield relays
    finally:
        for relay in relays:
            if relay.process.poll() is None:
                relay.process.send_signal(signal.SIGCONT)  # a paused one cannot stop
                relay.process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(relay.process.wait, 20)


def start_relay(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``portability relay`` in its own process, its output in ``log``."""
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "portability", "relay"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def keep_changing(engine: Engine, app: AppView, stop: threading.Event) -> int:
    """Change one consent over and over (and an app, and notifications) until ``stop``."""
    service, transfers = ConsentService(engine), TransferStore(engine)
    consent = service.grant("u-failover", app.app_id, ["post"], initial_snapshot=True)
    for index in range(MAX_ROUNDS):
        if stop.is_set():
            return index
        transfers.request_snapshot(consent.consent_id)
        if index % 10 == 0:
            service.rotate_secret(app.app_id, overlap_s=0)
            other = service.grant(f"u-failover-{index}", app.app_id, ["profile"])
            service.revoke(other.consent_id)
    return MAX_ROUNDS


def unpublished_rows(engine: Engine) -> dict[int, tuple[str, str]]:
    """Rows not marked published, by id, with what each puts on Kafka."""
    with Session(engine) as session:
        query = select(OutboxEvent).where(col(OutboxEvent.published_at).is_(None))
        return {
            event.id: identity(event.kind, json.loads(event.payload))
            for event in session.exec(query)
            if event.id is not None
        }


async def test_the_standby_takes_over_from_a_killed_relay_and_nothing_is_lost(
    engine: Engine, runtime: Runtime, app: AppView, tmp_path: Path
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    async with relay_processes(runtime, url, tmp_path) as relays:
        statuses: dict[int, dict[str, Any] | None] = {}

        async def both_up() -> bool:
            for index, relay in enumerate(relays):
                assert relay.process.poll() is None, f"relay exited: see {relay.log}"
                statuses[index] = await relay.status()
            return all(
                s is not None and (s["publishing"] or s["holder"]) for s in statuses.values()
            )

        await wait_until(both_up, "both relays up, one publishing", timeout_s=START_S)
        [leader_index] = [i for i, s in statuses.items() if s and s["publishing"]]
        leader, standby = relays[leader_index], relays[1 - leader_index]
        leader_id = (statuses[leader_index] or {})["relay_id"]
        assert leader_id in (statuses[1 - leader_index] or {})["holder"]

        stop_writing = threading.Event()
        writer = asyncio.create_task(asyncio.to_thread(keep_changing, engine, app, stop_writing))
        try:

            async def leader_published(at_least: int) -> bool:
                status = await leader.status()
                return status is not None and status["published"] >= at_least

            await wait_until(lambda: leader_published(40), "the leader publishing", 60.0)
            assert not writer.done(), "killed mid-way, while changes keep coming"

            standby.process.send_signal(signal.SIGSTOP)
            leader.process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(leader.process.wait, 10)
            at_death = await asyncio.to_thread(unpublished_rows, engine)
            standby.process.send_signal(signal.SIGCONT)

            async def took_over(at_least: int) -> bool:
                status = await standby.status()
                return status is not None and status["published"] >= at_least

            await wait_until(lambda: took_over(40), "the standby took over", 60.0)
        finally:
            stop_writing.set()
            rounds = await writer
        await wait_until(lambda: unpublished(engine) == 0, "every change published", 60.0)
        final = await standby.status()
        standby.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(standby.process.wait, 30)

    assert rounds < MAX_ROUNDS
    assert final is not None
    assert (final["publishing"], final["acquired"], final["relay_id"]) == (
        True,
        1,
        final["holder"],
    )
    assert "takes over publishing" in standby.log.read_text()
    expected = expected_ids(engine)
    found = await published_ids(runtime, sum(expected.values()))
    assert set(found) == set(expected)  # nothing lost, nothing made up
    twice = {key for key, count in found.items() if count > 1}
    assert max(found.values()) <= 2
    # Sent twice only: what the killed relay had in flight and not marked.
    assert twice <= set(at_death.values())
