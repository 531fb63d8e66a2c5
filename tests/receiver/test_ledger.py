"""The reference receiver verifies each consent's ledger, over real local HTTP.

Bodies are built as the delivery worker builds them (the payload functions, with the chain's
values computed from the consent's start); a tampered, missing or reordered delta must make
the body's value differ from the receiver's, duplicates must not extend the chain, and the
documented example (docs/examples/webhooks/ledger.py) must compute the same chain.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from delivery.test_contract import assert_invalid, assert_valid
from portability.receiver import ReceivingApp, run_receiver
from portability.webhooks import ledger
from portability.webhooks.payload import (
    delivery_head,
    head_delta_event,
    ledger_digest,
    notification_digest,
    notification_event,
)
from portability.webhooks.signing import generate_secret, webhook_headers
from portability.wire.notifications import SnapshotPage, authorization_removed, snapshot_page
from portability.wire.records import DeliveryRecord, NotificationRecord
from receiver.test_receiver import APP_ID, CONSENT_ID, WAIT_S, Sender, delivery

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLE = DOCS / "examples" / "webhooks" / "ledger.py"

Message = tuple[str, bytes]


@pytest.fixture
def secret() -> str:
    return generate_secret()


@pytest.fixture
def receiver(secret: str) -> ReceivingApp:
    app = ReceivingApp()
    app.add_app(APP_ID, secret)
    return app


@pytest.fixture
async def sender(receiver: ReceivingApp, secret: str) -> AsyncIterator[Sender]:
    async with (
        run_receiver(receiver) as url,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session,
    ):
        yield Sender(session, url, secret)


class Platform:
    """The consent's chain as the delivery worker extends it, message by message."""

    def __init__(self) -> None:
        self.head = ledger.start(CONSENT_ID)
        self.events = 0

    def deltas(self, records: Sequence[DeliveryRecord]) -> Message:
        heads = [delivery_head(record) for record in records]
        values = []
        for head in heads:
            self.head = ledger.extend(self.head, ledger_digest(head))
            values.append(self.head)
        self.events += len(heads)
        return head_delta_event(heads, values)

    def notification(self, notification: NotificationRecord) -> Message:
        self.head = ledger.extend(self.head, notification_digest(notification))
        self.events += 1
        return notification_event(notification, self.head)


def page(number: int, last: bool) -> NotificationRecord:
    profile = {"username": "ada", "display_name": "Ada", "bio": f"p{number}", "region": "FR"}
    records = [
        {
            "record_id": "user-1",
            "category": "profile",
            "occurred_at": "2025-01-31T00:00:00.000Z",
            "change_id": f"change-snap-{number}",
            "record": {**profile, "is_private": False},
        }
    ]
    return snapshot_page(
        consent_id=CONSENT_ID,
        app_id=APP_ID,
        user_id="user-1",
        page=SnapshotPage("trf_1", 1, number, last, 0, 40),
        categories=["profile"],
        policy_version="v1",
        records=json.dumps(records).encode(),
        record_count=1,
        taken_at=delivery(1)["matched_at"],
    )


def removal() -> NotificationRecord:
    return authorization_removed(
        consent_id=CONSENT_ID,
        app_id=APP_ID,
        user_id="user-1",
        reason="user_revoked",
        removed_at=delivery(1)["matched_at"],
        version=3,
    )


async def post(sender: Sender, message: Message) -> None:
    message_id, body = message
    status, _, answer = await sender.post(body, webhook_headers([sender.secret], message_id, body))
    assert status == 204, answer


def mismatches(receiver: ReceivingApp) -> int:
    return receiver.stats().ledger_mismatches


async def test_a_consents_events_in_order_verify_and_duplicates_do_not_extend(
    receiver: ReceivingApp, sender: Sender
) -> None:
    platform = Platform()
    first = platform.deltas([delivery(1), delivery(2)])
    messages = [
        first,
        platform.notification(page(1, False)),
        platform.notification(page(2, True)),
        platform.deltas([delivery(3)]),
        platform.notification(removal()),
    ]
    for message in messages:
        await post(sender, message)
    for message in (first, messages[1], messages[-1]):  # redeliveries
        await post(sender, message)

    stats = receiver.stats()
    assert (stats.ledger_mismatches, stats.ledger_unchained) == (0, 0)
    assert stats.duplicates >= 2
    head = receiver.ledger_head(CONSENT_ID)
    assert head == ledger.LedgerHead(platform.head, events=6, deltas=3, pages=2, removals=1)
    assert receiver.ledger_head("another-consent") is None


