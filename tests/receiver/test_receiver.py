"""The reference receiving app over real local HTTP: verify, deduplicate, detect gaps."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from portability.receiver import ReceiverStats, ReceivingApp, run_receiver
from portability.webhooks.payload import delta_event, notification_event
from portability.webhooks.signing import SigningError, generate_secret, webhook_headers
from portability.wire.notifications import (
    AUTHORIZATION_REMOVED,
    SnapshotPage,
    authorization_removed,
    event_id,
    snapshot_page,
)
from portability.wire.records import DeliveryRecord

APP_ID = "app-1"
CONSENT_ID = "consent-1"
WAIT_S = 5.0


def delivery(
    sequence: int, *, consent_id: str = CONSENT_ID, occurred_at: datetime | None = None
) -> DeliveryRecord:
    """A profile upsert of ``consent_id`` at ``sequence``."""
    return {
        "delta_id": f"{consent_id}/{sequence}",
        "consent_id": consent_id,
        "app_id": APP_ID,
        "user_id": "user-1",
        "sequence": sequence,
        "change": {
            "change_id": f"change-{sequence}",
            "user_id": "user-1",
            "category": "profile",
            "operation": "upsert",
            "record_id": "user-1",
            "occurred_at": occurred_at or datetime.now(UTC),
            "record": {
                "-type": "portability.v1.Profile",
                "username": "ada",
                "display_name": f"Ada {sequence}",
                "bio": "",
                "region": "FR",
                "is_private": False,
            },
        },
        "matched_at": datetime.now(UTC),
    }


class Sender:
    """Signs and posts like the delivery worker does, answering (status, headers, JSON body)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, secret: str) -> None:
        self.session = session
        self.base_url = base_url
        self.secret = secret

    async def send(
        self,
        records: Sequence[DeliveryRecord],
        *,
        secrets: Sequence[str] | None = None,
        now: float | None = None,
        app_id: str = APP_ID,
    ) -> tuple[int, dict[str, str], Any]:
        msg_id, body = delta_event(records)
        headers = webhook_headers(secrets or [self.secret], msg_id, body, now=now)
        return await self.post(body, headers, app_id=app_id)

    async def send_body(
        self, body: bytes, *, app_id: str = APP_ID
    ) -> tuple[int, dict[str, str], Any]:
        """Post any body, signed with the right secret: for testing what parsing rejects."""
        return await self.post(body, webhook_headers([self.secret], "msg_x", body), app_id=app_id)

    async def post(
        self, body: bytes, headers: dict[str, str], *, app_id: str = APP_ID
    ) -> tuple[int, dict[str, str], Any]:
        url = f"{self.base_url}/webhooks/{app_id}"
        async with self.session.post(url, data=body, headers=headers) as response:
            text = await response.text()
            return response.status, dict(response.headers), json.loads(text) if text else None


@pytest.fixture
def secret() -> str:
    return generate_secret()


@pytest.fixture
def receiver(secret: str) -> ReceivingApp:
    app = ReceivingApp()
    app.add_app(APP_ID, secret)
    return app


@pytest.fixture
async def base_url(receiver: ReceivingApp) -> AsyncIterator[str]:
    async with run_receiver(receiver) as url:
        yield url


@pytest.fixture
async def sender(base_url: str, secret: str) -> AsyncIterator[Sender]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session:
        yield Sender(session, base_url, secret)


async def test_valid_delivery_is_accepted_and_counted(
    receiver: ReceivingApp, sender: Sender
) -> None:
    status, _, body = await sender.send([delivery(1), delivery(2)])

    assert (status, body) == (204, None)
    stats = receiver.stats()
    assert (stats.requests, stats.deltas_received, stats.duplicates) == (1, 2, 0)
    assert (stats.gaps_detected, stats.missing_sequences) == (0, 0)
    assert [delta.sequence for delta in receiver.deltas(CONSENT_ID)] == [1, 2]
    assert receiver.deltas(CONSENT_ID)[0].record == {
        "username": "ada",
        "display_name": "Ada 1",
        "bio": "",
        "region": "FR",
        "is_private": False,
    }
    assert receiver.received_ids() == {"consent-1/1", "consent-1/2"}
    assert stats.latency_p50_ms is not None


