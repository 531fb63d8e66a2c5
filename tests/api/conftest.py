"""API fixtures: the app on a fresh consent store, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from api.api_helpers import (
    OPERATOR,
    OPERATOR_TOKEN,
    PLATFORM_TOKEN,
    RegisteredApp,
    TestClient,
    registration,
)
from fresh_stores import drop_store, fresh_store
from portability.api import DeliveryStatusBoard, create_app
from portability.consent import create_store_engine
from portability.settings import Settings


@pytest.fixture(params=["sqlite", "postgresql"])
def bare_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on an empty database (no schema)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'consents.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    created = create_store_engine(url)
    drop_store(created)
    yield created
    drop_store(created)
    created.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a store at the current schema with no rows (``fresh_stores``)."""
    yield from fresh_store(request, tmp_path)


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        api_platform_token=PLATFORM_TOKEN,
        api_operator_token=OPERATOR_TOKEN,
        secret_rotation_overlap_s=3600,
    )


@pytest.fixture
def board() -> DeliveryStatusBoard:
    return DeliveryStatusBoard()


@pytest.fixture
def client(
    engine: Engine, api_settings: Settings, board: DeliveryStatusBoard
) -> Iterator[TestClient]:
    """The app on one event loop for the test, as a server runs it (a client used outside a
    ``with`` block starts a thread and a loop for every request: a third of a test's time)."""
    with TestClient(create_app(api_settings, engine, status_board=board)) as opened:
        yield opened


@pytest.fixture
def register(client: TestClient) -> Callable[..., RegisteredApp]:
    """Register an app through the API; ``approve`` also has an operator approve it."""

    def _register(
        scopes: list[str] | None = None, *, approve: bool = True, name: str = "Archive Pal"
    ) -> RegisteredApp:
        response = client.post("/v1/apps", json=registration(scopes, name))
        assert response.status_code == 201, response.text
        body = response.json()
        app_id = body["app"]["app_id"]
        if approve:
            review = client.post(
                f"/v1/apps/{app_id}/review", headers=OPERATOR, json={"decision": "approve"}
            )
            assert review.status_code == 200, review.text
        return RegisteredApp(app_id, body["api_key"], body["signing_secret"])

    return _register
