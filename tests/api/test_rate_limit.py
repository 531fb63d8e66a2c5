"""The rate limits: per app API key, and per client address for requests without a valid
token (registration, refused tokens); token buckets, 429 with Retry-After."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.api_helpers import OPERATOR, PLATFORM, TestClient, make_client, registration
from portability.api import RateLimiter, create_app
from portability.api.ratelimit import client_key
from portability.consent import ConsentService
from portability.settings import Settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp
    from uvicorn._types import ASGI3Application


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


# --- per client address: requests without a valid token --------------------------------------


def _client_from(
    engine: Engine, settings: Settings, limiter: RateLimiter, address: str
) -> TestClient:
    api = create_app(settings, engine, client_rate_limiter=limiter)
    return TestClient(api, client=(address, 50000))


def test_registration_is_limited_per_client_address(engine: Engine, api_settings: Settings) -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, clock=clock)
    api = create_app(api_settings, engine, client_rate_limiter=limiter)
    first = TestClient(api, client=("203.0.113.7", 50000))
    other = TestClient(api, client=("198.51.100.9", 50000))
    statuses = [
        first.post("/v1/apps", json=registration(name=f"A{i}")).status_code for i in range(3)
    ]
    assert statuses == [201] * 3

    limited = first.post("/v1/apps", json=registration(name="A3"))

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "20"  # 3 a minute: one token per 20 s
    assert limited.json()["error"] == "rate_limited"
    assert "203.0.113.7" in limited.json()["message"]
    # Another address has its own bucket, and a valid token is not charged to the address.
    assert other.post("/v1/apps", json=registration(name="B0")).status_code == 201
    assert first.get("/v1/consents", headers=OPERATOR).status_code == 200
    clock.now += 20
    assert first.post("/v1/apps", json=registration(name="A4")).status_code == 201


def test_refused_tokens_count_against_the_client_address(
    engine: Engine, api_settings: Settings
) -> None:
    limiter = RateLimiter(3, clock=FakeClock())
    client = _client_from(engine, api_settings, limiter, "192.0.2.44")
    attempts = [
        client.get("/v1/consents", headers={"Authorization": "Bearer pk_guess"}),
        client.get("/v1/consents"),
        client.get("/v1/consents", headers={"Authorization": "Bearer pk_guess_again"}),
        client.get("/v1/consents", headers={"Authorization": "Bearer pk_one_more"}),
    ]

    assert [response.status_code for response in attempts] == [401, 401, 401, 429]
    assert attempts[-1].headers["Retry-After"] == "20"
    # The address is limited for registration too (one bucket for all token-less requests).
    assert client.post("/v1/apps", json=registration()).status_code == 429
    assert client.get("/v1/consents", headers=PLATFORM).status_code == 200


def test_the_client_is_the_address_a_trusted_proxy_forwards(
    engine: Engine, api_settings: Settings
) -> None:
    """As ``portability api`` runs it: uvicorn's proxy headers, trusting the setting's list."""
    settings = api_settings.model_copy(update={"api_forwarded_allow_ips": "10.0.0.5"})
    api = create_app(settings, engine, client_rate_limiter=RateLimiter(1, clock=FakeClock()))
    # Both are ASGI 3 apps; uvicorn types the scope as TypedDicts, starlette as a mapping.
    middleware = ProxyHeadersMiddleware(
        cast("ASGI3Application", api), trusted_hosts=settings.api_forwarded_allow_ips
    )
    proxied = cast("ASGIApp", middleware)
    via_proxy = TestClient(proxied, client=("10.0.0.5", 50000))
    untrusted = TestClient(proxied, client=("10.0.0.6", 50000))

    def register(client: TestClient, forwarded_for: str, name: str) -> int:
        headers = {"X-Forwarded-For": forwarded_for}
        response = client.post("/v1/apps", json=registration(name=name), headers=headers)
        status: int = response.status_code  # the TestClient's httpx is untyped here
        return status

    assert register(via_proxy, "198.51.100.1", "P1") == 201
    assert register(via_proxy, "198.51.100.2", "P2") == 201  # another client behind the proxy
    assert register(via_proxy, "198.51.100.1", "P3") == 429
    # A header from an address that is not a trusted proxy is not believed.
    assert register(untrusted, "198.51.100.3", "U1") == 201
    assert register(untrusted, "198.51.100.4", "U2") == 429


def test_proxy_setting_names_a_malformed_address() -> None:
    with pytest.raises(ValidationError, match=r"'10\.0\.0\.300' is not an address or network"):
        Settings(api_forwarded_allow_ips="10.0.0.5, 10.0.0.300")
    assert Settings(api_forwarded_allow_ips="*").api_forwarded_allow_ips == "*"
    assert Settings(api_forwarded_allow_ips="10.0.0.0/8,::1").api_forwarded_allow_ips


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # same /64: same subscriber
        ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4 on a dual-stack socket
        ("testclient", "testclient"),
        (None, "unknown"),
    ],
)
def test_client_key(host: str | None, key: str) -> None:
    assert client_key(host) == key


def test_the_buckets_kept_are_bounded_and_spent_ones_kept_first() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock, max_keys=100)
    limiter.acquire("hot")
    for index in range(99):
        limiter.acquire(f"old-{index}")
    clock.now += 120  # the old buckets refill; "hot" is spent again
    limiter.acquire("hot")
    limiter.acquire("hot")

    limiter.acquire("new")  # the 101st key: room is made

    # The refilled buckets went (a new one is the same); the spent one stayed: dropping it
    # would have handed "hot" a full bucket.
    assert limiter.tracked() == 2
    assert limiter.acquire("hot") > 0
    for index in range(1000):
        limiter.acquire(f"burst-{index}")
    assert limiter.tracked() <= 100