async def test_rotation_verifies_with_the_new_secret_only(
    receiver: ReceivingApp, sender: Sender, secret: str
) -> None:
    status, _, _ = await sender.send([delivery(1)], secrets=[generate_secret(), secret])

    assert status == 204
    assert receiver.stats().deltas_received == 1


async def test_bad_signature_is_401_and_records_nothing(
    receiver: ReceivingApp, sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="portability.receiver"):
        status, _, body = await sender.send([delivery(1)], secrets=[generate_secret()])

    assert status == 401
    assert body["error"] == "verification_failed"
    stats = receiver.stats()
    assert (stats.verification_failures, stats.deltas_received, stats.requests) == (1, 0, 1)
    assert receiver.deltas(CONSENT_ID) == []
    (line,) = [record for record in caplog.records if record.name.startswith("portability")]
    assert APP_ID in line.getMessage()
    assert "verification_failed" in line.getMessage()


async def test_tampered_body_is_401(receiver: ReceivingApp, sender: Sender, secret: str) -> None:
    msg_id, body = delta_event([delivery(1)])
    headers = webhook_headers([secret], msg_id, body)

    status, _, _ = await sender.post(body.replace(b"Ada 1", b"Eve 1"), headers)

    assert status == 401
    assert receiver.stats().verification_failures == 1


async def test_stale_timestamp_is_401(receiver: ReceivingApp, sender: Sender) -> None:
    status, _, body = await sender.send([delivery(1)], now=time.time() - 600)

    assert status == 401
    assert "too old" in body["detail"]
    assert receiver.stats().verification_failures == 1


async def test_missing_or_garbled_signature_header_is_401(
    receiver: ReceivingApp, sender: Sender, secret: str
) -> None:
    msg_id, body = delta_event([delivery(1)])
    headers = webhook_headers([secret], msg_id, body)

    garbled = {**headers, "webhook-signature": "no-comma-here"}
    missing = {key: value for key, value in headers.items() if key != "webhook-signature"}

    assert (await sender.post(body, garbled))[0] == 401
    assert (await sender.post(body, missing))[0] == 401
    assert receiver.stats().verification_failures == 2


async def test_duplicate_delta_is_accepted_once(receiver: ReceivingApp, sender: Sender) -> None:
    records = [delivery(1), delivery(2)]

    first, _, _ = await sender.send(records)
    again, _, _ = await sender.send(records)
    overlapping, _, _ = await sender.send([delivery(2), delivery(3)])

    assert (first, again, overlapping) == (204, 204, 204)
    stats = receiver.stats()
    assert (stats.deltas_received, stats.duplicates, stats.requests) == (3, 3, 3)
    assert [delta.sequence for delta in receiver.deltas(CONSENT_ID)] == [1, 2, 3]


async def test_gap_is_detected_live_and_closes_when_filled(
    receiver: ReceivingApp, sender: Sender
) -> None:
    await sender.send([delivery(1)])
    await sender.send([delivery(4)])

    stats = receiver.stats()
    assert (stats.gaps_detected, stats.missing_sequences) == (1, 2)
    assert receiver.detected_gaps(CONSENT_ID) == [(2, 3)]
    assert receiver.missing_ranges(CONSENT_ID) == [(2, 3)]

    await sender.send([delivery(2)])

    stats = receiver.stats()
    assert (stats.gaps_detected, stats.missing_sequences) == (1, 1)
    assert receiver.missing_ranges(CONSENT_ID) == [(3, 3)]
    assert receiver.detected_gaps(CONSENT_ID) == [(2, 3)]
    assert [delta.sequence for delta in receiver.deltas(CONSENT_ID)] == [1, 4, 2]


async def test_gaps_are_tracked_per_consent(receiver: ReceivingApp, sender: Sender) -> None:
    await sender.send([delivery(1, consent_id="a")])
    await sender.send([delivery(1, consent_id="b"), delivery(2, consent_id="b")])
    await sender.send([delivery(3, consent_id="a")])

    assert receiver.stats().missing_sequences == 1
    assert receiver.missing_ranges("a") == [(2, 2)]
    assert receiver.missing_ranges("b") == []
    assert receiver.consent_ids() == ["a", "b"]


