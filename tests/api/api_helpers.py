"""Constants and helpers shared by the API tests."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from portability.api import RateLimiter, create_app
from portability.settings import Settings

with warnings.catch_warnings():
    # starlette asks for httpx2 instead of httpx; the TestClient works the same.
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    # Imported here, under the filter, by every API test: re-exported on purpose.
    from starlette.testclient import TestClient as TestClient

PLATFORM_TOKEN = "platform-token-for-tests"
OPERATOR_TOKEN = "operator-token-for-tests"
PLATFORM = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


@dataclass(frozen=True)
class RegisteredApp:
    app_id: str
    api_key: str
    signing_secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def registration(scopes: list[str] | None = None, name: str = "Archive Pal") -> dict[str, Any]:
    return {
        "name": name,
        "use_case": "Keeps a private backup of the user's posts.",
        "webhook_url": "https://archivepal.example/hooks",
        "requested_scopes": scopes or ["post", "profile"],
    }


def grant_body(app_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user_id": "u00000042",
        "user_region": "DE",
        "app_id": app_id,
        "categories": ["post"],
        "mode": "ongoing",
    }
    return body | overrides


def make_client(engine: Engine, settings: Settings, limiter: RateLimiter) -> TestClient:
    return TestClient(create_app(settings, engine, rate_limiter=limiter))
