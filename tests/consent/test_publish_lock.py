"""The outbox's publishing lock, and two relays on one store (SQLite and PostgreSQL).

- The lock: one holder; the holder is named; a released or lost lock is taken by another.
- Two relays in one process on separate connections, as ``pipeline`` and ``api`` run them:
  one publishes, the other stands by; every outbox row reaches Kafka exactly once; a
  graceful stop hands over at once. (A SIGKILLed holder: ``test_relay_failover``.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from consent.relay_helpers import expected_ids, published_ids, unpublished
from portability.consent import (
    AppView,
    ConsentService,
    OutboxRelay,
    create_store_engine,
)
from portability.consent.locks import PUBLISH_LOCK_KEY, PublishLock, publish_lock
from portability.consent.transfer_requests import TransferStore
from portability.runtime import Runtime
from waiting import wait_until


@pytest.fixture
def second_engine(engine: Engine) -> Iterator[Engine]:
    """Another engine on the same store: another process's connections, as far as locks go."""
    other = create_store_engine(engine.url.render_as_string(hide_password=False))
    yield other
    other.dispose()


@pytest.fixture
def locks(engine: Engine, second_engine: Engine) -> Iterator[tuple[PublishLock, PublishLock]]:
    first, second = publish_lock(engine, "relay one"), publish_lock(second_engine, "relay two")
    yield first, second
    first.release()
    second.release()


def test_one_holder_named_and_a_released_lock_is_taken(
    locks: tuple[PublishLock, PublishLock],
) -> None:
    first, second = locks

    assert first.acquire()
    assert first.acquire()  # held already: still true
    assert not second.acquire()
    assert "relay one" in (second.holder() or "")
    assert first.verify()
    assert not second.verify()

    first.release()
    assert not first.verify()
    assert second.acquire()
    assert not first.acquire()
    assert "relay two" in (first.holder() or "")


def test_a_deleted_lock_file_is_a_lost_lock(tmp_path: Path) -> None:
    """Someone removes the file: a second relay may lock a new one, so the first stops."""
    engine = create_store_engine(f"sqlite:///{tmp_path / 'consents.db'}")
    first, second = publish_lock(engine, "relay one"), publish_lock(engine, "relay two")
    try:
        assert first.acquire()
        (tmp_path / "consents.db.relay.lock").unlink()
        assert second.acquire()
        assert not first.verify()
        assert second.verify()
    finally:
        first.release()
        second.release()
        engine.dispose()


def test_a_terminated_postgres_session_is_a_lost_lock(postgres_url: str) -> None:
    """The server ends the holder's session (as when its process dies): another takes over."""
    engine = create_store_engine(postgres_url)
    first, second = publish_lock(engine, "relay one"), publish_lock(engine, "relay two")
    try:
        assert first.acquire()
        assert not second.acquire()
        with engine.begin() as connection:
            terminated = connection.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND classid::bigint = :high AND objid::bigint = :low AND granted "
                    # This session's database only: a parallel test run's other sessions hold
                    # the same key in theirs (advisory locks are per database).
                    "AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"high": PUBLISH_LOCK_KEY >> 32, "low": PUBLISH_LOCK_KEY & 0xFFFFFFFF},
            ).all()
        assert terminated == [(True,)]
        assert not first.verify()
        assert second.acquire()
    finally:
        first.release()
        second.release()
        engine.dispose()


# --- two relays ---------------------------------------------------------------------------------


def change_many_times(engine: Engine, app: AppView, user: str, rounds: int) -> None:
    """One consent changed ``rounds`` times (resyncs), apps and notifications in between."""
    service, transfers = ConsentService(engine), TransferStore(engine)
    consent = service.grant(user, app.app_id, ["post"], initial_snapshot=True)
    for index in range(rounds):
        transfers.request_snapshot(consent.consent_id)
        if index % 5 == 0:
            service.rotate_secret(app.app_id, overlap_s=0)
            other = service.grant(f"{user}-{index}", app.app_id, ["profile"])
            service.revoke(other.consent_id)


async def test_two_relays_publish_every_change_once_and_hand_over_on_stop(
    engine: Engine, second_engine: Engine, runtime: Runtime, app: AppView
) -> None:
    first = OutboxRelay(engine, runtime, takeover_interval_s=0.05)
    second = OutboxRelay(second_engine, runtime, takeover_interval_s=0.05)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    await first.start()
    await second.start()
    runs = [
        asyncio.create_task(first.run(stop_first, poll_interval_s=0.01, limit=7)),
        asyncio.create_task(second.run(stop_second, poll_interval_s=0.01, limit=7)),
    ]
    try:
        await wait_until(lambda: first.publishing or second.publishing, "a relay publishing")
        holder, standby = (first, second) if first.publishing else (second, first)
        await wait_until(lambda: standby.status.holder is not None, "the standby names it")
        assert holder.relay_id in (standby.status.holder or "")

        await asyncio.to_thread(change_many_times, engine, app, "u-first", 40)
        await wait_until(lambda: unpublished(engine) == 0, "the first changes published")
        assert standby.status.published == 0
        assert not standby.publishing

        stop_holder = stop_first if holder is first else stop_second
        stop_holder.set()
        await runs[0 if holder is first else 1]
        await holder.stop()  # releases the lock
        await wait_until(lambda: standby.publishing, "the standby took over")
        await asyncio.to_thread(change_many_times, engine, app, "u-later", 20)
        await wait_until(lambda: unpublished(engine) == 0, "the later changes published")
    finally:
        stop_first.set()
        stop_second.set()
        await asyncio.gather(*runs, return_exceptions=True)
        await first.stop()
        await second.stop()

    expected = expected_ids(engine)
    found = await published_ids(runtime, sum(expected.values()))
    assert found == expected  # every row once: none missing, none twice
    assert holder.status.published + standby.status.published == sum(expected.values())
    assert (holder.status.acquired, standby.status.acquired) == (1, 1)
