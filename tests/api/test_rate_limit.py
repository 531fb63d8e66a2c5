"""The per-app rate limit: a token bucket, 429 with Retry-After."""

from __future__ import annotations

from api_helpers import OPERATOR, PLATFORM, make_client
from sqlalchemy.engine import Engine

from portability.api import RateLimiter
from portability.consent import ConsentService
from portability.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_bursts_then_refills() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, clock=clock)  # one a second, bursts of 60
    assert all(limiter.acquire("a") == 0 for _ in range(60))
    wait = limiter.acquire("a")
    assert 0.99 < wait <= 1.0
    assert limiter.acquire("b") == 0  # per key
    clock.now += 1.0
    assert limiter.acquire("a") == 0
    assert limiter.acquire("a") > 0
    assert RateLimiter.retry_after(0.01) == "1"
    assert RateLimiter.retry_after(2.5) == "3"


def test_an_app_over_its_limit_gets_429_with_retry_after(
    engine: Engine, api_settings: Settings
) -> None:
    clock = FakeClock()
    client = make_client(engine, api_settings, RateLimiter(3, clock=clock))
    registered = client.post(
        "/v1/apps",
        json={
            "name": "Busy",
            "use_case": "Backs up posts.",
            "webhook_url": "https://busy.example/h",
            "requested_scopes": ["post"],
        },
    ).json()
    headers = {"Authorization": f"Bearer {registered['api_key']}"}
    path = f"/v1/apps/{registered['app']['app_id']}"
    assert [client.get(path, headers=headers).status_code for _ in range(3)] == [200] * 3

    limited = client.get(path, headers=headers)

    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert limited.headers["Retry-After"] == "20"  # 3 a minute: one token per 20 s
    # The platform and operators are not limited per app.
    assert client.get(path, headers=OPERATOR).status_code == 200
    assert client.get("/v1/consents", headers=PLATFORM).status_code == 200
    clock.now += 20
    assert client.get(path, headers=headers).status_code == 200
    assert ConsentService(engine).get_app(registered["app"]["app_id"]).app_id
