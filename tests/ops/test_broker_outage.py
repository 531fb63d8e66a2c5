"""The broker down, as an operator would meet it: the roles degrade and resume, nothing lost.

Every role is an OS process (``portability api`` with its outbox relay, ``matcher``,
``worker``, and the platform's ``portability changes publish`` fed on its stdin) on a broker
of the test's own on S3 storage (the ``durable`` fixture). The broker is killed with SIGKILL
while changes and a grant flow, and started again on the same storage. Checked: the API keeps
answering and its status shows the broker unreachable; the grant made meanwhile is published
by the relay once the broker is back; the publisher waits and its changes go out; a publish
started during the outage fails in one line; matcher and worker resume without a restart;
every change arrives once (redeliveries carry the same delta id), in sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from durable_broker import DurableBroker
from portability.broker import free_port
from portability.ops.lifecycle import STOP_TIMEOUT_S
from portability.receiver import ReceivingApp, run_receiver
from portability.runtime import Runtime
from portability.settings import Settings
from portability.simulation import ChangeFactory, PlatformPublisher
from waiting import wait_until

from .processes import COMMAND, RoleProcess, role_environment, started

pytestmark = pytest.mark.xdist_group("test_broker_outage")

_PLATFORM = {"Authorization": "Bearer dev-platform-token"}
_OPERATOR = {"Authorization": "Bearer dev-operator-token"}
_BOUND_S = 30.0
_OUTAGE_S = 5.0  # longer than the roles' group sessions (2 s)
_STOP_S = STOP_TIMEOUT_S + 4.0
_CLIENT_LINES = 30


def _change(user_id: str, number: int) -> str:
    return json.dumps(
        {
            "change_id": str(uuid.uuid4()),
            "user_id": user_id,
            "category": "post",
            "operation": "upsert",
            "record_id": f"post-{number}",
            # Now: a change older than the consent's grant is not the app's (not_granted).
            "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "record": {
                "caption": f"post {number}",
                "media_url": "https://cdn.example/1.mp4",
                "created_at": 1795426867101,
            },
        }
    )


@contextlib.asynccontextmanager
async def _stream_publisher(
    env: Mapping[str, str], log_dir: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``portability changes publish`` reading its standard input, as a platform streams."""
    process = _spawn_stream(env, log_dir)
    try:
        yield process
    finally:
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()
        if process.poll() is None:
            process.kill()
        await asyncio.to_thread(process.wait, _BOUND_S)


