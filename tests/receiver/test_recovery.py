"""Asking for replays of gaps, against a real local HTTP endpoint that records the requests.

The end-to-end path (the real API replaying into this receiver until the gap closes) is in
tests/api/test_replay_api.py; here the API's answers are scripted to test the receiver's side:
the grace period, one request per consent, retries, and what it does with each answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from portability.receiver import ReceivingApp, RecoveryOptions, run_receiver
from portability.webhooks.signing import generate_secret

from .test_receiver import APP_ID, CONSENT_ID, Sender, delivery

API_KEY = "pk_test-key"
WAIT_S = 5.0


@dataclass
class FakeApi:
    """Answers replay requests from a script; records what it was asked."""

    answers: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, Any] | None, str | None]] = field(default_factory=list)
    replay_state: str = "done"
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def replay(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("POST", request.path, body, request.headers.get("Authorization")))
        self.changed.set()
        status, document, headers = (
            self.answers.pop(0) if self.answers else (202, {"replay_id": "rpl_1"}, {})
        )
        return web.json_response(document, status=status, headers=headers)

    async def get_replay(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path, None, request.headers.get("Authorization")))
        return web.json_response({"replay_id": "rpl_1", "state": self.replay_state})

    def posts(self) -> list[dict[str, Any] | None]:
        return [body for method, _, body, _ in self.requests if method == "POST"]


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeApi, str]]:
    fake = FakeApi()
    application = web.Application()
    application.router.add_post("/v1/consents/{consent_id}/replay", fake.replay)
    application.router.add_get("/v1/consents/{consent_id}/replays/{replay_id}", fake.get_replay)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield fake, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@dataclass
class Setup:
    fake: FakeApi
    receiver: ReceivingApp
    sender: Sender


@pytest.fixture
async def setup(api: tuple[FakeApi, str]) -> AsyncIterator[Setup]:
    fake, url = api
    secret = generate_secret()
    options = RecoveryOptions(url, grace_s=0.2, retry_base_s=0.05, poll_interval_s=0.05)
    receiver = ReceivingApp(recovery=options)
    receiver.add_app(APP_ID, secret, api_key=API_KEY)
    async with (
        run_receiver(receiver) as base_url,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session,
    ):
        yield Setup(fake, receiver, Sender(session, base_url, secret))


async def ended(receiver: ReceivingApp, count: int = 1) -> None:
    assert await receiver.wait_for(lambda _: len(receiver.replay_requests()) >= count, WAIT_S)


async def test_an_open_gap_is_replayed_from_its_first_missing_sequence(setup: Setup) -> None:
    await setup.sender.send([delivery(1), delivery(2)])
    gap_seen = time.monotonic()
    await setup.sender.send([delivery(5)])
    assert setup.receiver.recoveries_outstanding == 1

    await ended(setup.receiver)

    assert setup.fake.posts() == [{"from_sequence": 3}]
    method, path, _, authorization = setup.fake.requests[0]
    assert (method, path) == ("POST", f"/v1/consents/{CONSENT_ID}/replay")
    assert authorization == f"Bearer {API_KEY}"
    assert time.monotonic() - gap_seen >= 0.2  # not before the grace period
    # The scripted replay "finished" without sending 3-4: the gap is reported unfilled.
    (record,) = setup.receiver.replay_requests()
    assert (record.from_sequence, record.replay_id, record.outcome) == (3, "rpl_1", "unfilled")
    assert "replay done" in record.detail
    stats = setup.receiver.stats()
    assert (stats.replays_requested, stats.gaps_unfilled, stats.replays_refused) == (1, 1, 0)


async def test_a_gap_that_fills_within_the_grace_period_asks_nothing(setup: Setup) -> None:
    await setup.sender.send([delivery(1), delivery(3)])
    await setup.sender.send([delivery(2)])  # a retry brings it late

    await ended(setup.receiver)

    assert setup.fake.requests == []
    assert [r.outcome for r in setup.receiver.replay_requests()] == ["filled_in_grace"]
    assert setup.receiver.stats().replays_requested == 0


async def test_one_request_per_consent_while_one_is_outstanding(setup: Setup) -> None:
    setup.fake.replay_state = "running"  # never finishes: the recovery stays outstanding
    await setup.sender.send([delivery(1), delivery(3)])
    await setup.sender.send([delivery(5)])  # a second gap of the same consent
    await asyncio.wait_for(setup.fake.changed.wait(), WAIT_S)
    await setup.sender.send([delivery(7)])  # and a third, while the request is out

    await setup.sender.send([delivery(2), delivery(4), delivery(6)])  # the replay arrives
    await ended(setup.receiver)

    assert setup.fake.posts() == [{"from_sequence": 2}]
    (record,) = setup.receiver.replay_requests()
    assert record.outcome == "filled"
    assert setup.receiver.missing_ranges(CONSENT_ID) == []


async def test_busy_and_unavailable_answers_are_retried_a_bounded_number_of_times(
    setup: Setup,
) -> None:
    setup.fake.answers = [
        (503, {"error": "unavailable", "message": "retry shortly"}, {"Retry-After": "0.05"}),
        (409, {"error": "replay_in_progress", "message": "replay rpl_0 runs"}, {}),
        (429, {"error": "rate_limited", "message": "slow down"}, {}),
        (503, {"error": "unavailable", "message": "still down"}, {}),
    ]
    await setup.sender.send([delivery(1), delivery(4)])

    await ended(setup.receiver)

    assert len(setup.fake.posts()) == 4  # RecoveryOptions.attempts
    (record,) = setup.receiver.replay_requests()
    assert record.outcome == "refused"
    assert "gave up after 4 attempts" in record.detail
    assert "still down" in record.detail
    assert setup.receiver.stats().replays_refused == 1


async def test_a_final_refusal_is_not_retried(setup: Setup) -> None:
    setup.fake.answers = [
        (409, {"error": "consent_not_active", "message": "consent is revoked"}, {}),
    ]
    await setup.sender.send([delivery(1), delivery(3)])

    await ended(setup.receiver)

    assert len(setup.fake.posts()) == 1
    (record,) = setup.receiver.replay_requests()
    assert (record.outcome, record.replay_id) == ("refused", None)
    assert "HTTP 409: consent is revoked" in record.detail


async def test_an_api_that_cannot_be_reached_is_given_up_on(secret_free_port: int) -> None:
    options = RecoveryOptions(
        f"http://127.0.0.1:{secret_free_port}", grace_s=0.0, attempts=2, retry_base_s=0.01
    )
    secret = generate_secret()
    receiver = ReceivingApp(recovery=options)
    receiver.add_app(APP_ID, secret, api_key=API_KEY)
    async with run_receiver(receiver) as url, aiohttp.ClientSession() as session:
        await Sender(session, url, secret).send([delivery(2)])
        await ended(receiver)

    (record,) = receiver.replay_requests()
    assert record.outcome == "refused"
    assert "ClientConnectorError" in record.detail or "Connect" in record.detail


async def test_apps_without_an_api_key_only_count_gaps(api: tuple[FakeApi, str]) -> None:
    fake, url = api
    secret = generate_secret()
    receiver = ReceivingApp(recovery=RecoveryOptions(url, grace_s=0.0))
    receiver.add_app(APP_ID, secret)
    async with run_receiver(receiver) as base, aiohttp.ClientSession() as session:
        await Sender(session, base, secret).send([delivery(1), delivery(3)])

    assert receiver.stats().gaps_detected == 1
    assert receiver.recoveries_outstanding == 0
    assert fake.requests == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"api_url": "ftp://api.example"},
        {"api_url": "http://api.example", "grace_s": -1},
        {"api_url": "http://api.example", "attempts": 0},
    ],
)
def test_recovery_options_refuse_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        RecoveryOptions(**kwargs)


# --- the timestamp tolerance --------------------------------------------------------------------


@pytest.fixture
def secret_free_port() -> int:
    from portability.broker.embedded import free_port

    return free_port()


@pytest.mark.parametrize(("age_s", "status"), [(-50, 401), (-25, 204), (25, 204), (50, 401)])
async def test_the_timestamp_tolerance_is_configurable(age_s: float, status: int) -> None:
    secret = generate_secret()
    receiver = ReceivingApp(tolerance_s=30)
    receiver.add_app(APP_ID, secret)
    async with run_receiver(receiver) as url, aiohttp.ClientSession() as session:
        answer, _, body = await Sender(session, url, secret).send(
            [delivery(1)], now=time.time() - age_s
        )

    assert answer == status
    stats = receiver.stats()
    if status == 401:
        assert body["error"] == "verification_failed"
        assert ("too old" if age_s > 0 else "too new") in body["detail"]
        assert "tolerance of 30 s" in body["detail"]
        assert (stats.stale_timestamps, stats.verification_failures) == (1, 1)
    else:
        assert (stats.stale_timestamps, stats.deltas_received) == (0, 1)


async def test_the_default_tolerance_is_five_minutes() -> None:
    secret = generate_secret()
    receiver = ReceivingApp()
    receiver.add_app(APP_ID, secret)
    async with run_receiver(receiver) as url, aiohttp.ClientSession() as session:
        sender = Sender(session, url, secret)
        fresh, _, _ = await sender.send([delivery(1)], now=time.time() - 290)
        stale, _, _ = await sender.send([delivery(2)], now=time.time() - 310)

    assert (fresh, stale) == (204, 401)
    assert receiver.stats().stale_timestamps == 1


@pytest.mark.parametrize("tolerance_s", [0, -1, 301])
def test_a_tolerance_beyond_the_standard_is_refused(tolerance_s: float) -> None:
    with pytest.raises(ValueError, match="tolerance_s"):
        ReceivingApp(tolerance_s=tolerance_s)