async def test_first_delta_beyond_one_is_a_gap(receiver: ReceivingApp, sender: Sender) -> None:
    await sender.send([delivery(3)])

    assert receiver.stats().gaps_detected == 1
    assert receiver.detected_gaps(CONSENT_ID) == [(1, 2)]


async def test_fail_next_answers_the_status_and_records_nothing(
    receiver: ReceivingApp, sender: Sender
) -> None:
    receiver.fail_next(2, 503, retry_after=0.5)
    receiver.fail_next(1, 429, retry_after=3)

    answers = [await sender.send([delivery(1)]) for _ in range(4)]

    assert [status for status, _, _ in answers] == [503, 503, 429, 204]
    assert answers[0][1]["Retry-After"] == "0.5"
    assert answers[2][1]["Retry-After"] == "3"
    assert answers[0][2]["error"] == "injected_failure"
    stats = receiver.stats()
    assert (stats.requests, stats.injected_failures) == (4, 3)
    assert (stats.deltas_received, stats.duplicates) == (1, 0)


async def test_fail_next_without_retry_after_sends_none(
    receiver: ReceivingApp, sender: Sender
) -> None:
    receiver.fail_next(1, 410)

    status, headers, _ = await sender.send([delivery(1)])

    assert status == 410
    assert "Retry-After" not in headers


@pytest.mark.parametrize(
    ("count", "status", "retry_after"), [(-1, 503, None), (1, 200, None), (1, 503, -1.0)]
)
def test_fail_next_refuses_nonsense(count: int, status: int, retry_after: float | None) -> None:
    with pytest.raises(ValueError, match=r"fail_next|retry_after"):
        ReceivingApp().fail_next(count, status, retry_after)


async def test_unknown_app_is_404(receiver: ReceivingApp, sender: Sender) -> None:
    status, _, body = await sender.send([delivery(1)], app_id="app-unknown")

    assert status == 404
    assert body["error"] == "unknown_app"
    assert receiver.stats().unknown_app_requests == 1


async def test_malformed_json_is_400(receiver: ReceivingApp, sender: Sender) -> None:
    status, _, body = await sender.send_body(b'{"type": "portability.delta", "data": ')

    assert status == 400
    assert body["error"] == "malformed_payload"
    assert "not JSON" in body["detail"]
    stats = receiver.stats()
    assert (stats.malformed_payloads, stats.verification_failures) == (1, 0)


async def test_wrong_shape_is_400_with_the_reason(receiver: ReceivingApp, sender: Sender) -> None:
    document = json.loads(delta_event([delivery(1)])[1])
    del document["data"]["deltas"][0]["sequence"]

    status, _, body = await sender.send_body(json.dumps(document).encode())

    assert status == 400
    assert "sequence is missing" in body["detail"]


async def test_event_for_another_app_is_400(receiver: ReceivingApp, sender: Sender) -> None:
    document = json.loads(delta_event([delivery(1)])[1])
    document["data"]["app_id"] = "app-2"

    status, _, body = await sender.send_body(json.dumps(document).encode())

    assert (status, body["error"]) == (400, "wrong_app")
    assert receiver.stats().deltas_received == 0


async def test_unknown_event_type_is_accepted_and_kept(
    receiver: ReceivingApp, sender: Sender
) -> None:
    event = {"type": "transfer.started", "data": {"consent_id": CONSENT_ID}}

    status, _, _ = await sender.send_body(json.dumps(event).encode())

    assert status == 204
    assert receiver.other_events() == [event]
    assert receiver.stats().other_events == 1


def removal_event() -> bytes:
    """An authorization.removed body as the delivery worker builds it."""
    return notification_event(
        authorization_removed(
            consent_id=CONSENT_ID,
            app_id=APP_ID,
            user_id="user-1",
            reason="user_revoked",
            removed_at=datetime(2025, 1, 31, tzinfo=UTC),
            version=7,
        )
    )[1]


