"""``GET /v1/consents/{consent_id}/ledger`` on SQLite and PostgreSQL: the platform's head as
the message log's writer stored it, the chain's start before any delivery, and who may ask.

Entries are stored as the writer stores them (``store_entries``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from api.api_helpers import OPERATOR, PLATFORM, RegisteredApp, TestClient, grant_body
from api.message_log_helpers import T0, log_entry
from portability.messages.storing import store_entries
from portability.webhooks import ledger
from portability.wire.delivery_log import LoggedLedger

ALGORITHM = "sha256 chain, see docs/webhooks.md#the-ledger"


@pytest.fixture
def apps(register: Callable[..., RegisteredApp]) -> tuple[RegisteredApp, RegisteredApp]:
    return register(name="Owner"), register(name="Other")


def _grant(client: TestClient, app: RegisteredApp) -> str:
    response = client.post("/v1/consents", headers=PLATFORM, json=grant_body(app.app_id))
    assert response.status_code == 201, response.text
    consent_id: str = response.json()["consent_id"]
    return consent_id


def _values(consent_id: str, events: int) -> LoggedLedger:
    """The chain values of a message that is the consent's ``events``-th event (a delta)."""
    before = ledger.start(consent_id)
    for n in range(1, events):
        before = ledger.extend(before, f"{n:064x}")
    after = ledger.extend(before, f"{events:064x}")
    return LoggedLedger(
        before=before, after=after, events=events, deltas=events, pages=0, removals=0
    )


def test_the_head_is_the_latest_delivered_messages(
    client: TestClient, engine: Engine, apps: tuple[RegisteredApp, RegisteredApp]
) -> None:
    owner, _ = apps
    consent_id = _grant(client, owner)
    first, second = _values(consent_id, 1), _values(consent_id, 2)
    store_entries(
        engine,
        [
            log_entry("msg_1", owner.app_id, consent_id=consent_id, ledger=first),
            log_entry(
                "msg_2",
                owner.app_id,
                consent_id=consent_id,
                ledger=second,
                attempted_at=T0 + timedelta(seconds=1),
            ),
        ],
    )

    response = client.get(f"/v1/consents/{consent_id}/ledger", headers=owner.headers)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "consent_id": consent_id,
        "app_id": owner.app_id,
        "head": second["after"],
        "events": 2,
        "deltas": 2,
        "pages": 0,
        "removals": 0,
        "updated_at": "2026-12-01T12:00:01Z",
        "algorithm": ALGORITHM,
    }


def test_before_any_delivery_the_head_is_the_chains_start(
    client: TestClient, engine: Engine, apps: tuple[RegisteredApp, RegisteredApp]
) -> None:
    owner, _ = apps
    consent_id = _grant(client, owner)
    # A failed attempt delivered nothing: the head does not move.
    store_entries(
        engine,
        [
            log_entry(
                "msg_1",
                owner.app_id,
                consent_id=consent_id,
                ok=False,
                ledger=_values(consent_id, 1),
            )
        ],
    )

    body = client.get(f"/v1/consents/{consent_id}/ledger", headers=owner.headers).json()

    assert body["head"] == ledger.start(consent_id)
    assert (body["events"], body["deltas"], body["pages"], body["removals"]) == (0, 0, 0, 0)
    assert body["updated_at"] is None
    assert body["app_id"] == owner.app_id


def test_who_may_read_a_ledger(
    client: TestClient, apps: tuple[RegisteredApp, RegisteredApp]
) -> None:
    owner, other = apps
    consent_id = _grant(client, owner)
    path = f"/v1/consents/{consent_id}/ledger"

    for headers in (owner.headers, PLATFORM, OPERATOR):
        response = client.get(path, headers=headers)
        assert response.status_code == 200, response.text
    # Another app's consent does not exist for it; nor does an unknown one for anybody.
    hidden = client.get(path, headers=other.headers)
    assert hidden.status_code == 404, hidden.text
    assert hidden.json()["error"] == "not_found"
    unknown = client.get("/v1/consents/cns_nope/ledger", headers=OPERATOR)
    assert unknown.status_code == 404
    assert "cns_nope" in unknown.json()["message"]
    assert client.get(path).status_code == 401
    assert client.get("/v1/consents/not%20an%20id/ledger", headers=OPERATOR).status_code == 422
    # Reading changes nothing: asked again, the same answer.
    assert (
        client.get(path, headers=owner.headers).json() == client.get(path, headers=PLATFORM).json()
    )
