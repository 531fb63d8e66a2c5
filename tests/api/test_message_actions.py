"""Resend and test event through the API, on the real broker and a real receiving endpoint.

A resend must reach the app with the same ``webhook-id`` and the same bytes as the worker
sent (the receiver verifies the signature with the unmodified ``standardwebhooks``), be
logged with origin ``resend`` and the next attempt number, and be refused, saying why, when
it cannot be the same message (records tampered with or gone), or must not be sent (consent
ended, app disabled). A test event reaches the endpoint signed and answers the outcome.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from api.message_log_helpers import log_entry
from api.message_stack import MessageStack, closed_port_url, logged_records, message_stack
from portability.broker import EmbeddedBroker
from portability.messages.storing import store_entries
from portability.webhooks.payload import notification_event, render_change, render_delta
from portability.wire.delivery_log import LoggedSource
from portability.wire.notifications import SnapshotPage, authorization_removed, snapshot_page
from portability.wire.records import DeliveryRecord
from replay_harness import OPERATOR_TOKEN, PLATFORM_TOKEN, delivery

AS_OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
AS_PLATFORM = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}


@pytest.fixture
async def stack(broker: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[MessageStack]:
    async with message_stack(broker, tmp_path) as running:
        yield running


def _rendered(record: DeliveryRecord) -> DeliveryRecord:
    """The record as the matcher writes it: rendered once, with its policy version."""
    change_json = render_change(record["change"], "2026-11")
    rendered = render_delta(record["delta_id"], record["sequence"], change_json)
    return {**record, "rendered": rendered, "policy_version": "2026-11"}


@pytest.mark.parametrize("rendered", [False, True], ids=["decoded", "read-as-head"])
async def test_a_resend_carries_the_same_id_and_bytes_and_is_logged(
    stack: MessageStack, rendered: bool
) -> None:
    app = stack.register("app-resend")
    consent = stack.grant(app.app_id)
    records = [delivery(consent, app.app_id, s) for s in range(1, 4)]
    if rendered:
        records = [_rendered(r) for r in records]
    message_id, body, sources = await stack.deliver(records)
    stack.log_sent(app.app_id, consent, message_id, body, sources, records=logged_records(records))
    path = f"/v1/apps/{app.app_id}/messages/{message_id}/resend"

    status, first = await stack.call("POST", path, app.headers)
    assert status == 200, first
    status, second = await stack.call("POST", path, AS_OPERATOR)
    assert status == 200, second

    assert (first["ok"], first["status"], first["reason"]) == (True, 204, "")
    assert (first["message_id"], first["origin"], first["logged"]) == (message_id, "resend", True)
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert first["endpoint_url"] == f"{stack.receiver_url}/webhooks/{app.app_id}"
    assert first["duration_ms"] >= 0
    # The receiver verified both (standardwebhooks) and got the worker's bytes twice.
    received = stack.received(message_id)
    assert [event.body for event in received] == [body, body]
    assert received[1].duplicates == 3
    assert stack.receiver.stats().verification_failures == 0
    # Logged as the worker's entries are: the message's description, the resend's attempt.
    entries = await stack.logged(2)
    assert [(e["origin"], e["attempt"], e["ok"], e["status"]) for e in entries] == [
        ("resend", 1, True, 204),
        ("resend", 2, True, 204),
    ]
    entry = entries[0]
    assert (entry["message_id"], entry["app_id"], entry["consent_id"]) == (
        message_id,
        app.app_id,
        consent,
    )
    assert (entry["first_sequence"], entry["last_sequence"]) == (1, 3)
    assert entry["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert entry["size"] == len(body)
    assert entry["records"] == logged_records(records)
    assert entry["sources"] == sources
    # Stored as the writer stores them, they complete the message's attempt log.
    store_entries(stack.engine, entries)
    status, detail = await stack.call(
        "GET", f"/v1/apps/{app.app_id}/messages/{message_id}", app.headers
    )
    assert status == 200, detail
    assert detail["outcome"] == "delivered"
    assert [(a["origin"], a["attempt"]) for a in detail["attempt_log"]] == [
        ("worker", 1),
        ("resend", 1),
        ("resend", 2),
    ]


async def test_notifications_are_resent_and_the_removal_notice_after_the_end(
    stack: MessageStack,
) -> None:
    app = stack.register("app-notes")
    consent = stack.grant(app.app_id)
    page_records = b'[{"category":"post","record_id":"p1"},{"category":"profile","record_id":"me"}]'
    page = snapshot_page(
        consent_id=consent,
        app_id=app.app_id,
        user_id="u1",
        page=SnapshotPage("trf_1", 1, 1, True, 0, 42),
        categories=["post", "profile"],
        policy_version="2026-11",
        records=page_records,
        record_count=2,
        taken_at=datetime.now(UTC),
    )
    removal = authorization_removed(
        consent_id=consent,
        app_id=app.app_id,
        user_id="u1",
        reason="user_revoked",
        removed_at=datetime.now(UTC),
        version=7,
    )
    logged: dict[str, bytes] = {}
    for notification, extra in (
        (page, {"snapshot_epoch": 1}),
        (removal, {"removal_reason": "user_revoked"}),
    ):
        sources = await stack.notify(notification)
        message_id, body = notification_event(notification)
        stack.log_sent(
            app.app_id,
            consent,
            message_id,
            body,
            sources,
            event_type=notification["event_type"],
            first_sequence=None,
            last_sequence=None,
            **extra,
        )
        logged[notification["event_type"]] = body

    status, answer = await stack.call(
        "POST", f"/v1/apps/{app.app_id}/messages/{page['event_id']}/resend", app.headers
    )
    assert status == 200, answer
    assert answer["ok"] is True
    (entry,) = await stack.logged(1)
    assert entry["snapshot_epoch"] == 1
    assert [(r["record_id"], r["category"], r["operation"]) for r in entry["records"]] == [
        ("p1", "post", "snapshot"),
        ("me", "profile", "snapshot"),
    ]
    assert {r["policy_version"] for r in entry["records"]} == {"2026-11"}

    stack.service.revoke(consent, reason="user_revoked")
    refused_status, refused = await stack.call(
        "POST", f"/v1/apps/{app.app_id}/messages/{page['event_id']}/resend", app.headers
    )
    assert refused_status == 409, refused
    assert refused["error"] == "consent_ended"
    assert "revoked" in refused["message"]
    # The notice that the consent ended carries no data: it may be resent.
    status, answer = await stack.call(
        "POST", f"/v1/apps/{app.app_id}/messages/{removal['event_id']}/resend", app.headers
    )
    assert status == 200, answer
    assert [e.body for e in stack.received(removal["event_id"])] == [
        logged["authorization.removed"]
    ]


async def test_a_message_whose_records_changed_or_went_is_refused(stack: MessageStack) -> None:
    app = stack.register("app-tamper")
    consent = stack.grant(app.app_id)
    records = [delivery(consent, app.app_id, s) for s in range(1, 3)]
    message_id, body, sources = await stack.deliver(records)
    other_id, other_body, other_sources = await stack.deliver([delivery(consent, app.app_id, 3)])

    async def post(message: str) -> tuple[int, Any]:
        path = f"/v1/apps/{app.app_id}/messages/{message}/resend"
        return await stack.call("POST", path, app.headers)

    # The logged hash is not the body's: the log or the topic was tampered with.
    stack.log_sent(app.app_id, consent, message_id, body + b" ", sources)
    status, answer = await post(message_id)
    assert (status, answer["error"]) == (409, "body_mismatch"), answer
    assert "replay" in answer["message"]
    # Its sources name another message's record.
    stack.log_sent(app.app_id, consent, other_id, other_body, sources[:1])
    status, answer = await post(other_id)
    assert (status, answer["error"]) == (409, "body_mismatch"), answer
    # A partition that is not there, an offset past the end, no sources at all.
    partition = sources[0]["partition"]
    for name, where in (
        ("msg_gone_partition", [LoggedSource(topic=sources[0]["topic"], partition=99, offset=0)]),
        (
            "msg_gone_offset",
            [LoggedSource(topic=sources[0]["topic"], partition=partition, offset=10_000)],
        ),
        ("msg_no_sources", []),
    ):
        stack.log_sent(app.app_id, consent, name, body, where)
        status, answer = await post(name)
        assert (status, answer["error"]) == (410, "records_gone"), (name, answer)
        assert "replay" in answer["message"]
    # A topic that is not a delivery topic is never read.
    stack.log_sent(
        app.app_id,
        consent,
        "msg_elsewhere",
        body,
        [LoggedSource(topic=stack.runtime.topics.consents, partition=0, offset=0)],
    )
    status, answer = await post("msg_elsewhere")
    assert (status, answer["error"]) == (409, "source_unreadable"), answer
    assert stack.events == []  # nothing refused was sent
    assert other_sources  # (its own record stays where it was)


async def test_who_may_resend_and_what_is_refused(stack: MessageStack) -> None:
    owner, intruder = stack.register("app-owner"), stack.register("app-intruder")
    consent = stack.grant(owner.app_id)
    message_id, body, sources = await stack.deliver([delivery(consent, owner.app_id, 1)])
    stack.log_sent(owner.app_id, consent, message_id, body, sources)
    store_entries(
        stack.engine,
        [
            log_entry(
                "msg_ping_x",
                owner.app_id,
                consent_id="",
                event_type="portability.ping",
                origin="test",
            )
        ],
    )
    path = f"/v1/apps/{owner.app_id}/messages/{message_id}/resend"

    assert (await stack.call("POST", path, intruder.headers))[0] == 404
    other_path = f"/v1/apps/{intruder.app_id}/messages/{message_id}/resend"
    assert (await stack.call("POST", other_path, intruder.headers))[0] == 404
    assert (await stack.call("POST", path, AS_PLATFORM))[0] == 403
    status, answer = await stack.call(
        "POST", f"/v1/apps/{owner.app_id}/messages/msg_ping_x/resend", owner.headers
    )
    assert (status, answer["error"]) == (409, "not_resendable"), answer
    assert "test-event" in answer["message"]

    stack.service.set_app_enabled(owner.app_id, False)
    for route in (path, f"/v1/apps/{owner.app_id}/test-event"):
        status, answer = await stack.call("POST", route, owner.headers)
        assert (status, answer["error"]) == (409, "app_disabled"), answer
        assert "enable" in answer["message"]
    assert stack.events == []


async def test_a_test_event_reaches_the_endpoint_signed_and_is_logged(stack: MessageStack) -> None:
    app = stack.register("app-ping")

    status, answer = await stack.call("POST", f"/v1/apps/{app.app_id}/test-event", app.headers)

    assert status == 200, answer
    assert (answer["ok"], answer["status"], answer["origin"], answer["attempt"]) == (
        True,
        204,
        "test",
        1,
    )
    (event,) = stack.received(answer["message_id"])
    assert event.event_type == "portability.ping"
    assert stack.receiver.stats().verification_failures == 0
    (entry,) = await stack.logged(1)
    assert (entry["message_id"], entry["origin"], entry["event_type"]) == (
        answer["message_id"],
        "test",
        "portability.ping",
    )
    assert (entry["consent_id"], entry["user_id"], entry["records"], entry["sources"]) == (
        "",
        "",
        [],
        [],
    )
    assert entry["body_sha256"] == hashlib.sha256(event.body).hexdigest()
    # Each test event is a new message.
    status, again = await stack.call("POST", f"/v1/apps/{app.app_id}/test-event", AS_OPERATOR)
    assert status == 200, again
    assert again["message_id"] != answer["message_id"]


async def test_a_refused_endpoint_answers_the_failure_with_its_reason(stack: MessageStack) -> None:
    app = stack.register("app-closed", url=closed_port_url())
    pending = stack.register("app-pending", approve=False)

    status, answer = await stack.call("POST", f"/v1/apps/{app.app_id}/test-event", app.headers)

    assert status == 200, answer
    assert (answer["ok"], answer["status"]) == (False, None)
    assert "connection refused" in answer["reason"]
    (entry,) = await stack.logged(1)
    assert (entry["ok"], entry["reason"]) == (False, answer["reason"])
    status, answer = await stack.call(
        "POST", f"/v1/apps/{pending.app_id}/test-event", pending.headers
    )
    assert (status, answer["error"]) == (409, "app_disabled"), answer
    assert "pending" in answer["message"]
