"""Every route with every kind of caller: platform, own app, another app, operator, none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.api_helpers import OPERATOR, PLATFORM, RegisteredApp, grant_body, registration

OWN, OTHER, NONE, BAD = "own_app", "other_app", "none", "bad_token"
CALLERS = ("platform", "operator", OWN, OTHER, NONE, BAD)

# route -> expected status per caller. "other_app" is a second app acting on the first app's
# resources: it must get 404, as if they did not exist.
MATRIX: dict[str, dict[str, int]] = {
    "register_app": dict.fromkeys(CALLERS, 201),
    "get_app": {"platform": 200, "operator": 200, OWN: 200, OTHER: 404, NONE: 401, BAD: 401},
    "review_app": {"platform": 403, "operator": 200, OWN: 403, OTHER: 404, NONE: 401, BAD: 401},
    "rotate_secret": {
        "platform": 403,
        "operator": 200,
        OWN: 200,
        OTHER: 404,
        NONE: 401,
        BAD: 401,
    },
    "set_webhook": {
        "platform": 403,
        "operator": 200,
        OWN: 200,
        OTHER: 404,
        NONE: 401,
        BAD: 401,
    },
    "grant": {"platform": 201, "operator": 403, OWN: 403, OTHER: 403, NONE: 401, BAD: 401},
    "get_consent": {"platform": 200, "operator": 200, OWN: 200, OTHER: 404, NONE: 401, BAD: 401},
    "list_consents": {
        "platform": 200,
        "operator": 200,
        OWN: 200,
        OTHER: 200,
        NONE: 401,
        BAD: 401,
    },
    "revoke": {"platform": 200, "operator": 200, OWN: 200, OTHER: 404, NONE: 401, BAD: 401},
    "status": {"platform": 200, "operator": 200, OWN: 200, OTHER: 404, NONE: 401, BAD: 401},
    "account_deleted": {
        "platform": 200,
        "operator": 403,
        OWN: 403,
        OTHER: 403,
        NONE: 401,
        BAD: 401,
    },
    # Without Kafka (this client has none) a permitted replay request is 503.
    "replay": {"platform": 403, "operator": 503, OWN: 503, OTHER: 404, NONE: 401, BAD: 401},
    "get_replay": {"platform": 200, "operator": 200, OWN: 200, OTHER: 404, NONE: 401, BAD: 401},
}


def request_for(
    route: str, app_id: str, consent_id: str, replay_id: str = "rpl_0000000000000000"
) -> tuple[str, str, Any]:
    return {
        "register_app": ("POST", "/v1/apps", registration()),
        "get_app": ("GET", f"/v1/apps/{app_id}", None),
        "review_app": ("POST", f"/v1/apps/{app_id}/review", {"decision": "approve"}),
        "rotate_secret": ("POST", f"/v1/apps/{app_id}/secret/rotate", None),
        "set_webhook": (
            "PUT",
            f"/v1/apps/{app_id}/webhook",
            {"webhook_url": "https://new.example/hook"},
        ),
        # Another user: the same user's identical consent is already active (409).
        "grant": ("POST", "/v1/consents", grant_body(app_id, user_id="u00000043")),
        "get_consent": ("GET", f"/v1/consents/{consent_id}", None),
        "list_consents": ("GET", f"/v1/consents?app_id={app_id}", None),
        "revoke": ("POST", f"/v1/consents/{consent_id}/revoke", None),
        "status": ("GET", f"/v1/consents/{consent_id}/status", None),
        "account_deleted": ("POST", "/v1/users/u00000042/account-deleted", None),
        "replay": ("POST", f"/v1/consents/{consent_id}/replay", {"from_sequence": 1}),
        "get_replay": ("GET", f"/v1/consents/{consent_id}/replays/{replay_id}", None),
    }[route]


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", list(MATRIX))
def test_authorisation_matrix(
    client: TestClient,
    register: Callable[..., RegisteredApp],
    route: str,
    caller: str,
) -> None:
    owner, intruder = register(name="Owner"), register(name="Intruder")
    granted = client.post("/v1/consents", headers=PLATFORM, json=grant_body(owner.app_id))
    consent_id = granted.json()["consent_id"]
    headers = {
        "platform": PLATFORM,
        "operator": OPERATOR,
        OWN: owner.headers,
        OTHER: intruder.headers,
        NONE: {},
        BAD: {"Authorization": "Bearer pk_not-a-real-key"},
    }[caller]
    replays = client.app.state.context.replayer.store  # type: ignore[attr-defined]
    replay_id = replays.create(consent_id, "app", from_sequence=1).replay_id
    method, path, body = request_for(route, owner.app_id, consent_id, replay_id)

    response = client.request(method, path, json=body, headers=headers)

    assert response.status_code == MATRIX[route][caller], response.text
    if response.status_code >= 400:
        assert set(response.json()) == {"error", "message"}
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
    if route == "list_consents" and caller == OTHER:
        assert response.json()["consents"] == []


def test_another_apps_unknown_and_existing_ids_look_the_same(
    client: TestClient, register: Callable[..., RegisteredApp]
) -> None:
    owner, intruder = register(name="Owner"), register(name="Intruder")
    existing = client.get(f"/v1/apps/{owner.app_id}", headers=intruder.headers)
    missing = client.get("/v1/apps/app_000000000000", headers=intruder.headers)
    assert existing.status_code == missing.status_code == 404
    assert existing.json()["error"] == missing.json()["error"] == "not_found"
