"""The consent store goes away and comes back: the API says so, then serves again.

On a PostgreSQL server of the test's own (see ``private_postgres``), stopped at once
(connections cut) while the API runs: every call that needs the store answers 503
``unavailable`` with ``Retry-After``, none 500; once the server is back, the next calls succeed
on new connections (the engine checks a pooled connection before use), and what was stored
before the outage is still there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy.engine import Engine

from api.api_helpers import OPERATOR, PLATFORM, TestClient, grant_body, registration
from portability.api import DeliveryStatusBoard, create_app
from portability.consent import create_store_engine, init_schema
from portability.settings import Settings
from private_postgres import PrivatePostgres, private_postgres_or_skip

_BACK_WITHIN_S = 30.0


@pytest.fixture
def server() -> Iterator[PrivatePostgres]:
    with private_postgres_or_skip() as started:
        yield started


@pytest.fixture
def store(server: PrivatePostgres) -> Iterator[Engine]:
    engine = create_store_engine(server.url)
    init_schema(engine)
    yield engine
    engine.dispose()


def _until_served(call: Callable[[], httpx.Response], what: str) -> httpx.Response:
    """Call again (as a client honouring Retry-After would, but sooner) until not 503."""
    deadline = time.monotonic() + _BACK_WITHIN_S
    while True:
        response = call()
        if response.status_code != 503:
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still 503 after {_BACK_WITHIN_S:g} s")
        time.sleep(0.2)


def test_the_api_answers_503_with_retry_after_while_the_store_is_down_then_serves_again(
    server: PrivatePostgres, store: Engine, api_settings: Settings
) -> None:
    client = TestClient(create_app(api_settings, store, status_board=DeliveryStatusBoard()))
    registered = client.post("/v1/apps", json=registration())
    assert registered.status_code == 201, registered.text
    app_id = registered.json()["app"]["app_id"]
    approved = client.post(
        f"/v1/apps/{app_id}/review", headers=OPERATOR, json={"decision": "approve"}
    )
    assert approved.status_code == 200, approved.text

    server.stop()
    during = [
        client.post("/v1/apps", json=registration(name="Second Pal")),
        client.get(f"/v1/apps/{app_id}", headers=OPERATOR),
        client.post("/v1/consents", headers=PLATFORM, json=grant_body(app_id)),
    ]
    for response in during:
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "unavailable"
        assert int(response.headers["Retry-After"]) > 0
        assert "retry in" in response.json()["message"]

    server.start()
    back = _until_served(lambda: client.get(f"/v1/apps/{app_id}", headers=OPERATOR), "app")
    assert back.status_code == 200, back.text
    assert back.json()["review_status"] == "approved"
    second = client.post("/v1/apps", json=registration(name="Second Pal"))
    assert second.status_code == 201, second.text
