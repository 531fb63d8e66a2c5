"""Replay through the API, with real pieces: broker, store, uvicorn, the reference receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from api.api_helpers import OPERATOR, PLATFORM, RegisteredApp, grant_body
from api.test_migrations import insert_previous_version_rows
from portability.broker import EmbeddedBroker
from portability.consent import ConsentService, init_schema
from portability.consent.replays import MAX_UNFINISHED_PER_APP, ReplayStore
from portability.webhooks.payload import delta_event
from portability.webhooks.signing import webhook_headers
from replay_harness import (
    OPERATOR_TOKEN,
    PLATFORM_TOKEN,
    WAIT_S,
    ReplayStack,
    delivery,
    replay_stack,
    wait_until,
)

if TYPE_CHECKING:
    from starlette.testclient import TestClient

AS_OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
AS_PLATFORM = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}


@pytest.fixture
async def stack(broker: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[ReplayStack]:
    async with replay_stack(broker, tmp_path, gap_grace_s=0.2) as running:
        yield running


async def test_an_app_replays_its_consent_from_a_sequence(stack: ReplayStack) -> None:
    app = stack.register("app-a1")
    consent = stack.grant(app.app_id)
    other = stack.grant_in_partition(app.app_id, stack.partition_of(consent), same=True)
    records = [delivery(consent, app.app_id, s) for s in range(1, 6)]
    await stack.produce(records)
    await stack.produce([delivery(other, app.app_id, s) for s in range(1, 6)])

    status, accepted, headers = await stack.call(
        "POST",
        f"/v1/consents/{consent}/replay",
        headers=app.headers,
        json={"from_sequence": 3},
    )
    assert status == 202, accepted
    location = f"/v1/consents/{consent}/replays/{accepted['replay_id']}"
    assert headers["Location"] == location
    assert accepted["state"] == "pending"
    assert (accepted["consent_id"], accepted["app_id"]) == (consent, app.app_id)
    assert (accepted["from_sequence"], accepted["since"]) == (3, None)
    done = await stack.finished(consent, accepted["replay_id"], app)

    assert done["state"] == "done"
    assert (done["deltas_found"], done["deltas_sent"]) == (3, 3)
    assert (done["first_sequence"], done["last_sequence"]) == (3, 5)
    assert stack.sequences(consent) == [3, 4, 5]
    assert {d.id for d in stack.receiver.deltas(consent)} == {r["delta_id"] for r in records[2:]}
    assert stack.receiver.deltas(other) == []
    assert stack.receiver.stats().verification_failures == 0


async def test_since_through_the_api(stack: ReplayStack) -> None:
    app = stack.register("app-a2")
    consent = stack.grant(app.app_id)
    long_ago = datetime.now(UTC) - timedelta(days=2)
    await stack.produce(
        [delivery(consent, app.app_id, 1, matched_at=long_ago)],
        timestamp_ms=int(long_ago.timestamp() * 1000),
    )
    await stack.produce([delivery(consent, app.app_id, 2)])
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()

    status, accepted, _ = await stack.call(
        "POST", f"/v1/consents/{consent}/replay", headers=AS_OPERATOR, json={"since": since}
    )
    assert status == 202, accepted
    done = await stack.finished(consent, accepted["replay_id"], app)

    assert datetime.fromisoformat(done["since"]) == datetime.fromisoformat(since)
    assert done["state"] == "done"
    assert stack.sequences(consent) == [2]


async def test_a_gap_at_the_receiver_is_replayed_and_closes(stack: ReplayStack) -> None:
    """The reference receiver notices 3-4 missing, asks for a replay, and the gap fills."""
    app = stack.register("app-a3")
    consent = stack.grant(app.app_id)
    records = [delivery(consent, app.app_id, s) for s in range(1, 6)]
    await stack.produce(records)
    # The worker's posts, as if 3 and 4 were lost on the way.
    for batch in ([records[0], records[1]], [records[4]]):
        msg_id, body = delta_event(batch)
        async with stack.http.post(
            f"{stack.receiver_url}/webhooks/{app.app_id}",
            data=body,
            headers=webhook_headers([app.secret], msg_id, body),
        ) as response:
            assert response.status == 204
    assert stack.receiver.missing_ranges(consent) == [(3, 4)]

    await wait_until(
        lambda: bool(stack.receiver.replay_requests()), "the gap's recovery ended", WAIT_S
    )

    (request,) = stack.receiver.replay_requests()
    assert (request.consent_id, request.from_sequence, request.outcome) == (consent, 3, "filled")
    assert request.replay_id is not None
    assert stack.receiver.missing_ranges(consent) == []
    assert sorted(stack.sequences(consent)) == [1, 2, 3, 4, 5]
    stats = stack.receiver.stats()
    assert (stats.gaps_detected, stats.missing_sequences, stats.replays_requested) == (1, 0, 1)
    assert stats.duplicates == 1  # sequence 5 came again, with the same id


async def test_who_may_replay_and_read_replays(stack: ReplayStack) -> None:
    owner, intruder = stack.register("app-owner"), stack.register("app-intruder")
    consents = [stack.grant(owner.app_id) for _ in range(2)]
    body = {"from_sequence": 1}

    def post(consent: str, headers: dict[str, str]) -> Any:
        return stack.call("POST", f"/v1/consents/{consent}/replay", headers=headers, json=body)

    assert (await post(consents[0], intruder.headers))[0] == 404
    assert (await post(consents[0], AS_PLATFORM))[0] == 403
    assert (await post(consents[0], {}))[0] == 401
    by_owner = (await post(consents[0], owner.headers))[1]
    by_operator = (await post(consents[1], AS_OPERATOR))[1]
    await stack.finished(consents[0], by_owner["replay_id"], owner)

    path = f"/v1/consents/{consents[0]}/replays/{by_owner['replay_id']}"
    for headers, expected in (
        (owner.headers, 200),
        (AS_OPERATOR, 200),
        (AS_PLATFORM, 200),
        (intruder.headers, 404),
        ({}, 401),
    ):
        status, answer, _ = await stack.call("GET", path, headers=headers)
        assert status == expected, (headers, answer)
    # A replay read through another consent's path does not exist there.
    wrong = f"/v1/consents/{consents[0]}/replays/{by_operator['replay_id']}"
    assert (await stack.call("GET", wrong, headers=AS_OPERATOR))[0] == 404
    missing = f"/v1/consents/{consents[0]}/replays/rpl_0000000000000000"
    status, answer, _ = await stack.call("GET", missing, headers=owner.headers)
    assert (status, answer["error"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "exactly one of from_sequence"),
        ({"from_sequence": 2, "since": "2026-01-01T00:00:00Z"}, "exactly one of from_sequence"),
        ({"from_sequence": 0}, "from_sequence"),
        ({"since": "2026-01-01T00:00:00"}, "since"),  # no time zone
        ({"from_sequence": 1, "until": 4}, "until"),
    ],
)
async def test_a_malformed_request_is_422_and_says_why(
    stack: ReplayStack, body: dict[str, Any], fragment: str
) -> None:
    app = stack.register("app-a5")
    consent = stack.grant(app.app_id)

    status, answer, _ = await stack.call(
        "POST", f"/v1/consents/{consent}/replay", headers=app.headers, json=body
    )

    assert (status, answer["error"]) == (422, "invalid_request")
    assert fragment in answer["message"]


async def test_conflicts_are_409_with_a_code(stack: ReplayStack) -> None:
    app = stack.register("app-a6")
    revoked, busy = stack.grant(app.app_id), stack.grant(app.app_id)
    stack.service.revoke(revoked)
    await stack.produce([delivery(busy, app.app_id, 1)])
    stack.receiver.fail_next(1, 503, retry_after=0.5)  # keeps the first replay running

    status, refused, _ = await stack.call(
        "POST", f"/v1/consents/{revoked}/replay", headers=app.headers, json={"from_sequence": 1}
    )
    assert (status, refused["error"]) == (409, "consent_not_active")
    assert "revoked" in refused["message"]
    first = await stack.replay(busy, app, from_sequence=1)
    status, again, _ = await stack.call(
        "POST", f"/v1/consents/{busy}/replay", headers=app.headers, json={"from_sequence": 1}
    )
    assert (status, again["error"]) == (409, "replay_in_progress")
    assert first["replay_id"] in again["message"]
    assert (await stack.finished(busy, first["replay_id"], app))["state"] == "done"
    # Once it finished, the consent can be replayed again.
    second = await stack.replay(busy, app, from_sequence=1)
    assert (await stack.finished(busy, second["replay_id"], app))["state"] == "done"


async def test_an_app_has_a_bounded_number_of_replays_in_progress(stack: ReplayStack) -> None:
    app = stack.register("app-a8")
    store = ReplayStore(stack.engine)
    for _ in range(MAX_UNFINISHED_PER_APP):
        store.create(stack.grant(app.app_id), "app", from_sequence=1)
    one_more = stack.grant(app.app_id)

    status, refused, _ = await stack.call(
        "POST", f"/v1/consents/{one_more}/replay", headers=app.headers, json={"from_sequence": 1}
    )

    assert (status, refused["error"]) == (409, "too_many_replays")
    assert f"{MAX_UNFINISHED_PER_APP} replays in progress" in refused["message"]


# --- without Kafka, and the store ---------------------------------------------------------------


def test_without_kafka_replay_is_503_and_says_so(
    client: TestClient, register: Callable[..., RegisteredApp]
) -> None:
    app = register()
    consent = client.post("/v1/consents", headers=PLATFORM, json=grant_body(app.app_id))

    response = client.post(
        f"/v1/consents/{consent.json()['consent_id']}/replay",
        headers=app.headers,
        json={"from_sequence": 1},
    )

    assert response.status_code == 503
    assert response.json()["error"] == "replay_unavailable"
    assert "replay needs Kafka" in response.json()["message"]


def test_replays_are_read_from_the_store_without_kafka(
    client: TestClient, engine: Engine, register: Callable[..., RegisteredApp]
) -> None:
    app = register()
    consent = ConsentService(engine).grant("u1", app.app_id, ["post"], user_region="DE")
    recorded = ReplayStore(engine).create(consent.consent_id, "app", from_sequence=4)

    response = client.get(
        f"/v1/consents/{consent.consent_id}/replays/{recorded.replay_id}", headers=OPERATOR
    )

    assert response.status_code == 200
    assert response.json()["state"] == "pending"
    assert response.json()["from_sequence"] == 4


def test_the_migration_adds_replays_to_a_store_with_data(bare_engine: Engine) -> None:
    init_schema(bare_engine, "0002")
    insert_previous_version_rows(bare_engine)

    init_schema(bare_engine)

    store = ReplayStore(bare_engine)
    view = store.create("cns_active", "operator", from_sequence=1)
    assert store.get(view.replay_id).app_id == "app_old"
    with bare_engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM consents")).scalar_one()
    assert count == 2
