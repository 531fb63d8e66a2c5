"""Request bodies are strict: a value of the wrong JSON type is refused (422), never coerced,
and the message says what to send instead."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from api.api_helpers import OPERATOR, PLATFORM, RegisteredApp, TestClient, grant_body, registration

Register = Callable[..., RegisteredApp]


def _refused(response: Any) -> str:
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    message: str = response.json()["message"]
    return message


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        (
            {"initial_snapshot": "true"},
            ["initial_snapshot", "true or false, without quotes", '"true"'],
        ),
        ({"initial_snapshot": 1}, ["initial_snapshot", "true or false", "not 1"]),
        ({"user_id": 42}, ["user_id", "JSON string", "not 42"]),
        ({"expires_at": 1900000000}, ["expires_at", "ISO 8601", "2026-11-23T09:00:00Z"]),
        ({"expires_at": "1900000000"}, ["expires_at", "ISO 8601"]),  # not a Unix time either
        ({"expires_at": "2030-01-01T00:00:00"}, ["expires_at", "timezone"]),
        ({"categories": "post"}, ["categories", '["post", "profile"], or "all"', 'got "post"']),
        ({"categories": ["posts"]}, ["categories", "array of categories"]),
        ({"mode": "forever"}, ["mode", "'one_time' or 'ongoing'"]),
        ({"user_regoin": "DE"}, ["user_regoin", "not a field of this request"]),
    ],
)
def test_a_grant_with_a_mistyped_value_says_what_to_send(
    client: TestClient, register: Register, override: dict[str, Any], fragments: list[str]
) -> None:
    app = register()

    message = _refused(
        client.post("/v1/consents", headers=PLATFORM, json=grant_body(app.app_id, **override))
    )

    for fragment in fragments:
        assert fragment in message


def test_nothing_was_stored_for_a_refused_body(client: TestClient, register: Register) -> None:
    app = register()
    client.post("/v1/consents", headers=PLATFORM, json=grant_body(app.app_id, initial_snapshot=1))

    assert client.get("/v1/consents", headers=PLATFORM).json()["consents"] == []


def test_the_right_types_are_taken(client: TestClient, register: Register) -> None:
    app = register()
    body = grant_body(app.app_id, initial_snapshot=False, expires_at="2030-01-01T10:00:00+02:00")

    granted = client.post("/v1/consents", headers=PLATFORM, json=body)

    assert granted.status_code == 201, granted.text
    assert granted.json()["expires_at"] == "2030-01-01T08:00:00Z"
    assert granted.json()["snapshot_epoch"] == 0  # false, as sent


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ({"from_sequence": "3"}, ["from_sequence", "JSON number without quotes", '"3"']),
        ({"from_sequence": 3.0}, ["from_sequence", "JSON number", "not 3.0"]),
        ({"from_sequence": True}, ["from_sequence", "not true"]),
        ({"since": 1764000000}, ["since", "ISO 8601"]),
    ],
)
def test_a_replay_with_a_mistyped_value_says_what_to_send(
    client: TestClient, register: Register, body: dict[str, Any], fragments: list[str]
) -> None:
    app = register()
    consent = client.post("/v1/consents", headers=PLATFORM, json=grant_body(app.app_id)).json()

    response = client.post(
        f"/v1/consents/{consent['consent_id']}/replay", headers=app.headers, json=body
    )

    message = _refused(response)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("path", "body", "fragments"),
    [
        (
            "/v1/apps",
            registration() | {"requested_scopes": "post"},
            ["requested_scopes", "JSON array"],
        ),
        ("/v1/apps", registration() | {"name": 7}, ["name", "JSON string", "not 7"]),
        ("/v1/apps", [registration()], ["body", "must be a JSON object"]),
    ],
)
def test_a_registration_with_a_mistyped_value_says_what_to_send(
    client: TestClient, path: str, body: Any, fragments: list[str]
) -> None:
    message = _refused(client.post(path, json=body))

    for fragment in fragments:
        assert fragment in message


def test_a_review_with_a_mistyped_value_says_what_to_send(
    client: TestClient, register: Register
) -> None:
    app = register(approve=False)

    response = client.post(
        f"/v1/apps/{app.app_id}/review",
        headers=OPERATOR,
        json={"decision": "approve", "approved_scopes": "post"},
    )

    assert "approved_scopes: must be a JSON array" in _refused(response)


def test_a_missing_body_says_to_send_json(client: TestClient) -> None:
    response = client.post("/v1/apps")

    assert "send a JSON object" in _refused(response)


@pytest.mark.parametrize(
    ("region", "hint"), [("UK", "use 'GB' for the United Kingdom"), ("el", "use 'GR' for Greece")]
)
def test_a_common_non_iso_region_gets_the_iso_code(
    client: TestClient, register: Register, region: str, hint: str
) -> None:
    app = register()

    response = client.post(
        "/v1/consents", headers=PLATFORM, json=grant_body(app.app_id, user_region=region)
    )

    assert hint in _refused(response)
    served = client.post(
        "/v1/consents", headers=PLATFORM, json=grant_body(app.app_id, user_region="GB")
    )
    assert served.status_code == 201, served.text