async def test_a_tampered_delta_breaks_the_chain_from_there(
    receiver: ReceivingApp, sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    platform = Platform()
    one, two, three = (platform.deltas([delivery(n)]) for n in (1, 2, 3))
    # Changed on the way and signed again (with the app's own secret: a signature proves who
    # sent a body, the ledger that it is what the platform delivered).
    tampered = (two[0], two[1].replace(b'"Ada 2"', b'"Eve 2"'))
    assert tampered[1] != two[1]

    with caplog.at_level(logging.WARNING, logger="portability.receiver"):
        for message in (one, tampered, three):
            await post(sender, message)

    assert receiver.stats().verification_failures == 0
    # The tampered delta and every one after it: the receiver goes on from its own value.
    assert mismatches(receiver) == 2
    head = receiver.ledger_head(CONSENT_ID)
    assert head is not None
    assert (head.events, head.deltas) == (3, 3)
    assert head.head != platform.head
    [first_warning, *_] = [r for r in caplog.records if "ledger mismatch" in r.getMessage()]
    text = first_warning.getMessage()
    assert CONSENT_ID in text
    assert "delta 2" in text
    assert json.loads(two[1])["data"]["deltas"][0]["ledger"] in text


async def test_a_missing_delta_breaks_the_chain(receiver: ReceivingApp, sender: Sender) -> None:
    platform = Platform()
    one, _lost, three = (platform.deltas([delivery(n)]) for n in (1, 2, 3))

    await post(sender, one)
    await post(sender, three)

    assert mismatches(receiver) == 1
    assert receiver.stats().gaps_detected == 1
    head = receiver.ledger_head(CONSENT_ID)
    assert head is not None
    assert (head.events, head.head != platform.head) == (2, True)


async def test_a_reordered_pair_breaks_the_chain(receiver: ReceivingApp, sender: Sender) -> None:
    platform = Platform()
    one, two, three = (platform.deltas([delivery(n)]) for n in (1, 2, 3))

    for message in (one, three, two):
        await post(sender, message)

    assert mismatches(receiver) == 2
    head = receiver.ledger_head(CONSENT_ID)
    assert head is not None
    assert head.events == 3
    assert head.head != platform.head


async def test_deltas_without_a_ledger_are_unchained(
    receiver: ReceivingApp, sender: Sender
) -> None:
    platform = Platform()
    await post(sender, platform.deltas([delivery(1)]))
    # A replay's deltas carry no ledger value: counted, not chained, the next one still fits.
    replayed = head_delta_event([delivery_head(delivery(2)), delivery_head(delivery(3))])
    await post(sender, replayed)
    await post(sender, replayed)  # its duplicates are not counted again

    stats = receiver.stats()
    assert (stats.ledger_unchained, stats.ledger_mismatches) == (2, 0)
    head = receiver.ledger_head(CONSENT_ID)
    assert head is not None
    assert (head.events, head.head) == (1, platform.head)


async def test_without_retaining_deltas_duplicates_still_do_not_extend(
    secret: str, sender: Sender
) -> None:
    lean = ReceivingApp(retain_deltas=False)
    lean.add_app(APP_ID, secret)
    platform = Platform()
    messages = [platform.deltas([delivery(1), delivery(2)]), platform.deltas([delivery(3)])]
    async with run_receiver(lean) as url:
        other = Sender(sender.session, url, secret)
        for message in (*messages, messages[0]):
            await post(other, message)

    head = lean.ledger_head(CONSENT_ID)
    assert head is not None
    assert (head.head, head.events, lean.stats().ledger_mismatches) == (platform.head, 3, 0)


def test_the_documented_example_computes_the_same_chain() -> None:
    snippet = EXAMPLE.read_text(encoding="utf-8")
    assert f"```python\n{snippet}```" in (DOCS / "webhooks.md").read_text(encoding="utf-8")
    namespace: dict[str, Any] = {}
    exec(compile(snippet, str(EXAMPLE), "exec"), namespace)  # noqa: S102 - our own example
    platform = Platform()
    bodies = [
        platform.deltas([delivery(1), delivery(2)])[1],
        platform.notification(page(1, True))[1],
        platform.deltas([delivery(3)])[1],
        platform.notification(removal())[1],
    ]

    app_ledger = namespace["Ledger"](CONSENT_ID)
    verdicts = []
    for body in bodies:
        event = json.loads(body)
        if event["type"] == "portability.delta":
            verdicts += [app_ledger.add_delta(delta) for delta in event["data"]["deltas"]]
        else:
            verdicts.append(app_ledger.add_event(event))

    assert verdicts == [True] * 5
    assert (app_ledger.head, app_ledger.events) == (platform.head, 5)
    # A changed delta is caught.
    event = json.loads(bodies[2])
    event["data"]["deltas"][0]["record"]["bio"] = "changed"
    assert namespace["Ledger"](CONSENT_ID).add_delta(event["data"]["deltas"][0]) is False


def test_bodies_with_ledger_values_match_the_schema() -> None:
    """Every field sent is described (the closed copy), and a value must be 64 hex digits."""
    platform = Platform()
    documents = [
        json.loads(platform.deltas([delivery(1), delivery(2)])[1]),
        json.loads(platform.notification(page(1, True))[1]),
        json.loads(platform.notification(removal())[1]),
    ]
    for document in documents:
        assert_valid(document)
    broken = documents[0]
    broken["data"]["deltas"][0]["ledger"] = "ABC"
    assert_invalid(broken)
