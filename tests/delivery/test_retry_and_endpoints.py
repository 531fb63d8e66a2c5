"""The retry schedule, parked records' headers, and the per-endpoint circuit breaker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from portability.delivery.endpoints import CircuitState, Endpoint, Endpoints
from portability.delivery.parking import Attempt, ParkingTicket
from portability.delivery.retry_schedule import RetrySchedule
from portability.delivery.sender import Outcome
from portability.settings import Settings

FAIL = Outcome(False, 503, "HTTP 503", retriable=True)
OK = Outcome(True, 204, "delivered", retriable=False)
GONE = Outcome(False, 410, "endpoint gone", retriable=False, endpoint_gone=True)


def test_default_schedule_is_the_documented_one() -> None:
    schedule = RetrySchedule(Settings().delivery_retry_schedule_s, jitter=0.0)

    waits = [schedule.next_wait(failures) for failures in range(9)]

    assert waits == [0, 5, 300, 1800, 7200, 18000, 36000, 36000, None]
    assert schedule.attempts == 8


def test_jitter_stays_within_its_fraction_and_varies() -> None:
    schedule = RetrySchedule([0, 100.0], jitter=0.2)

    waits = {schedule.next_wait(1) for _ in range(200)}

    assert all(w is not None and 80.0 <= w <= 120.0 for w in waits)
    assert len(waits) > 100


def test_retry_after_longer_than_the_schedule_wins() -> None:
    schedule = RetrySchedule([0, 5.0, 300.0], jitter=0.0)

    assert schedule.next_wait(1, retry_after_s=60.0) == 60.0
    assert schedule.next_wait(1, retry_after_s=1.0) == 5.0  # the schedule's own wait is longer
    assert schedule.next_wait(3, retry_after_s=1.0) is None  # exhausted whatever it asks


def test_negative_waits_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        Settings(delivery_retry_schedule_s=[0, -1])


def test_parking_ticket_round_trips_through_headers() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    ticket = ParkingTicket(
        "notification",
        3,
        1_800_000_000.5,
        (Attempt(at, 503, "HTTP 503"), Attempt(at, None, "timeout")),
    )

    assert ParkingTicket.from_headers(ticket.headers()) == ticket


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("retry.kind", b"archive")],
        [("retry.kind", b"delivery"), ("retry.failures", b"x")],
        [("retry.kind", b"delivery"), ("retry.history", b"{}")],
    ],
)
def test_malformed_parking_headers_are_refused(headers: list[tuple[str, bytes]]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        ParkingTicket.from_headers(headers)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def endpoints(clock: Clock) -> Endpoints:
    settings = Settings(
        delivery_circuit_failures=3, delivery_circuit_open_s=10.0, delivery_disable_after_s=3600.0
    )
    return Endpoints(settings, clock=clock)


def state_of(endpoint: Endpoint) -> CircuitState:
    """The state read afresh: mypy keeps an earlier ``assert ... is`` narrowing of
    ``endpoint.state`` across the calls that change it."""
    return endpoint.state


async def test_circuit_opens_after_consecutive_failures_and_one_probe_closes_it(
    endpoints: Endpoints, clock: Clock
) -> None:
    endpoint = endpoints.get("app-1", "https://a.example/hook")
    for _ in range(2):
        endpoints.record(endpoint, FAIL)
    assert endpoints.wait_s(endpoint) == 0.0  # two failures: still closed

    endpoints.record(endpoint, FAIL)

    assert endpoint.state is CircuitState.OPEN
    assert endpoints.wait_s(endpoint) == pytest.approx(10.0)
    clock.now += 10.0
    assert endpoints.wait_s(endpoint) == 0.0  # this caller is the probe
    assert endpoints.wait_s(endpoint) > 0  # everyone else waits for its verdict
    endpoints.record(endpoint, OK)
    assert state_of(endpoint) is CircuitState.CLOSED
    assert endpoints.wait_s(endpoint) == 0.0


async def test_failed_probe_opens_the_circuit_for_longer(
    endpoints: Endpoints, clock: Clock
) -> None:
    endpoint = endpoints.get("app-1", "https://a.example/hook")
    for _ in range(3):
        endpoints.record(endpoint, FAIL)
    clock.now += 10.0
    assert endpoints.wait_s(endpoint) == 0.0

    endpoints.record(endpoint, FAIL)

    assert endpoint.state is CircuitState.OPEN
    assert endpoint.open_for_s == 20.0


async def test_gone_disables_until_the_url_changes(endpoints: Endpoints) -> None:
    disabled = []
    endpoints.on_disabled.append(lambda e: disabled.append(e.app_id))
    endpoint = endpoints.get("app-1", "https://a.example/hook")

    endpoints.record(endpoint, GONE)

    assert endpoint.disabled
    assert "410" in (endpoint.disabled_reason or "")
    assert endpoints.wait_s(endpoint) == float("inf")
    assert disabled == ["app-1"]
    assert endpoints.get("app-1", "https://a.example/hook") is endpoint
    fresh = endpoints.get("app-1", "https://a.example/new-hook")
    assert not fresh.disabled
    assert endpoint.changed.is_set()  # lanes waiting on the old endpoint wake up


async def test_a_url_the_rules_refuse_disables_until_a_new_one(endpoints: Endpoints) -> None:
    """It can never succeed, yet the data is owed: parked for a new URL, not dead-lettered."""
    endpoint = endpoints.get("app-1", "http://10.0.0.5/hook")
    refused = Outcome(
        False,
        None,
        "webhook address 10.0.0.5 is a private address; refused",
        retriable=False,
        endpoint_refused=True,
    )

    endpoints.record(endpoint, refused)

    assert endpoint.disabled
    assert endpoint.disabled_reason == (
        "webhook address 10.0.0.5 is a private address; refused: the app must set a webhook "
        "URL the rules allow"
    )
    assert not endpoints.get("app-1", "https://hooks.example/hook").disabled


async def test_failing_too_long_disables(endpoints: Endpoints, clock: Clock) -> None:
    endpoint = endpoints.get("app-1", "https://a.example/hook")
    endpoints.record(endpoint, FAIL)
    clock.now += 3599.0
    endpoints.record(endpoint, FAIL)
    assert not endpoint.disabled

    clock.now += 1.0
    endpoints.record(endpoint, FAIL)

    assert endpoint.disabled
    assert "failing without a success for 3600 s" in (endpoint.disabled_reason or "")


async def test_endpoint_concurrency_is_bounded() -> None:
    endpoints = Endpoints(Settings(delivery_endpoint_concurrency=2))
    endpoint = endpoints.get("app-1", "https://a.example/hook")
    inside = 0
    most = 0

    async def request() -> None:
        nonlocal inside, most
        async with endpoint.slots:
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(request() for _ in range(10)))

    assert most == 2


async def test_rate_limit_spaces_requests_after_a_one_second_burst() -> None:
    clock = Clock()
    endpoints = Endpoints(Settings(delivery_endpoint_rate_per_s=5.0), clock=clock)
    endpoint = endpoints.get("app-1", "https://a.example/hook")
    for _ in range(5):  # the burst: one second's worth at once
        await asyncio.wait_for(endpoints.pace(endpoint), 1)

    waiting = asyncio.create_task(endpoints.pace(endpoint))
    for _ in range(3):  # let it run until it waits: the clock stands still, so no token
        await asyncio.sleep(0)
    assert not waiting.done()  # the sixth waits for a token
    clock.now += 0.2  # one token's worth of time at 5/s
    await asyncio.wait_for(waiting, 1)


async def test_no_rate_limit_by_default() -> None:
    endpoints = Endpoints(Settings())
    endpoint = endpoints.get("app-1", "https://a.example/hook")
    for _ in range(1000):
        await asyncio.wait_for(endpoints.pace(endpoint), 1)
