"""``GET /v1/apps``: operators list apps, and ``?review_status=pending`` is the review queue."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from api.api_helpers import OPERATOR, PLATFORM, RegisteredApp, TestClient

Register = Callable[..., RegisteredApp]


@pytest.fixture
def three_states(client: TestClient, register: Register) -> dict[str, str]:
    """An approved, a rejected and two pending apps; their ids by name."""
    approved = register(name="Approved")
    rejected = register(name="Rejected", approve=False)
    review = client.post(
        f"/v1/apps/{rejected.app_id}/review",
        headers=OPERATOR,
        json={"decision": "reject", "reason": "The use case needs no direct messages."},
    )
    assert review.status_code == 200, review.text
    waiting = [register(name=f"Waiting {n}", approve=False) for n in (1, 2)]
    return {
        "Approved": approved.app_id,
        "Rejected": rejected.app_id,
        "Waiting 1": waiting[0].app_id,
        "Waiting 2": waiting[1].app_id,
    }


def _names(client: TestClient, query: str) -> list[str]:
    response = client.get(f"/v1/apps{query}", headers=OPERATOR)
    assert response.status_code == 200, response.text
    return [app["name"] for app in response.json()["apps"]]


def test_operators_list_apps_by_review_state(
    client: TestClient, three_states: dict[str, str]
) -> None:
    assert _names(client, "?review_status=pending") == ["Waiting 1", "Waiting 2"]
    assert _names(client, "?review_status=approved") == ["Approved"]
    assert _names(client, "?review_status=rejected") == ["Rejected"]
    assert _names(client, "") == ["Approved", "Rejected", "Waiting 1", "Waiting 2"]
    # The spelling is the same filter.
    assert _names(client, "?review_state=pending") == ["Waiting 1", "Waiting 2"]
    assert _names(client, "?review_status=pending&review_state=pending") == [
        "Waiting 1",
        "Waiting 2",
    ]


def test_a_listed_app_shows_what_the_review_needs(
    client: TestClient, three_states: dict[str, str]
) -> None:
    [waiting] = [
        app
        for app in client.get("/v1/apps?review_status=pending", headers=OPERATOR).json()["apps"]
        if app["app_id"] == three_states["Waiting 1"]
    ]

    assert waiting["use_case"]
    assert sorted(waiting["requested_scopes"]) == ["post", "profile"]
    assert waiting["review_status"] == "pending"
    assert "signing_secret" not in waiting
    assert "api_key" not in waiting


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("?review_status=waiting", "'pending', 'approved' or 'rejected'"),
        ("?review_status=pending&review_state=approved", "disagree"),
    ],
)
def test_a_bad_filter_is_a_422_that_says_why(
    client: TestClient, three_states: dict[str, str], query: str, fragment: str
) -> None:
    response = client.get(f"/v1/apps{query}", headers=OPERATOR)

    assert response.status_code == 422
    assert fragment in response.json()["message"]


def test_only_operators_list_apps(
    client: TestClient, register: Register, three_states: dict[str, str]
) -> None:
    app = register(name="Curious")

    assert client.get("/v1/apps", headers=PLATFORM).status_code == 403
    assert client.get("/v1/apps", headers=app.headers).status_code == 403
    assert client.get("/v1/apps").status_code == 401
