"""The message log's retention: old messages, attempts and disclosed records go, new ones stay.

The writer sweeps when it starts (and hourly); :meth:`MessageLogWriter.sweep` is the same
sweep on demand. Messages count from their first attempt, disclosed records from delivery,
each against its own setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pydantic
import pytest
from sqlalchemy.engine import Engine

from fresh_stores import fresh_store
from messages.writer_helpers import (
    T0,
    attempts,
    disclosed,
    entry,
    messages,
    ok_entry,
    running_writer,
)
from pipeline_harness import pipeline_settings
from portability.messages.storing import store_entries
from portability.runtime import Runtime
from portability.settings import Settings
from portability.wire.delivery_log import DeliveryLogEntry
from waiting import wait_until

DAY = timedelta(days=1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Short group timeouts (see test_writer); the default retentions (30 and 1095 days)."""
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


def _history(
    message_id: str, first_at: datetime, *, last_at: datetime | None = None
) -> list[DeliveryLogEntry]:
    """A failed attempt at ``first_at``, then a success (a second later, or at ``last_at``)."""
    return [
        entry(message_id=message_id, attempted_at=first_at),
        ok_entry(message_id=message_id, at=last_at or first_at + timedelta(seconds=1)),
    ]


async def test_the_sweep_deletes_by_age_and_keeps_the_rest(runtime: Runtime, store: Engine) -> None:
    now = [T0]
    store_entries(
        store,
        [
            *_history("msg_recent", T0 - 10 * DAY),
            *_history("msg_month", T0 - 40 * DAY),  # log gone, disclosure kept
            *_history("msg_years", T0 - 4 * 365 * DAY),  # both gone
            # First tried 31 days ago, delivered yesterday: counted from its first attempt.
            *_history("msg_long_retry", T0 - 31 * DAY, last_at=T0 - DAY),
        ],
    )

    async with running_writer(runtime, store, clock=lambda: now[0]) as writer:
        await wait_until(lambda: writer.stats.sweeps == 1, "the sweep at start")
        assert [m.message_id for m in messages(store)] == ["msg_recent"]
        assert {a.message_id for a in attempts(store)} == {"msg_recent"}
        assert (writer.stats.swept_messages, writer.stats.swept_attempts) == (3, 6)
        assert {r.message_id for r in disclosed(store)} == {
            "msg_recent",
            "msg_month",
            "msg_long_retry",
        }
        assert writer.stats.swept_disclosed_records == 2

        now[0] = T0 + 25 * DAY
        counts = await writer.sweep()
        assert (counts.messages, counts.attempts, counts.disclosed_records) == (1, 2, 0)
        assert messages(store) == []
        assert len(disclosed(store)) == 6

        again = await writer.sweep()  # nothing left to delete: a no-op
        assert (again.messages, again.attempts, again.disclosed_records) == (0, 0, 0)


def test_retention_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="message_retention_days"):
        Settings(data_dir=tmp_path, message_retention_days=0)
    with pytest.raises(pydantic.ValidationError, match="disclosure_retention_days"):
        Settings(data_dir=tmp_path, disclosure_retention_days=-1)
