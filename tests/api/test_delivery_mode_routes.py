"""Delivery modes through the API: registering a poll app, switching, and the misuse of it.

The feed itself (which needs Kafka) is tested in test_feed_routes.py; here, without Kafka, a
poll app's feed is 503 and a webhook app's 409.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.api_helpers import OPERATOR, PLATFORM, RegisteredApp, TestClient, registration


def poll_registration(**overrides: Any) -> dict[str, Any]:
    body = registration() | {"delivery_mode": "poll"}
    del body["webhook_url"]
    return body | overrides


def test_a_poll_app_registers_without_a_webhook_url(client: TestClient) -> None:
    response = client.post("/v1/apps", json=poll_registration())

    assert response.status_code == 201, response.text
    app = response.json()["app"]
    assert (app["delivery_mode"], app["webhook_url"]) == ("poll", "")
    shown = client.get(f"/v1/apps/{app['app_id']}", headers=OPERATOR).json()
    assert shown["delivery_mode"] == "poll"


def test_a_webhook_app_without_a_url_is_told_what_to_send(client: TestClient) -> None:
    body = registration()
    del body["webhook_url"]

    response = client.post("/v1/apps", json=body)

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert "delivery_mode poll" in response.json()["message"]


def test_an_unknown_delivery_mode_is_refused(client: TestClient) -> None:
    response = client.post("/v1/apps", json=poll_registration(delivery_mode="push"))

    assert response.status_code == 422
    assert "delivery_mode" in response.json()["message"]


def test_an_app_switches_to_poll_and_back(
    client: TestClient, register: Callable[..., RegisteredApp]
) -> None:
    app = register()
    path = f"/v1/apps/{app.app_id}/delivery-mode"

    polled = client.put(path, headers=app.headers, json={"delivery_mode": "poll"})
    assert polled.status_code == 200, polled.text
    assert (polled.json()["delivery_mode"], polled.json()["webhook_url"]) == (
        "poll",
        "https://archivepal.example/hooks",
    )

    back = client.put(
        path,
        headers=OPERATOR,
        json={"delivery_mode": "webhook", "webhook_url": "https://archivepal.example/v2"},
    )
    assert back.status_code == 200, back.text
    assert (back.json()["delivery_mode"], back.json()["webhook_url"]) == (
        "webhook",
        "https://archivepal.example/v2",
    )
    # The same switch again changes nothing and is still a 200.
    again = client.put(path, headers=app.headers, json={"delivery_mode": "webhook"})
    assert again.status_code == 200
    assert again.json() == back.json()


def test_a_poll_app_without_a_url_cannot_switch_to_webhooks_without_one(
    client: TestClient,
) -> None:
    created = client.post("/v1/apps", json=poll_registration()).json()
    headers = {"Authorization": f"Bearer {created['api_key']}"}
    path = f"/v1/apps/{created['app']['app_id']}/delivery-mode"

    response = client.put(path, headers=headers, json={"delivery_mode": "webhook"})

    assert response.status_code == 422
    assert "webhook_url is required" in response.json()["message"]
    bad_url = client.put(
        path, headers=headers, json={"delivery_mode": "webhook", "webhook_url": "ftp://x.example"}
    )
    assert bad_url.status_code == 422


def test_switching_another_apps_mode_is_not_found_and_the_platform_may_not(
    client: TestClient, register: Callable[..., RegisteredApp]
) -> None:
    mine, other = register(name="Mine"), register(name="Other")
    path = f"/v1/apps/{other.app_id}/delivery-mode"

    assert client.put(path, headers=mine.headers, json={"delivery_mode": "poll"}).status_code == 404
    assert client.put(path, headers=PLATFORM, json={"delivery_mode": "poll"}).status_code == 403
    missing = client.put(path, headers=mine.headers, json={})
    assert missing.status_code in (404, 422)  # the app check or the body check, never a 5xx
    bad = client.put(
        f"/v1/apps/{mine.app_id}/delivery-mode", headers=mine.headers, json={"mode": "poll"}
    )
    assert bad.status_code == 422


def test_the_feed_of_a_webhook_app_says_to_switch_and_a_poll_apps_needs_kafka(
    client: TestClient, register: Callable[..., RegisteredApp]
) -> None:
    app = register()

    refused = client.get(f"/v1/apps/{app.app_id}/feed", headers=app.headers)
    assert refused.status_code == 409
    assert refused.json()["error"] == "not_poll_mode"
    assert "delivery-mode" in refused.json()["message"]

    client.put(
        f"/v1/apps/{app.app_id}/delivery-mode", headers=app.headers, json={"delivery_mode": "poll"}
    )
    unavailable = client.get(f"/v1/apps/{app.app_id}/feed?wait=0", headers=app.headers)
    assert unavailable.status_code == 503
    assert "Kafka" in unavailable.json()["message"]
