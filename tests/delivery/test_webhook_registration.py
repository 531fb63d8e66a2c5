"""Webhook URL rules at registration: the service and the API refuse what the worker would."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from portability.api import create_app
from portability.consent import ConsentService, create_store_engine, init_schema
from portability.consent.errors import InvalidRequestError
from portability.sealing import SecretsKey
from portability.settings import Settings
from portability.webhooks.egress import EgressPolicy

with warnings.catch_warnings():
    # starlette asks for httpx2 instead of httpx; the TestClient works the same.
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient

PRODUCTION = EgressPolicy(require_https=True, allow_loopback=False)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    created = create_store_engine(f"sqlite:///{tmp_path / 'consents.db'}")
    init_schema(created)
    yield created
    created.dispose()


def test_service_refuses_http_outside_development(engine: Engine) -> None:
    service = ConsentService(engine, webhook_policy=PRODUCTION)
    with pytest.raises(InvalidRequestError, match="must use https") as refused:
        service.register_app("Recipient", "http://recipient.example/hooks")
    assert "PORTABILITY_DEVELOPMENT_MODE" in str(refused.value)
    with pytest.raises(InvalidRequestError, match="must use https"):
        service.apply_for_app("Recipient", "http://recipient.example/hooks", "Backups", ["post"])
    assert service.list_apps() == []
    app = service.register_app("Recipient", "https://recipient.example/hooks")
    assert app.webhook_url == "https://recipient.example/hooks"


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.5/hooks",
        "https://[::ffff:192.168.0.1]/hooks",
        "https://127.0.0.1:8443/hooks",
        "https://metadata.google.internal/computeMetadata/v1/",
    ],
)
def test_service_refuses_literal_internal_addresses(engine: Engine, url: str) -> None:
    service = ConsentService(engine, webhook_policy=PRODUCTION)
    with pytest.raises(
        InvalidRequestError, match=r"; refused.*; register a public https endpoint$"
    ):
        service.register_app("Recipient", url)


def test_default_service_keeps_development_rules(engine: Engine) -> None:
    """Existing callers (demo, tests) register local http receivers with no configuration."""
    service = ConsentService(engine)
    assert service.register_app("Local", "http://127.0.0.1:9/hooks").app_id
    with pytest.raises(InvalidRequestError, match="a cloud metadata service address"):
        service.register_app("Metadata", "http://169.254.169.254/")


def test_malformed_url_is_a_clear_error(engine: Engine) -> None:
    service = ConsentService(engine)
    with pytest.raises(InvalidRequestError, match="must be an http"):
        service.register_app("Broken", "https://[::1/hooks")


def _client(engine: Engine, tmp_path: Path, **settings: object) -> TestClient:
    # Outside development mode the API needs the key sealing signing secrets: any will do.
    key = SecretStr(SecretsKey.generate().text())
    configured = Settings(data_dir=tmp_path, secrets_key=key, **settings)  # type: ignore[arg-type]
    return TestClient(create_app(configured, engine))


def _registration(url: str) -> dict[str, object]:
    return {
        "name": "Archive Pal",
        "use_case": "Keeps a private backup of the user's posts.",
        "webhook_url": url,
        "requested_scopes": ["post"],
    }


def test_api_refuses_http_outside_development(engine: Engine, tmp_path: Path) -> None:
    client = _client(engine, tmp_path, development_mode=False)
    response = client.post("/v1/apps", json=_registration("http://archivepal.example/hooks"))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert "must use https" in body["message"]
    private = client.post("/v1/apps", json=_registration("https://192.168.1.20/hooks"))
    assert private.status_code == 422
    assert "a private address; refused" in private.json()["message"]
    accepted = client.post("/v1/apps", json=_registration("https://archivepal.example/hooks"))
    assert accepted.status_code == 201, accepted.text


def test_api_in_development_accepts_local_http(engine: Engine, tmp_path: Path) -> None:
    client = _client(engine, tmp_path)
    response = client.post("/v1/apps", json=_registration("http://127.0.0.1:8099/hooks"))
    assert response.status_code == 201, response.text


def test_api_private_flag_lets_on_premises_receivers_register(
    engine: Engine, tmp_path: Path
) -> None:
    client = _client(engine, tmp_path, development_mode=False, webhook_allow_private=True)
    response = client.post("/v1/apps", json=_registration("https://10.1.2.3/hooks"))
    assert response.status_code == 201, response.text
    metadata = client.post("/v1/apps", json=_registration("https://169.254.169.254/"))
    assert metadata.status_code == 422