async def test_removal_is_recorded_once_and_later_deltas_are_flagged(
    receiver: ReceivingApp, sender: Sender
) -> None:
    await sender.send([delivery(1)])
    msg_id = event_id(AUTHORIZATION_REMOVED, CONSENT_ID, 7)
    body = removal_event()
    headers = webhook_headers([sender.secret], msg_id, body)

    assert (await sender.post(body, headers))[0] == 204
    assert (await sender.post(body, headers))[0] == 204  # a redelivery
    await sender.send([delivery(2)])  # what a correct pipeline never sends

    removal = receiver.removal(CONSENT_ID)
    assert removal is not None
    assert (removal.event_id, removal.consent_id, removal.reason) == (
        msg_id,
        CONSENT_ID,
        "user_revoked",
    )
    stats = receiver.stats()
    assert (stats.authorizations_removed, stats.duplicates) == (1, 1)
    assert stats.deltas_after_removal == 1
    assert receiver.last_delta_at(CONSENT_ID) is not None
    assert receiver.removal("another-consent") is None


async def test_removal_without_a_consent_is_400(receiver: ReceivingApp, sender: Sender) -> None:
    body = json.dumps({"type": "authorization.removed", "data": {"reason": "expired"}})

    status, _, answer = await sender.send_body(body.encode())

    assert (status, answer["error"]) == (400, "malformed_payload")
    assert receiver.stats().authorizations_removed == 0


async def test_latency_is_receipt_time_minus_occurred_at(secret: str) -> None:
    occurred = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
    receipt_offsets = iter([1.5, 0.25, 3.0])
    receiver = ReceivingApp(clock=lambda: occurred.timestamp() + next(receipt_offsets))
    receiver.add_app(APP_ID, secret)

    async with run_receiver(receiver) as url, aiohttp.ClientSession() as session:
        sender = Sender(session, url, secret)
        for sequence in (1, 2, 3):
            await sender.send([delivery(sequence, occurred_at=occurred)])

    stats = receiver.stats()
    assert stats.latency_p50_ms == pytest.approx(1500)
    assert stats.latency_p95_ms == pytest.approx(3000)
    assert stats.latency_p99_ms == pytest.approx(3000)


def test_stats_before_any_request() -> None:
    assert ReceivingApp().stats() == ReceiverStats(
        requests=0,
        deltas_received=0,
        duplicates=0,
        verification_failures=0,
        gaps_detected=0,
        missing_sequences=0,
        latency_p50_ms=None,
        latency_p95_ms=None,
        latency_p99_ms=None,
    )


async def test_wait_for_wakes_on_requests(receiver: ReceivingApp, sender: Sender) -> None:
    waiter = asyncio.create_task(
        receiver.wait_for(lambda stats: stats.deltas_received >= 3, WAIT_S)
    )

    await sender.send([delivery(1)])
    assert not waiter.done()
    await sender.send([delivery(2), delivery(3)])

    assert await waiter is True


async def test_wait_for_returns_false_on_timeout(receiver: ReceivingApp) -> None:
    started = time.monotonic()

    assert await receiver.wait_for(lambda stats: stats.requests > 0, 0.05) is False
    assert time.monotonic() - started < WAIT_S


async def test_wait_for_already_true_returns_at_once(receiver: ReceivingApp) -> None:
    assert await receiver.wait_for(lambda stats: stats.requests == 0, 0) is True


async def test_state_survives_a_restart_of_the_endpoint(
    receiver: ReceivingApp, secret: str
) -> None:
    for sequence in (1, 2):
        async with run_receiver(receiver) as url, aiohttp.ClientSession() as session:
            status, _, _ = await Sender(session, url, secret).send([delivery(sequence)])
            assert status == 204

    assert receiver.stats().deltas_received == 2


async def test_run_receiver_stops_serving_on_exit(receiver: ReceivingApp) -> None:
    async with run_receiver(receiver) as url:
        assert url.startswith("http://127.0.0.1:")

    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.post(f"{url}/webhooks/{APP_ID}", data=b"{}")


def test_add_app_refuses_a_malformed_secret() -> None:
    with pytest.raises(SigningError):
        ReceivingApp().add_app(APP_ID, "whsec_!!!")


async def test_a_replaced_secret_takes_effect(receiver: ReceivingApp, sender: Sender) -> None:
    old = sender.secret
    new = generate_secret()
    receiver.add_app(APP_ID, new)

    assert (await sender.send([delivery(1)], secrets=[old]))[0] == 401
    assert (await sender.send([delivery(1)], secrets=[new]))[0] == 204


