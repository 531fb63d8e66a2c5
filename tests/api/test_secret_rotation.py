"""``POST /v1/apps/{id}/secret/rotate``: safe to repeat, bounded, and its body honoured.

On SQLite and PostgreSQL (the ``client`` fixture's store); the overlap is one hour.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from api.api_helpers import RegisteredApp

Register = Callable[..., RegisteredApp]


def test_rotating_twice_at_once_keeps_both_earlier_secrets_then_refuses(
    client: TestClient, register: Register
) -> None:
    app = register()
    first = client.post(f"/v1/apps/{app.app_id}/secret/rotate", headers=app.headers)
    second = client.post(f"/v1/apps/{app.app_id}/secret/rotate", headers=app.headers)
    assert (first.status_code, second.status_code) == (200, 200)
    assert len(second.json()["previous_secrets_expire_at"]) == 2

    third = client.post(f"/v1/apps/{app.app_id}/secret/rotate", headers=app.headers)

    assert third.status_code == 409, third.text
    assert third.json()["error"] == "too_many_secrets"
    assert "the oldest stops signing at" in third.json()["message"]
    assert 3500 < int(third.headers["Retry-After"]) <= 3601
    shown = client.get(f"/v1/apps/{app.app_id}", headers=app.headers).json()
    assert len(shown["previous_secrets_expire_at"]) == 2
    assert "whsec_" not in str(shown)  # shown once, at registration and rotation only


def test_the_idempotency_key_header_makes_a_repeat_change_nothing(
    client: TestClient, register: Register
) -> None:
    app = register()
    headers = {**app.headers, "Idempotency-Key": "rotate-1"}
    path = f"/v1/apps/{app.app_id}/secret/rotate"

    first = client.post(path, headers=headers)
    again = client.post(path, headers=headers)
    in_body = client.post(path, headers=app.headers, json={"idempotency_key": "rotate-1"})

    assert (first.status_code, again.status_code, in_body.status_code) == (200, 200, 200)
    assert first.json() == again.json() == in_body.json()
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(first.json()["previous_secrets_expire_at"]) == 1  # one rotation, not three


def test_the_body_is_read_not_ignored(client: TestClient, register: Register) -> None:
    app = register()
    path = f"/v1/apps/{app.app_id}/secret/rotate"

    unknown = client.post(path, headers=app.headers, json={"overlap_s": 0})
    differing = client.post(
        path, headers={**app.headers, "Idempotency-Key": "a"}, json={"idempotency_key": "b"}
    )
    empty = client.post(path, headers=app.headers, json={})

    assert unknown.status_code == 422, unknown.text
    assert "overlap_s" in unknown.json()["message"]
    assert differing.status_code == 422
    assert "differ" in differing.json()["message"]
    assert empty.status_code == 200
