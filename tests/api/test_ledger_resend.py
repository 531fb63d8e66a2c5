"""A resend builds the ledger values its message was first sent with, on the real broker.

The log keeps a message's chain values (before it, after it, the counts); a resend reads the
message's records again and computes each value from the one before, so the body is the
first one byte for byte, and the reference receiver (which verifies the ledger) finds its
chain intact. A logged value that does not lead to the body is refused like any other body
that is not the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from api.message_stack import MessageStack, logged_records, message_stack
from portability.broker import EmbeddedBroker
from portability.webhooks import ledger
from portability.webhooks.payload import (
    delivery_head,
    head_delta_event,
    ledger_digest,
    notification_digest,
    notification_event,
    render_change,
    render_delta,
)
from portability.wire.delivery_log import LoggedLedger
from portability.wire.notifications import SnapshotPage, snapshot_page
from portability.wire.records import DeliveryRecord
from replay_harness import delivery


@pytest.fixture
async def stack(broker: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[MessageStack]:
    async with message_stack(broker, tmp_path) as running:
        yield running


def _as_matched(record: DeliveryRecord, *, digest: bool) -> DeliveryRecord:
    """The record as the matcher writes it: rendered, with its ledger digest or without (a
    matcher that predates the ledger: the digest is computed from the rendering)."""
    rendered = render_delta(
        record["delta_id"], record["sequence"], render_change(record["change"], "2026-11")
    )
    matched: DeliveryRecord = {**record, "rendered": rendered, "policy_version": "2026-11"}
    if digest:
        matched["ledger_digest"] = ledger.delta_digest(
            record["delta_id"], record["sequence"], ledger.change_digest_of_rendered(rendered)
        )
    return matched


@pytest.mark.parametrize("digest", [True, False], ids=["matchers-digest", "computed-digest"])
async def test_a_resent_delta_message_carries_its_ledger_values(
    stack: MessageStack, digest: bool
) -> None:
    app = stack.register("app-chain")
    consent = stack.grant(app.app_id)
    records = [_as_matched(delivery(consent, app.app_id, s), digest=digest) for s in (1, 2, 3)]
    _, _, sources = await stack.deliver(records)
    # The body as the worker sent it: each delta ends with the chain's value after it.
    before = ledger.start(consent)
    values, value = [], before
    for record in records:
        value = ledger.extend(value, ledger_digest(delivery_head(record)))
        values.append(value)
    message_id, body = head_delta_event([delivery_head(r) for r in records], values)
    chain = LoggedLedger(before=before, after=value, events=3, deltas=3, pages=0, removals=0)
    stack.log_sent(
        app.app_id,
        consent,
        message_id,
        body,
        sources,
        records=logged_records(records),
        ledger=chain,
    )

    status, answer = await stack.call(
        "POST", f"/v1/apps/{app.app_id}/messages/{message_id}/resend", app.headers
    )

    assert status == 200, answer
    assert answer["ok"] is True
    assert [event.body for event in stack.received(message_id)] == [body]
    assert b'"ledger":"' + values[0].encode() + b'"}' in body
    stats = stack.receiver.stats()
    assert (stats.ledger_mismatches, stats.ledger_unchained) == (0, 0)
    head = stack.receiver.ledger_head(consent)
    assert head == ledger.LedgerHead(value, events=3, deltas=3)
    # The resend's entry repeats the message's chain values.
    (entry,) = await stack.logged(1)
    assert entry["ledger"] == chain
    assert entry["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_a_resent_page_carries_its_ledger_value(stack: MessageStack) -> None:
    app = stack.register("app-page")
    consent = stack.grant(app.app_id)
    page = snapshot_page(
        consent_id=consent,
        app_id=app.app_id,
        user_id="u1",
        page=SnapshotPage("trf_1", 1, 1, True, 0, 42),
        categories=["post"],
        policy_version="2026-11",
        records=b'[{"category":"post","record_id":"p1","record":{"caption":"\xc3\xa9t\xc3\xa9"}}]',
        record_count=1,
        taken_at=datetime.now(UTC),
    )
    sources = await stack.notify(page)
    # The page is the consent's third event, after two deltas.
    before = ledger.extend(ledger.extend(ledger.start(consent), "1" * 64), "2" * 64)
    after = ledger.extend(before, notification_digest(page))
    message_id, body = notification_event(page, after)
    chain = LoggedLedger(before=before, after=after, events=3, deltas=2, pages=1, removals=0)
    stack.log_sent(
        app.app_id,
        consent,
        message_id,
        body,
        sources,
        event_type="portability.snapshot",
        first_sequence=None,
        last_sequence=None,
        snapshot_epoch=1,
        ledger=chain,
    )

    status, answer = await stack.call(
        "POST", f"/v1/apps/{app.app_id}/messages/{message_id}/resend", app.headers
    )

    assert status == 200, answer
    assert [event.body for event in stack.received(message_id)] == [body]
    assert (await stack.logged(1))[0]["ledger"] == chain


async def test_a_logged_value_that_does_not_lead_to_the_body_is_refused(
    stack: MessageStack,
) -> None:
    app = stack.register("app-wrong")
    consent = stack.grant(app.app_id)
    records = [_as_matched(delivery(consent, app.app_id, 1), digest=True)]
    _, _, sources = await stack.deliver(records)
    value = ledger.extend(ledger.start(consent), ledger_digest(delivery_head(records[0])))
    message_id, body = head_delta_event([delivery_head(records[0])], [value])
    wrong = LoggedLedger(
        before=ledger.start("another-consent"), after=value, events=1, deltas=1, pages=0, removals=0
    )
    stack.log_sent(app.app_id, consent, message_id, body, sources, ledger=wrong)

    status, answer = await stack.call(
        "POST", f"/v1/apps/{app.app_id}/messages/{message_id}/resend", app.headers
    )

    assert status == 409, answer
    assert answer["error"] == "body_mismatch"
    assert stack.received(message_id) == []
