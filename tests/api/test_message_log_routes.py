"""The message log's read routes, on SQLite and PostgreSQL: listing, filters, pages, one
message with its attempts, who may see what, and what a bad request is told.

Entries are stored as the log's writer stores them (``store_entries``); the routes that need
Kafka (resend, test event) are answered 503 by an API without it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from api.api_helpers import OPERATOR, PLATFORM, RegisteredApp, TestClient
from api.message_log_helpers import T0, log_entry
from portability.messages.storing import store_entries
from portability.wire.delivery_log import LoggedSource


@pytest.fixture
def apps(register: Callable[..., RegisteredApp]) -> tuple[RegisteredApp, RegisteredApp]:
    return register(name="Owner"), register(name="Other")


def _messages(client: TestClient, app: RegisteredApp, query: str = "", **kw: Any) -> Any:
    headers = kw.pop("headers", app.headers)
    response = client.get(f"/v1/apps/{app.app_id}/messages{query}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(body: Any) -> list[str]:
    return [message["message_id"] for message in body["messages"]]


def test_messages_are_listed_newest_first_with_their_summary(
    client: TestClient, engine: Engine, apps: tuple[RegisteredApp, RegisteredApp]
) -> None:
    owner, other = apps
    source = LoggedSource(topic="deliveries", partition=1, offset=7)
    store_entries(
        engine,
        [
            log_entry("msg_old", owner.app_id, attempted_at=T0, ok=False, sources=[source]),
            log_entry("msg_old", owner.app_id, attempted_at=T0 + timedelta(seconds=5), attempt=2),
            log_entry("msg_new", owner.app_id, attempted_at=T0 + timedelta(minutes=1), ok=False),
            log_entry("msg_theirs", other.app_id, attempted_at=T0 + timedelta(minutes=2)),
        ],
    )

    body = _messages(client, owner)

    assert _ids(body) == ["msg_new", "msg_old"]
    assert body["next_cursor"] is None
    old = body["messages"][1]
    assert (old["outcome"], old["attempts"], old["last_status"]) == ("delivered", 2, 204)
    assert old["sources"] == [{"topic": "deliveries", "partition": 1, "offset": 7}]
    assert old["delivered_at"].startswith("2026-12-01T12:00:05")
    new = body["messages"][0]
    assert (new["outcome"], new["last_status"], new["last_reason"]) == ("failing", 503, "HTTP 503")
    # An operator reads any app's log; the platform has none to read.
    assert _ids(_messages(client, other, headers=OPERATOR)) == ["msg_theirs"]
    response = client.get(f"/v1/apps/{owner.app_id}/messages", headers=PLATFORM)
    assert response.status_code == 403, response.text


def test_pages_follow_the_cursor_without_repeats_or_gaps(
    client: TestClient, engine: Engine, apps: tuple[RegisteredApp, RegisteredApp]
) -> None:
    owner, _ = apps
    # Pairs share a creation time: the id breaks the tie, and the cursor must too.
    entries = [
        log_entry(f"msg_{n:02d}", owner.app_id, attempted_at=T0 + timedelta(seconds=n // 2))
        for n in range(11)
    ]
    store_entries(engine, entries)
    expected = sorted(
        (e["message_id"] for e in entries),
        key=lambda m: (int(m[4:]) // 2, m),
        reverse=True,
    )

    seen: list[str] = []
    cursor = ""
    for _ in range(10):  # bounded: 11 messages in pages of 3 take 4
        body = _messages(client, owner, f"?limit=3{cursor}")
        assert len(body["messages"]) <= 3
        seen += _ids(body)
        if body["next_cursor"] is None:
            break
        cursor = f"&cursor={body['next_cursor']}"

    assert seen == expected
    assert len(_ids(_messages(client, owner))) == 11  # default limit 50


def test_filters(
    client: TestClient, engine: Engine, apps: tuple[RegisteredApp, RegisteredApp]
) -> None:
    owner, _ = apps
    store_entries(
        engine,
        [
            log_entry("msg_a", owner.app_id, consent_id="cns_a", attempted_at=T0),
            log_entry(
                "msg_b",
                owner.app_id,
                consent_id="cns_b",
                ok=False,
                attempted_at=T0 + timedelta(hours=1),
            ),
            log_entry(
                "msg_c",
                owner.app_id,
                consent_id="cns_a",
                event_type="authorization.removed",
                removal_reason="user_revoked",
                attempted_at=T0 + timedelta(hours=2),
            ),
            log_entry(
                "msg_ping",
                owner.app_id,
                consent_id="",
                event_type="portability.ping",
                origin="test",
                attempted_at=T0 + timedelta(hours=3),
            ),
        ],
    )

    def ids(query: str) -> list[str]:
        return _ids(_messages(client, owner, query))

    assert ids("?consent_id=cns_a") == ["msg_c", "msg_a"]
    assert ids("?event_type=portability.delta") == ["msg_b", "msg_a"]
    assert ids("?event_type=portability.ping") == ["msg_ping"]
    assert ids("?outcome=failing") == ["msg_b"]
    assert ids("?outcome=delivered&consent_id=cns_a") == ["msg_c", "msg_a"]
    assert ids("?since=2026-12-01T13:00:00Z") == ["msg_ping", "msg_c", "msg_b"]
    assert ids("?until=2026-12-01T13:00:00%2B00:00") == ["msg_a"]  # until is exclusive
    assert ids("?since=2026-12-01T14:00:00%2B01:00&until=2026-12-01T14:00:00Z") == ["msg_b"]


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("?outcome=sent", 422, "'delivered' or 'failing'"),
        ("?event_type=portability.deltas", 422, "portability.delta"),
        ("?since=2026-12-01T12:00:00", 422, "timezone"),
        ("?since=yesterday", 422, "since"),
        ("?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z", 422, "must be before until"),
        ("?limit=0", 422, "limit"),
        ("?limit=501", 422, "limit"),
        ("?consent_id=a%20b", 422, "consent_id"),
        ("?cursor=not-a-cursor", 400, "next_cursor"),
        ("?cursor=WzEsMl0", 400, "next_cursor"),  # [1,2]: JSON, but not a position
    ],
)
def test_bad_filters_say_what_to_fix(
    client: TestClient,
    apps: tuple[RegisteredApp, RegisteredApp],
    query: str,
    status: int,
    words: str,
) -> None:
    owner, _ = apps
    response = client.get(f"/v1/apps/{owner.app_id}/messages{query}", headers=owner.headers)
    assert response.status_code == status, response.text
    assert words in response.json()["message"]


def test_one_message_with_its_attempts_oldest_first(
    client: TestClient, engine: Engine, apps: tuple[RegisteredApp, RegisteredApp]
) -> None:
    owner, _ = apps
    store_entries(
        engine,
        [
            log_entry("msg_x", owner.app_id, attempted_at=T0 + timedelta(seconds=9), attempt=2),
            log_entry("msg_x", owner.app_id, attempted_at=T0, ok=False),
            log_entry(
                "msg_x", owner.app_id, attempted_at=T0 + timedelta(minutes=3), origin="resend"
            ),
        ],
    )

    response = client.get(f"/v1/apps/{owner.app_id}/messages/msg_x", headers=owner.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message_id"] == "msg_x"
    assert (body["attempts"], body["outcome"]) == (3, "delivered")
    log = body["attempt_log"]
    assert [(a["origin"], a["attempt"], a["ok"]) for a in log] == [
        ("worker", 1, False),
        ("worker", 2, True),
        ("resend", 1, True),
    ]
    assert (log[0]["status"], log[0]["reason"], log[0]["response_excerpt"]) == (
        503,
        "HTTP 503",
        "busy",
    )
    assert (
        client.get(f"/v1/apps/{owner.app_id}/messages/msg_x", headers=OPERATOR).status_code == 200
    )


def test_another_apps_message_is_not_found(
    client: TestClient, engine: Engine, apps: tuple[RegisteredApp, RegisteredApp]
) -> None:
    owner, other = apps
    store_entries(engine, [log_entry("msg_theirs", other.app_id)])

    # The owner asks for it under its own app, and under the other app's id.
    for path, headers in (
        (f"/v1/apps/{owner.app_id}/messages/msg_theirs", owner.headers),
        (f"/v1/apps/{owner.app_id}/messages/msg_theirs", OPERATOR),
        (f"/v1/apps/{other.app_id}/messages/msg_theirs", owner.headers),
        (f"/v1/apps/{other.app_id}/messages", owner.headers),
        (f"/v1/apps/{owner.app_id}/messages/msg_nothing", owner.headers),
        ("/v1/apps/app_unknown/messages", OPERATOR),
    ):
        response = client.get(path, headers=headers)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"] == "not_found"
    for path in (
        f"/v1/apps/{other.app_id}/messages/msg_theirs/resend",
        f"/v1/apps/{other.app_id}/test-event",
    ):
        assert client.post(path, headers=owner.headers).status_code == 404
    assert client.get(f"/v1/apps/{owner.app_id}/messages").status_code == 401
    response = client.get(f"/v1/apps/{owner.app_id}/messages/bad id!", headers=owner.headers)
    assert response.status_code == 422


def test_resend_and_test_event_need_kafka(
    client: TestClient, engine: Engine, apps: tuple[RegisteredApp, RegisteredApp]
) -> None:
    owner, _ = apps
    store_entries(engine, [log_entry("msg_x", owner.app_id)])

    for path in (
        f"/v1/apps/{owner.app_id}/messages/msg_x/resend",
        f"/v1/apps/{owner.app_id}/test-event",
    ):
        response = client.post(path, headers=owner.headers)
        assert response.status_code == 503, response.text
        assert "PORTABILITY_KAFKA_BOOTSTRAP" in response.json()["message"]
    response = client.post(f"/v1/apps/{owner.app_id}/test-event", headers=PLATFORM)
    assert response.status_code == 403
