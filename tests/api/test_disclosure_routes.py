"""``GET /v1/users/{user_id}/disclosures``: the platform's and operators' report, never an app's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from api.api_helpers import OPERATOR, PLATFORM, RegisteredApp, TestClient
from messages.disclosure_helpers import ARCHIVE, FEED, IDLE, USER, seed_history
from portability.consent import ConsentService
from portability.messages.disclosures import DisclosureReports

_URL = f"/v1/users/{USER}/disclosures"


@pytest.fixture
def seeded(engine: Engine) -> ConsentService:
    service = ConsentService(engine)
    seed_history(engine, service)
    return service


def _get(client: TestClient, headers: dict[str, str], **params: Any) -> Any:
    response = client.get(_URL, headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("headers", [PLATFORM, OPERATOR], ids=["platform", "operator"])
def test_platform_and_operators_get_the_report(client: TestClient, headers: dict[str, str]) -> None:
    body = _get(client, headers)

    assert body["user_id"] == USER
    assert [app["app_id"] for app in body["apps"]] == [ARCHIVE, FEED, IDLE]
    archive, feed, _idle = body["apps"]
    assert archive["records_by_category"] == {"profile": 1, "post": 3}
    assert archive["policy_versions"] == ["2026-01", "2026-02"]
    assert archive["first_delivered_at"] == "2026-03-01T10:00:00Z"
    assert feed["consents"][0]["removal_reason"] == "user_revoked"
    assert body["records"] is None


def test_the_document_is_the_one_the_cli_exports(
    client: TestClient, engine: Engine, seeded: ConsentService
) -> None:
    body = _get(client, OPERATOR, records="true", limit=3)

    exported = DisclosureReports(engine, seeded).report(USER, records=True, limit=3)

    body.pop("generated_at")
    assert body == exported.model_dump(mode="json", exclude={"generated_at"})


@pytest.mark.usefixtures("seeded")
def test_the_records_come_in_pages_to_the_end(client: TestClient) -> None:
    seen: list[tuple[str, str]] = []
    params: dict[str, Any] = {"records": "true", "limit": 2}
    for _ in range(10):  # seven records: four pages
        page = _get(client, PLATFORM, **params)["records"]
        seen += [(record["message_id"], record["record_id"]) for record in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]

    assert len(seen) == len(set(seen)) == 7
    assert seen[-1] == ("msg_feed", "a1")


def test_an_app_key_is_refused_even_for_its_own_users(
    client: TestClient, register: Callable[..., RegisteredApp]
) -> None:
    app = register()

    response = client.get(_URL, headers=app.headers, params={"records": "true"})

    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden"
    assert "platform or operator" in response.json()["message"]


def test_no_token_is_401(client: TestClient) -> None:
    assert client.get(_URL).status_code == 401


def test_an_unknown_user_gets_a_report_without_apps(client: TestClient) -> None:
    body = _get(client, PLATFORM, records="true")

    assert body["apps"] == []
    assert body["records"] == {"items": [], "limit": 100, "next_cursor": None}


def test_a_cursor_not_handed_out_is_400_as_in_the_message_log(client: TestClient) -> None:
    response = client.get(_URL, headers=OPERATOR, params={"records": "true", "cursor": "nope"})

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_cursor"
    assert "next_cursor of the previous page" in response.json()["message"]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"cursor": "d1.e30"}, "add records=true"),
        ({"records": "true", "limit": 0}, "limit"),
        ({"records": "true", "limit": 1001}, "limit"),
        ({"records": "maybe"}, "records"),
    ],
)
def test_misuse_is_a_422_saying_what_to_fix(
    client: TestClient, params: dict[str, Any], says: str
) -> None:
    response = client.get(_URL, headers=OPERATOR, params=params)

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert says in response.json()["message"]