async def test_a_single_app_is_also_served_without_its_id_in_the_path(
    receiver: ReceivingApp, sender: Sender, secret: str
) -> None:
    msg_id, body = delta_event([delivery(1)])
    headers = webhook_headers([secret], msg_id, body)
    async with sender.session.post(f"{sender.base_url}/webhooks", data=body, headers=headers) as r:
        assert r.status == 204
    assert receiver.stats().deltas_received == 1

    receiver.add_app("app-2", generate_secret())
    async with sender.session.post(f"{sender.base_url}/webhooks", data=body, headers=headers) as r:
        assert r.status == 404
        assert "not serve exactly one app" in (await r.json())["detail"]


async def test_without_retaining_deltas_duplicates_are_known_by_sequence(secret: str) -> None:
    receiver = ReceivingApp(retain_deltas=False)
    receiver.add_app(APP_ID, secret)
    async with run_receiver(receiver) as url, aiohttp.ClientSession() as session:
        sender = Sender(session, url, secret)
        await sender.send([delivery(1), delivery(2)])
        await sender.send([delivery(2), delivery(4)])
        await sender.send([delivery(3)])

    stats = receiver.stats()
    assert (stats.deltas_received, stats.duplicates, stats.gaps_detected) == (4, 1, 1)
    assert (stats.missing_sequences, receiver.missing_ranges(CONSENT_ID)) == (0, [])
    assert receiver.deltas(CONSENT_ID) == []
    assert receiver.received_ids() == set()
    assert stats.latency_p50_ms is not None


def snapshot_page_body(page: int, last: bool, position: int = 40, epoch: int = 1) -> bytes:
    """A portability.snapshot page as the delivery worker posts it (one profile record)."""
    record = {
        "record_id": "user-1",
        "category": "profile",
        "occurred_at": "2025-01-31T00:00:00.000Z",
        "change_id": f"change-snap-{page}",
        "record": {
            "username": "ada",
            "display_name": f"Ada p{page}",
            "bio": "",
            "region": "FR",
            "is_private": False,
        },
    }
    notification = snapshot_page(
        consent_id=CONSENT_ID,
        app_id=APP_ID,
        user_id="user-1",
        page=SnapshotPage("trf_1", epoch, page, last, 0, position),
        categories=["profile"],
        policy_version="v1",
        records=json.dumps([record]).encode(),
        record_count=1,
        taken_at=datetime(2025, 1, 31, tzinfo=UTC),
    )
    return notification_event(notification)[1]


async def test_a_snapshot_is_kept_in_order_and_restarts_the_sequence(
    receiver: ReceivingApp, sender: Sender
) -> None:
    await sender.send([delivery(1), delivery(2)])
    for page, last in ((1, False), (1, False), (2, True)):  # page 1 delivered twice
        assert (await sender.send_body(snapshot_page_body(page, last)))[0] == 204
    # The deltas the snapshot held (3 to 6) are not sent: 7 continues the sequence.
    await sender.send([delivery(7), delivery(8)])

    snapshot = receiver.snapshot(CONSENT_ID)
    assert snapshot is not None
    assert (snapshot.snapshot_id, snapshot.epoch, snapshot.pages, snapshot.complete) == (
        "trf_1",
        1,
        2,
        True,
    )
    assert [r["change_id"] for r in snapshot.records] == ["change-snap-1", "change-snap-2"]
    assert snapshot.deltas_before == 2
    stats = receiver.stats()
    assert (stats.snapshot_pages, stats.snapshots_completed, stats.snapshot_records) == (2, 1, 2)
    assert stats.duplicates == 1  # the page delivered twice
    assert (stats.gaps_detected, stats.missing_sequences) == (0, 0)


async def test_a_snapshot_page_out_of_order_is_refused(
    receiver: ReceivingApp, sender: Sender
) -> None:
    status, _, body = await sender.send_body(snapshot_page_body(2, True))

    assert status == 400
    assert body["error"] == "out_of_order"
    # A later build of the same snapshot (another position) starts a fresh copy.
    assert (await sender.send_body(snapshot_page_body(1, True, position=41)))[0] == 204
    snapshot = receiver.snapshot(CONSENT_ID)
    assert snapshot is not None
    assert (snapshot.position, snapshot.pages, snapshot.complete) == ("0:41", 1, True)
