"""End to end: platform -> matcher -> delivery worker -> signed webhooks at a real receiver.

One pipeline (real Tansu broker, SQLite consent store with its outbox relay, matcher, delivery
worker, reference receiver over HTTP) is shared by the module, because joining the consumer
groups takes seconds. Each test uses its own users and consents, waits for its own deltas, and
leaves the worker idle, so the tests do not depend on each other or on their order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from pipeline_harness import APP_A, APP_B, Pipeline, pipeline_settings, running_pipeline
from portability.broker import EmbeddedBroker
from portability.matching import delta_id
from portability.webhooks.parsing import Delta
from portability.wire.dead_letters import DeadLetter
from portability.wire.notifications import AUTHORIZATION_REMOVED, event_id
from portability.wire.records import AccountChange
from portability.wire.topics import partition_for_user

# One worker runs the whole module (pytest -n): its tests share the module's pipeline.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.xdist_group("test_pipeline")]

# A Confluent frame naming schema id 99, which no registry knows; and bytes with no frame.
UNKNOWN_SCHEMA = b"\x00\x00\x00\x00\x63garbage"
NOT_FRAMED = b"not framed"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipeline(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    settings = pipeline_settings(tmp_path_factory.mktemp("pipeline"))
    async with running_pipeline(settings, broker.bootstrap) as running:
        yield running


def ids(changes: list[AccountChange]) -> list[str]:
    return [change["change_id"] for change in changes]


def sequences(deltas: list[Delta]) -> list[int]:
    return [delta.sequence for delta in deltas]


def assert_clean(p: Pipeline) -> None:
    """What must hold after every scenario: all verified, nothing twice, no gaps."""
    stats = p.receiver.stats()
    assert stats.requests > 0
    assert stats.verification_failures == 0
    assert stats.duplicates == 0
    assert stats.gaps_detected == 0
    assert stats.missing_sequences == 0
    assert stats.malformed_payloads == 0
    assert stats.unknown_app_requests == 0
    every_id = [delta.id for _, delta in p.all_deltas()]
    assert len(every_id) == len(set(every_id)) == stats.deltas_received
    for consent_id in p.receiver.consent_ids():
        assert p.receiver.missing_ranges(consent_id) == []


def partition_mate(p: Pipeline, user: str, prefix: str) -> str:
    """A user id stored in the same partition as ``user``, so the matcher sees both in order."""
    partitions = p.runtime.settings.partitions
    target = partition_for_user(user, partitions)
    return next(
        f"{prefix}{i}"
        for i in range(1000)
        if partition_for_user(f"{prefix}{i}", partitions) == target
    )


async def test_consenting_users_changes_arrive_in_order_and_signed(pipeline: Pipeline) -> None:
    p = pipeline
    to_a = await p.grant("alice", APP_A, ["post", "profile"])
    to_b = await p.grant("alice", APP_B, ["activity"])
    await p.wait_matcher_ready()
    seen_before = p.matcher.stats.changes_seen
    emitted_before = p.matcher.stats.deltas_emitted
    categories = ("post", "profile", "activity", "follow", "direct_message")
    changes = [
        change
        for _ in range(4)
        for user in ("bob", "alice", "carol")
        for change in p.changes(user, *categories)
    ]

    await p.publish(changes)

    want_a = [
        c for c in changes if c["user_id"] == "alice" and c["category"] in {"post", "profile"}
    ]
    want_b = [c for c in changes if c["user_id"] == "alice" and c["category"] == "activity"]
    never = set(ids(changes)) - set(ids(want_a)) - set(ids(want_b))
    assert len(want_a) == 8
    assert len(want_b) == 4
    assert len(never) == 48
    await p.wait_for_changes(to_a.consent_id, ids(want_a))
    await p.wait_for_changes(to_b.consent_id, ids(want_b))
    # Everything published has been through the matcher and the worker: nothing more can come.
    await p.wait_until(
        lambda: p.matcher.stats.changes_seen - seen_before >= len(changes), "matcher caught up"
    )
    await p.wait_idle()
    assert p.matcher.stats.deltas_emitted - emitted_before == len(want_a) + len(want_b)

    for consent, want in ((to_a, want_a), (to_b, want_b)):
        got = p.receiver.deltas(consent.consent_id)
        # Exactly the granted changes, in the order they happened, numbered 1..n as they came.
        assert [d.change_id for d in got] == ids(want)
        assert sequences(got) == list(range(1, len(want) + 1))
        assert [d.id for d in got] == [delta_id(consent.consent_id, c) for c in ids(want)]
        assert [(d.category, d.record_id, d.operation) for d in got] == [
            (c["category"], c["record_id"], c["operation"]) for c in want
        ]
    received = {delta.change_id for _, delta in p.all_deltas()}
    assert not received & never
    # Record ids are unique per user except "profile", which every user has one of.
    received_records = {d.record_id for _, d in p.all_deltas()} - {"profile"}
    assert not received_records & {c["record_id"] for c in changes if c["change_id"] in never}
    assert_clean(p)


async def test_revoked_consent_stops(pipeline: Pipeline) -> None:
    p = pipeline
    dave = await p.grant("dave", APP_A, ["post", "profile"])
    # The marker's user shares dave's partition: once it is matched, so are dave's changes.
    marker_user = partition_mate(p, "dave", "erin")
    marker_consent = await p.grant(marker_user, APP_B, ["post"])
    await p.wait_matcher_ready()
    before = p.changes("dave", "post", "profile", "post")
    first_marker = p.changes(marker_user, "post")
    await p.publish(before + first_marker)
    await p.wait_for_changes(dave.consent_id, ids(before))
    await p.wait_for_changes(marker_consent.consent_id, ids(first_marker))

    revoked = await p.revoke(dave.consent_id)
    assert revoked.revoked_at is not None
    revoked_at: datetime = revoked.revoked_at
    await p.wait_until(
        lambda: p.worker.directory.is_stopped(dave.consent_id), "worker saw the revocation"
    )
    await p.wait_matcher_ready()  # the matcher dropped dave's consent from its index
    emitted_before = p.matcher.stats.deltas_emitted
    after = p.changes("dave", "post", "profile", "post", "profile")
    marker = p.changes(marker_user, "post")
    await p.publish(after + marker)
    await p.wait_for_changes(marker_consent.consent_id, ids(marker))
    await p.wait_idle()

    assert p.matcher.stats.deltas_emitted - emitted_before == 1  # the marker only
    got = p.receiver.deltas(dave.consent_id)
    assert [d.change_id for d in got] == ids(before)
    assert all(d.occurred_at <= revoked_at for d in got)
    assert not {d.change_id for _, d in p.all_deltas()} & set(ids(after))
    marker_got = p.receiver.deltas(marker_consent.consent_id)
    assert [d.change_id for d in marker_got] == ids(first_marker + marker)
    assert sequences(marker_got) == [1, 2]
    # The app was told, once, with the reason and an id stable across redeliveries.
    await p.wait_until(lambda: p.receiver.removal(dave.consent_id) is not None, "removal event")
    removal = p.receiver.removal(dave.consent_id)
    assert removal is not None
    assert removal.reason == "user_revoked"
    assert removal.event_id == event_id(AUTHORIZATION_REMOVED, dave.consent_id, revoked.version)
    assert p.receiver.stats().deltas_after_removal == 0
    assert p.receiver.removal(marker_consent.consent_id) is None
    assert_clean(p)


async def test_expiry_and_disabling_the_app_tell_the_app_why(pipeline: Pipeline) -> None:
    p = pipeline
    app = await asyncio.to_thread(
        p.service.register_app, "Test app C", f"{p.base_url}/webhooks/app-c", "app-c"
    )
    p.receiver.add_app("app-c", app.signing_secret)
    granted_at = datetime.now(UTC)
    expiring = await asyncio.to_thread(
        p.service.grant, "frank", "app-c", ["post"], expires_at=granted_at + timedelta(hours=1)
    )
    lasting = await asyncio.to_thread(p.service.grant, "grace", "app-c", ["post"])
    p.active_consents |= {expiring.consent_id, lasting.consent_id}
    await p.wait_matcher_ready()
    first = p.changes("frank", "post") + p.changes("grace", "post")
    await p.publish(first)
    await p.wait_for_changes(expiring.consent_id, ids(first[:1]))
    await p.wait_for_changes(lasting.consent_id, ids(first[1:]))

    [expired] = await asyncio.to_thread(p.service.expire_due, granted_at + timedelta(hours=2))
    await asyncio.to_thread(p.service.set_app_enabled, "app-c", False)
    p.active_consents -= {expiring.consent_id, lasting.consent_id}
    await p.wait_until(
        lambda: all(p.receiver.removal(c) for c in (expiring.consent_id, lasting.consent_id)),
        "both removal events",
    )

    assert expired.consent_id == expiring.consent_id
    reasons = {
        consent: removal.reason
        for consent in (expiring.consent_id, lasting.consent_id)
        if (removal := p.receiver.removal(consent)) is not None
    }
    # A disabled app hears that its consents ended, though it gets no more deltas.
    assert reasons == {expiring.consent_id: "expired", lasting.consent_id: "app_disabled"}
    await p.wait_idle()
    assert p.receiver.stats().deltas_after_removal == 0
    assert_clean(p)


async def test_bad_records_are_dead_lettered_and_later_records_still_arrive(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    frank = await p.grant("frank", APP_A, ["post"])
    await p.wait_matcher_ready()
    first = p.changes("frank", "post")
    await p.publish(first)
    await p.wait_for_changes(frank.consent_id, ids(first))
    dead_before = p.matcher.stats.dead_lettered

    await p.publisher.publish_raw("frank", UNKNOWN_SCHEMA)
    await p.publisher.publish_raw("frank", NOT_FRAMED)
    later = p.changes("frank", "post", "post", "post")
    await p.publish(later)

    await p.wait_for_changes(frank.consent_id, ids(later))
    await p.wait_idle()
    got = p.receiver.deltas(frank.consent_id)
    assert [d.change_id for d in got] == ids(first + later)
    assert sequences(got) == [1, 2, 3, 4]  # the bad records took no sequence number
    assert p.matcher.stats.dead_lettered - dead_before == 2

    records = await p.read_topic(p.runtime.topics.dead_letters, at_least=2)
    assert len(records) == 2
    records.sort(key=lambda r: int(DeadLetter.parse_headers(r.headers)["source.offset"]))
    headers = [DeadLetter.parse_headers(r.headers) for r in records]
    for record, header in zip(records, headers, strict=True):
        assert header["source.topic"] == p.runtime.topics.account_changes
        assert header["source.partition"] == str(
            partition_for_user("frank", p.runtime.settings.partitions)
        )
        assert header["source.offset"].isdigit()
        assert header["stage"] == "matcher"
        assert record.key == b"frank"
    assert headers[0]["reason"].startswith("unknown_schema_id: schema id 99 ")
    assert headers[0]["fault"] == "unknown_schema_id"
    assert "magic byte" in headers[1]["reason"]
    assert headers[1]["fault"] == "not_framed"
    # The original bytes are kept untouched, for inspection and replay.
    assert [r.value for r in records] == [UNKNOWN_SCHEMA, NOT_FRAMED]
    assert int(headers[1]["source.offset"]) == int(headers[0]["source.offset"]) + 1
    assert_clean(p)


async def test_failed_webhook_is_retried_and_delivered_once(pipeline: Pipeline) -> None:
    p = pipeline
    grace = await p.grant("grace", APP_B, ["profile"])
    await p.wait_matcher_ready()
    await p.wait_idle()  # no other delivery may take the injected failures
    retries_before = p.worker.stats.retries
    injected_before = p.receiver.stats().injected_failures
    worker_dead_before = p.worker.stats.dead_lettered

    p.receiver.fail_next(2, status=503)
    change = p.changes("grace", "profile")
    await p.publish(change)

    await p.wait_for_changes(grace.consent_id, ids(change))
    await p.wait_idle()
    got = p.receiver.deltas(grace.consent_id)
    assert [(d.change_id, d.sequence) for d in got] == [(change[0]["change_id"], 1)]
    assert p.receiver.stats().injected_failures - injected_before == 2
    assert p.worker.stats.retries - retries_before >= 2
    assert p.worker.stats.dead_lettered == worker_dead_before
    assert_clean(p)


async def test_matcher_restart_continues_sequences(pipeline: Pipeline) -> None:
    p = pipeline
    heidi = await p.grant("heidi", APP_A, ["post", "profile"])
    await p.wait_matcher_ready()
    before = p.changes("heidi", "post", "profile", "post", "post", "profile")
    await p.publish(before)
    await p.wait_for_changes(heidi.consent_id, ids(before))
    await p.wait_idle()

    old = await p.restart_matcher()
    assert p.matcher is not old
    await p.wait_matcher_ready()
    after = p.changes("heidi", "post", "post", "profile", "post", "profile")
    await p.publish(after)
    await p.wait_for_changes(heidi.consent_id, ids(after))
    await p.wait_idle()

    got = p.receiver.deltas(heidi.consent_id)
    assert [d.change_id for d in got] == ids(before + after)
    assert sequences(got) == list(range(1, 11))
    assert [d.id for d in got] == [delta_id(heidi.consent_id, c) for c in ids(before + after)]
    # The new matcher resumed from the checkpoint: it matched nothing the old one had.
    assert p.matcher.stats.deltas_emitted == len(after)
    assert old.stats.deltas_emitted >= len(before)
    assert_clean(p)
