"""Property-based run against the OpenAPI document: no 5xx, every response as documented."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy.engine import Engine

from api.api_helpers import OPERATOR, PLATFORM
from portability.api import RateLimiter, create_app
from portability.consent import ConsentService, create_store_engine, init_schema
from portability.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

# One worker runs the whole module (pytest -n): its store and schema are set up once, not
# again each time the worker comes back to the module.
pytestmark = pytest.mark.xdist_group("test_schemathesis")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    ("POST", "/v1/apps"),
    ("GET", "/v1/apps"),
    ("GET", "/v1/apps/{app_id}"),
    ("POST", "/v1/apps/{app_id}/review"),
    ("POST", "/v1/apps/{app_id}/secret/rotate"),
    ("PUT", "/v1/apps/{app_id}/webhook"),
    ("PUT", "/v1/apps/{app_id}/delivery-mode"),
    ("GET", "/v1/apps/{app_id}/feed"),
    ("GET", "/v1/apps/{app_id}/messages"),
    ("GET", "/v1/apps/{app_id}/messages/{message_id}"),
    ("POST", "/v1/apps/{app_id}/messages/{message_id}/resend"),
    ("POST", "/v1/apps/{app_id}/test-event"),
    ("POST", "/v1/consents"),
    ("GET", "/v1/consents"),
    ("GET", "/v1/consents/{consent_id}"),
    ("POST", "/v1/consents/{consent_id}/revoke"),
    ("GET", "/v1/consents/{consent_id}/status"),
    ("GET", "/v1/consents/{consent_id}/ledger"),
    ("POST", "/v1/users/{user_id}/account-deleted"),
    ("GET", "/v1/users/{user_id}/disclosures"),
    ("POST", "/v1/consents/{consent_id}/transfers"),
    ("POST", "/v1/consents/{consent_id}/snapshots"),
    ("GET", "/v1/consents/{consent_id}/transfers"),
    ("GET", "/v1/transfers/{transfer_id}"),
    ("POST", "/v1/transfers/{transfer_id}/cancel"),
    ("GET", "/v1/transfers/{transfer_id}/archive"),
    ("POST", "/v1/consents/{consent_id}/replay"),
    ("GET", "/v1/consents/{consent_id}/replays/{replay_id}"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One SQLite store for the module, with an approved app and a consent to find."""
    path: Path = tmp_path_factory.mktemp("schemathesis") / "consents.db"
    engine = create_store_engine(f"sqlite:///{path}")
    init_schema(engine)
    service = ConsentService(engine)
    service.register_app("Seed", "https://seed.example/h", "app_seed")
    service.grant("u1", "app_seed", ["post"], user_region="DE")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def schema(store: Engine, tmp_path_factory: pytest.TempPathFactory) -> Any:
    api_settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        api_platform_token=PLATFORM["Authorization"].removeprefix("Bearer "),
        api_operator_token=OPERATOR["Authorization"].removeprefix("Bearer "),
    )
    app = create_app(
        api_settings,
        store,
        rate_limiter=RateLimiter(1_000_000),
        client_rate_limiter=RateLimiter(1_000_000),
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_the_document_lists_every_operation(schema: Any) -> None:
    labels = {
        (result.ok().method.upper(), result.ok().path) for result in schema.get_all_operations()
    }
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_server_errors_and_responses_match_the_document(
    schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = schema[path][method]
    headers = PLATFORM if path == "/v1/consents" and method == "POST" else OPERATOR
    calls: list[int] = []

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        calls.append(response.status_code)

    run()
    assert len(calls) >= 5  # the run really exercised the operation
    assert all(status < 500 for status in calls), calls