def _spawn_stream(env: Mapping[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    with (log_dir / "stream.err").open("wb") as err:
        return subprocess.Popen(  # noqa: S603 - the project's own command
            [COMMAND, "changes", "publish"],
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _write(process: subprocess.Popen[bytes], lines: list[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("".join(f"{line}\n" for line in lines).encode())
    process.stdin.flush()


async def _publish(env: Mapping[str, str], log_dir: Path, lines: list[str]) -> None:
    """``portability changes publish FILE``, which must send every line and exit 0."""
    source = log_dir / f"changes-{uuid.uuid4().hex[:6]}.jsonl"
    source.write_text("".join(f"{line}\n" for line in lines))
    async with started(["changes", "publish", str(source)], env, log_dir) as process:
        assert await process.exit_code(_BOUND_S) == 0, process.output()


async def _register(http: aiohttp.ClientSession, receiver_base: str) -> tuple[str, str]:
    registration = {
        "name": "Outage Pal",
        "use_case": "Keeps a copy of the user's posts through a broker outage.",
        "webhook_url": f"{receiver_base}/webhooks/pending",
        "requested_scopes": ["post"],
    }
    async with http.post("/v1/apps", json=registration) as response:
        assert response.status == 201, await response.text()
        body = await response.json()
    app_id, secret = body["app"]["app_id"], body["signing_secret"]
    async with http.post(
        f"/v1/apps/{app_id}/review", headers=_OPERATOR, json={"decision": "approve"}
    ) as response:
        assert response.status == 200, await response.text()
    async with http.put(
        f"/v1/apps/{app_id}/webhook",
        headers=_OPERATOR,
        json={"webhook_url": f"{receiver_base}/webhooks/{app_id}"},
    ) as response:
        assert response.status == 200, await response.text()
    return app_id, secret


async def _grant(http: aiohttp.ClientSession, app_id: str, user_id: str) -> str:
    body = {
        "user_id": user_id,
        "user_region": "DE",
        "app_id": app_id,
        "categories": ["post"],
        "mode": "ongoing",
        "initial_snapshot": False,  # no transfers role here: deltas from now on
    }
    async with http.post("/v1/consents", headers=_PLATFORM, json=body) as response:
        assert response.status == 201, await response.text()
        consent_id: str = (await response.json())["consent_id"]
        return consent_id


async def _status(http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get("/status.json", headers=_OPERATOR) as response:
        assert response.status == 200, await response.text()
        status: dict[str, Any] = await response.json()
        return status


def _settings_of(env: Mapping[str, str]) -> Settings:
    """The settings the role processes read from ``env`` (topics, partitions, data folder)."""
    return Settings(
        topic_prefix=env["PORTABILITY_TOPIC_PREFIX"],
        partitions=int(env["PORTABILITY_PARTITIONS"]),
        data_dir=Path(env["PORTABILITY_DATA_DIR"]),
    )


def _alive(*processes: RoleProcess) -> bool:
    for process in processes:
        assert process.process.poll() is None, process.output()
    return True


async def test_a_broker_outage_degrades_and_resumes(durable: DurableBroker, tmp_path: Path) -> None:
    api_port, matcher_port, worker_port = free_port(), free_port(), free_port()
    env = role_environment(
        tmp_path,
        kafka_bootstrap=durable.bootstrap,
        api_port=str(api_port),
        lag_sample_interval_s="0.5",
        delivery_retry_schedule_s="[0,0.2,0.5,1,1,1,1,1,1,1,1,1]",
    )
    receiver = ReceivingApp()
    async with contextlib.AsyncExitStack() as stack:
        base = await stack.enter_async_context(run_receiver(receiver))
        api = await stack.enter_async_context(started(["api"], env, tmp_path))
        await api.wait_for(f"consent API on http://127.0.0.1:{api_port}", _BOUND_S)
        matcher = await stack.enter_async_context(
            started(["matcher"], env | {"PORTABILITY_WEB_PORT": str(matcher_port)}, tmp_path)
        )
        worker = await stack.enter_async_context(
            started(["worker"], env | {"PORTABILITY_WEB_PORT": str(worker_port)}, tmp_path)
        )
        await matcher.wait_healthy(matcher_port, _BOUND_S)
        await worker.wait_healthy(worker_port, _BOUND_S)
        http = await stack.enter_async_context(
            aiohttp.ClientSession(f"http://127.0.0.1:{api_port}")
        )
        app_id, secret = await _register(http, base)
        receiver.add_app(app_id, secret)
        before = await _grant(http, app_id, "u-before")
        await _until_held(http, matcher_port, 1)
        await _publish(env, tmp_path, [_change("u-before", n) for n in range(3)])
        await _until_delivered(receiver, before, 3)
        # The platform's own producer, as a service of the platform keeps one open.
        runtime = await Runtime.open(_settings_of(env), durable.bootstrap)
        stack.push_async_callback(runtime.close)
        publisher = PlatformPublisher(runtime)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        factory = ChangeFactory(["u-before"], seed=18)
        # And the platform's stream into `portability changes publish`, a line at a time.
        stream = await stack.enter_async_context(_stream_publisher(env, tmp_path))
        _write(stream, [_change("u-before", 3)])
        await _until_delivered(receiver, before, 4)  # it is connected and sending

        # --- the broker goes down -----------------------------------------------------------
        await durable.kill()
        down_at = time.monotonic()
        changes = [factory.random_change("u-before", "post") for _ in range(5)]
        held_send = asyncio.create_task(publisher.publish(changes), name="held send")
        _write(stream, [_change("u-before", n) for n in range(4, 9)])
        assert stream.stdin is not None
        stream.stdin.close()  # its end: it exits once every line is acknowledged
        stack.push_async_callback(_settled, held_send)
        during = await _grant(http, app_id, "u-during")  # the API answers: stored, outbox
        async with http.get(f"/v1/consents/{before}", headers=_PLATFORM) as response:
            assert response.status == 200, await response.text()
        # A replay needs Kafka: accepted, then failed in so many words (the app asks again).
        refused_replay = await _replay(http, before)
        failed = await _until_replay_ends(http, refused_replay)
        assert failed["state"] == "failed", failed
        assert "request it again" in failed["last_error"], failed
        await wait_until(
            lambda: _says_unreachable(http), "the status shows the broker unreachable", _BOUND_S
        )
        status = await _status(http)
        assert status["health"] == "critical", status
        assert any("unreachable" in problem["message"] for problem in status["problems"]), status
        async with started(["changes", "publish", "/dev/null"], env, tmp_path) as refused:
            assert await refused.exit_code(_BOUND_S) == 1, refused.output()
        assert f"cannot reach Kafka at {durable.bootstrap}" in refused.stderr(), refused.output()
        # Down longer than the groups' sessions: every member must join again afterwards.
        # Meanwhile every role keeps running (a role that exits fails the wait at once).
        await wait_until(
            lambda: _alive(api, matcher, worker) and time.monotonic() > down_at + _OUTAGE_S,
            f"{_OUTAGE_S} s of outage, every role running",
            _OUTAGE_S + _BOUND_S,
            poll_s=0.1,
        )
        assert not held_send.done()  # the producer holds the changes and waits
        assert stream.poll() is None, (tmp_path / "stream.err").read_text()  # and so does it

        # --- and comes back -----------------------------------------------------------------
        await durable.start()
        assert await asyncio.wait_for(held_send, _BOUND_S) == 5
        assert await asyncio.to_thread(stream.wait, _BOUND_S) == 0
        assert "sent 6, rejected 0" in (tmp_path / "stream.err").read_text()
        await _until_delivered(receiver, before, 14)
        await _until_held(http, matcher_port, 2)  # the relay published the grant
        await _publish(env, tmp_path, [_change("u-during", n) for n in range(3)])
        await _until_delivered(receiver, during, 3)
        await wait_until(
            lambda: _says_reachable(http), "the status shows the broker reachable", _BOUND_S
        )
        again = await _until_replay_ends(http, await _replay(http, before))
        assert again["state"] == "done", again
        for process in (matcher, worker, api):  # and each stops cleanly, as after no outage
            process.signal(signal.SIGTERM)
            assert await process.exit_code(_STOP_S) == 0, process.output()
            assert "Traceback" not in process.output(), process.output()
            # The client library's repeats, one line a message a window (was ~100 in the
            # first half second of an outage, in each process).
            client_lines = [line for line in process.stderr().splitlines() if " aiokafka" in line]
            assert len(client_lines) < _CLIENT_LINES, "\n".join(client_lines)

    stats = receiver.stats()
    for consent_id in (before, during):
        deltas = receiver.deltas(consent_id)
        assert [delta.sequence for delta in deltas] == list(range(1, len(deltas) + 1))
        assert len({delta.change_id for delta in deltas}) == len(deltas)  # no change twice
        assert receiver.detected_gaps(consent_id) == []
    assert stats.verification_failures == 0


async def _settled(task: asyncio.Task[int]) -> None:
    """Cancel ``task`` if it still runs, and retrieve its outcome (a failed test's too)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def _until_held(http: aiohttp.ClientSession, port: int, consents: int) -> None:
    async def held() -> bool:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with http.get(f"http://127.0.0.1:{port}/stats/") as response:
                stats = await response.json(content_type=None)
                return bool(stats["matcher"]["consents_held"] == consents)
        return False

    await wait_until(held, f"the matcher holds {consents} consent(s)", _BOUND_S, poll_s=0.1)


async def _until_delivered(receiver: ReceivingApp, consent_id: str, count: int) -> None:
    await wait_until(
        lambda: len(receiver.deltas(consent_id)) >= count,
        f"{count} deltas of {consent_id} received",
        _BOUND_S,
    )


async def _says_unreachable(http: aiohttp.ClientSession) -> bool:
    return (await _status(http))["kafka"]["reachable"] is False


async def _says_reachable(http: aiohttp.ClientSession) -> bool:
    return (await _status(http))["kafka"]["reachable"] is True


async def _replay(http: aiohttp.ClientSession, consent_id: str) -> str:
    async with http.post(
        f"/v1/consents/{consent_id}/replay", headers=_OPERATOR, json={"from_sequence": 1}
    ) as response:
        assert response.status == 202, await response.text()
        location: str = response.headers["Location"]
        return location


async def _until_replay_ends(http: aiohttp.ClientSession, location: str) -> dict[str, Any]:
    ended: dict[str, Any] = {}

    async def over() -> bool:
        async with http.get(location, headers=_OPERATOR) as response:
            assert response.status == 200, await response.text()
            ended.update(await response.json())
        return ended["state"] in ("done", "failed")

    await wait_until(over, f"replay {location} over", _BOUND_S, poll_s=0.1)
    return ended


async def test_roles_stopped_while_the_broker_is_down_end_in_bounded_time(
    durable: DurableBroker, tmp_path: Path
) -> None:
    """SIGTERM with the broker gone: no traceback, no hang. aiokafka's consumer.stop() let a
    CancelledError out there (broker.stop_consumer), which ended the API with a traceback.
    A stop that waits on the broker (a producer flushing, a matcher's revocation writing its
    checkpoints) ends by the stop's watchdog: one line, exit 1."""
    api_port, matcher_port, worker_port = free_port(), free_port(), free_port()
    env = role_environment(tmp_path, kafka_bootstrap=durable.bootstrap, api_port=str(api_port))
    async with (
        started(["api"], env, tmp_path) as api,
        started(["matcher"], env | {"PORTABILITY_WEB_PORT": str(matcher_port)}, tmp_path) as (
            matcher
        ),
        started(["worker"], env | {"PORTABILITY_WEB_PORT": str(worker_port)}, tmp_path) as worker,
    ):
        await api.wait_for(f"consent API on http://127.0.0.1:{api_port}", _BOUND_S)
        await matcher.wait_healthy(matcher_port, _BOUND_S)
        await worker.wait_healthy(worker_port, _BOUND_S)
        await durable.kill()
        roles = {"api": api, "worker": worker, "matcher": matcher}
        for process in roles.values():
            process.signal(signal.SIGTERM)
        codes = {name: await process.exit_code(_STOP_S) for name, process in roles.items()}

    for name, process in roles.items():
        assert "Traceback" not in process.output(), process.output()
        if codes[name] != 0:
            assert codes[name] == 1, process.output()
            assert "the stop did not finish within" in process.stderr(), process.output()


async def test_portability_broker_on_s3_keeps_its_topics_across_a_restart(
    durable: DurableBroker, tmp_path: Path
) -> None:
    """``portability broker`` with PORTABILITY_BROKER_STORAGE=s3://...: what it held is there
    when it starts again; the S3 secret never shows in its output."""
    await durable.s3.create_bucket("cli")
    port = free_port()
    settings = durable.broker_settings() | {"broker_storage": "s3://cli/"}
    env = role_environment(tmp_path, **settings)
    secret = settings["broker_s3_secret_access_key"]
    topic = f"{env['PORTABILITY_TOPIC_PREFIX']}account.changes"
    for run in ("first", "second"):
        async with started(["broker", "--port", str(port)], env, tmp_path) as broker:
            await broker.wait_for("stored in s3://cli/", _BOUND_S)
            bootstrap = f"127.0.0.1:{port}"
            if run == "first":
                await _send_one(bootstrap, topic)
            else:
                assert await _count(bootstrap, topic) == 1
            broker.signal(signal.SIGTERM)
            assert await broker.exit_code(_STOP_S) == 0, broker.output()
        assert secret not in broker.output()


async def _send_one(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"kept", key=b"u1", partition=0)
    finally:
        await producer.stop()


async def _count(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        read = 0
        deadline = time.monotonic() + _BOUND_S
        while read == 0 and time.monotonic() < deadline:  # the first fetches may come empty
            batches = await consumer.getmany(partition, timeout_ms=500)
            read += sum(len(records) for records in batches.values())
        return read
    finally:
        await consumer.stop()
