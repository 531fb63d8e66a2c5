"""The message log's writer on the real broker: entries on ``delivery.log`` become rows.

On SQLite and PostgreSQL (the upsert and the idempotent inserts are each dialect's own): a
failed then successful attempt makes one delivered message with two attempts and its records
disclosed once; an entry read twice is stored once; a garbage record is dead-lettered and the
entries after it are still stored; a database that goes away is waited out.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fresh_stores import fresh_store
from messages.writer_helpers import (
    MESSAGE,
    T0,
    LetterField,
    attempts,
    committed,
    dead_letters,
    disclosed,
    entry,
    letter_fields,
    messages,
    ok_entry,
    produce,
    running_writer,
)
from pipeline_harness import pipeline_settings
from portability.messages import DELIVERED, FAILING
from portability.runtime import Runtime
from portability.settings import Settings
from waiting import wait_until


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The shared test settings, with short group timeouts: the broker holds a group's first
    join for a while that grows with them, and each test's writer joins a new group."""
    return pipeline_settings(tmp_path).model_copy(
        update={
            "kafka_session_timeout_ms": 2000,
            "kafka_heartbeat_interval_ms": 300,
            "kafka_rebalance_timeout_ms": 500,
        }
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    yield from fresh_store(request, tmp_path)


async def test_a_failed_then_ok_attempt_is_one_delivered_message(
    runtime: Runtime, store: Engine
) -> None:
    await produce(runtime, entry(), ok_entry())

    async with running_writer(runtime, store) as writer:
        await wait_until(lambda: writer.stats.entries_stored == 2, "both entries stored")
        await wait_until(lambda: _committed_all(runtime, 2), "offsets committed")

    [message] = messages(store)
    assert (message.message_id, message.outcome, message.attempts) == (MESSAGE, DELIVERED, 2)
    assert (message.created_at, message.last_attempt_at) == (T0, T0 + timedelta(seconds=2))
    assert message.delivered_at == T0 + timedelta(seconds=2)
    assert (message.last_status, message.last_reason) == (200, "")
    assert (message.consent_id, message.user_id, message.record_count) == ("cns_log", "u-log", 2)
    assert (message.first_sequence, message.last_sequence, message.size) == (1, 2, 321)
    assert json.loads(message.sources) == [{"topic": "deliveries", "partition": 0, "offset": 7}]
    assert [(a.origin, a.attempt, a.ok, a.status, a.reason) for a in attempts(store)] == [
        ("worker", 1, False, 503, "http_503"),
        ("worker", 2, True, 200, ""),
    ]
    rows = disclosed(store)
    assert [(r.record_id, r.delta_id, r.sequence) for r in rows] == [
        ("r1", "dlt_r1", 1),
        ("r2", "dlt_r2", 2),
    ]
    assert {(r.app_id, r.user_id, r.delivered_at, r.policy_version) for r in rows} == {
        ("app_log", "u-log", T0 + timedelta(seconds=2), "2026-01")
    }


async def _committed_all(runtime: Runtime, count: int) -> bool:
    return await committed(runtime, runtime.settings.messages_group) == count


async def test_a_message_still_failing_keeps_no_disclosure(runtime: Runtime, store: Engine) -> None:
    later = entry(attempt=2, attempted_at=T0 + timedelta(seconds=5), status=None, reason="timeout")
    await produce(runtime, entry(), later)

    async with running_writer(runtime, store) as writer:
        await wait_until(lambda: writer.stats.entries_stored == 2, "both entries stored")

    [message] = messages(store)
    assert (message.outcome, message.attempts, message.delivered_at) == (FAILING, 2, None)
    assert (message.last_status, message.last_reason) == (None, "timeout")
    assert disclosed(store) == []


async def test_entries_read_twice_are_stored_once(runtime: Runtime, store: Engine) -> None:
    """A second group reads the whole topic again (as after a crash before the commit), and a
    resend's success comes later: attempts are counted once, records disclosed once."""
    first = entry()
    await produce(runtime, first, ok_entry(), first)  # the worker's entry written twice

    async with running_writer(runtime, store) as writer:
        await wait_until(lambda: writer.stats.entries_stored == 3, "the entries stored")
    again = runtime.settings.model_copy(update={"messages_group": f"again-{uuid.uuid4().hex}"})
    rereading = Runtime(again, runtime.topics, runtime.kafka, runtime.codec)
    resend = ok_entry(attempt=1, at=T0 + timedelta(minutes=3), origin="resend")
    await produce(runtime, resend)
    async with running_writer(rereading, store) as writer:
        await wait_until(lambda: writer.stats.entries_stored == 4, "the topic read again")

    [message] = messages(store)
    assert (message.attempts, message.outcome) == (3, DELIVERED)
    assert message.delivered_at == T0 + timedelta(seconds=2)  # the first success
    assert message.last_attempt_at == T0 + timedelta(minutes=3)
    assert [(a.origin, a.attempt) for a in attempts(store)] == [
        ("worker", 1),
        ("worker", 2),
        ("resend", 1),
    ]
    assert len(disclosed(store)) == 2
    assert {r.delivered_at for r in disclosed(store)} == {T0 + timedelta(seconds=2)}


async def test_garbage_is_dead_lettered_and_the_next_entry_stored(
    runtime: Runtime, store: Engine
) -> None:
    too_long = entry(message_id="msg_" + "x" * 100)
    await produce(runtime, b"not an entry", too_long, ok_entry(attempt=1))

    async with running_writer(runtime, store) as writer:
        await wait_until(lambda: writer.stats.entries_stored == 1, "the good entry stored")
        assert writer.stats.dead_lettered == 2

    assert [m.outcome for m in messages(store)] == [DELIVERED]
    letters = [letter_fields(letter) for letter in await dead_letters(runtime, at_least=2)]
    assert {fields[LetterField.STAGE] for fields in letters} == {"messages"}
    assert {fields[LetterField.SOURCE_TOPIC] for fields in letters} == {runtime.topics.delivery_log}
    assert sorted(fields[LetterField.REASON] for fields in letters) == [
        "bad magic byte 110 (expected 0: Confluent framing)",
        "cannot store the entry: message_id longer than 64 characters",
    ]


async def test_a_database_outage_is_waited_out(runtime: Runtime, tmp_path: Path) -> None:
    """The table disappears under the writer (as a database does): it retries, losing
    nothing, and stores the batch once the table is back."""
    from portability.consent import create_store_engine, init_schema

    engine = create_store_engine(f"sqlite:///{tmp_path / 'outage.db'}")
    init_schema(engine)
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE delivery_attempts RENAME TO away"))
    await produce(runtime, entry(), ok_entry())

    async with running_writer(runtime, engine) as writer:
        await wait_until(lambda: writer.stats.store_retries >= 1, "a failed try to store")
        assert writer.stats.entries_stored == 0
        with engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE away RENAME TO delivery_attempts"))
        await wait_until(lambda: writer.stats.entries_stored == 2, "stored once back")

    assert [(m.attempts, m.outcome) for m in messages(engine)] == [(2, DELIVERED)]
    engine.dispose()
