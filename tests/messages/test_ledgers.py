"""The writer keeps each consent's ledger head as delivered, on SQLite and PostgreSQL.

A consent's messages travel on ``delivery.log`` keyed by message id, so their entries reach
the writer in any order: the head only moves forward (more events), only on a delivered
attempt, and a message's chain values are kept with it for resends.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fresh_stores import fresh_store
from messages.writer_helpers import (
    T0,
    entry,
    messages,
    ok_entry,
    produce,
    running_writer,
)
from pipeline_harness import pipeline_settings
from portability.messages import LedgerRow
from portability.messages.ledgers import consent_ledger, delivered_heads
from portability.messages.queries import get_message
from portability.messages.storing import entry_fault, store_entries
from portability.runtime import Runtime
from portability.settings import Settings
from portability.webhooks import ledger
from portability.wire.delivery_log import DeliveryLogEntry, LoggedLedger
from waiting import wait_until

CONSENT = "cns_log"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Short group timeouts, as for the writer's other tests: the writer joins a new group."""
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


def chain(events: int, *, pages: int = 0) -> LoggedLedger:
    """The consent's chain values around its ``events``-th event."""
    before = ledger.start(CONSENT)
    for n in range(1, events):
        before = ledger.extend(before, f"{n:064x}")
    return LoggedLedger(
        before=before,
        after=ledger.extend(before, f"{events:064x}"),
        events=events,
        deltas=events - pages,
        pages=pages,
        removals=0,
    )


def delivered(n: int, **changes: Any) -> DeliveryLogEntry:
    """The delivered attempt at the consent's ``n``-th message (its ``n``-th event)."""
    made = {"message_id": f"msg_{n}", "ledger": chain(n), **changes}
    return ok_entry(at=T0 + timedelta(seconds=n), **made)


def rows(engine: Engine) -> list[LedgerRow]:
    with Session(engine) as session:
        return list(session.exec(select(LedgerRow)))


def test_the_head_only_moves_forward_whatever_the_order(store: Engine) -> None:
    store_entries(store, [delivered(3)])
    store_entries(store, [delivered(2), delivered(1)])  # older messages stored late

    [row] = rows(store)
    assert (row.head, row.events, row.deltas, row.last_message_id) == (
        chain(3)["after"],
        3,
        3,
        "msg_3",
    )
    assert row.updated_at == T0 + timedelta(seconds=3)
    assert (row.app_id, row.user_id) == ("app_log", "u-log")

    # Within one batch too: the furthest of a consent's entries wins, in any order.
    store_entries(store, [delivered(5), delivered(4), delivered(5)])
    assert [(r.events, r.last_message_id) for r in rows(store)] == [(5, "msg_5")]


def test_only_a_delivered_attempt_moves_the_head(store: Engine) -> None:
    store_entries(store, [entry(message_id="msg_1", ledger=chain(1))])  # failed: nothing yet
    assert rows(store) == []
    view = consent_ledger(store, CONSENT, "app_log")
    assert (view.head, view.events, view.updated_at) == (ledger.start(CONSENT), 0, None)

    store_entries(store, [delivered(1)])
    store_entries(store, [entry(message_id="msg_2", ledger=chain(2), attempted_at=T0)])

    view = consent_ledger(store, CONSENT, "app_log")
    assert (view.head, view.events) == (chain(1)["after"], 1)
    assert delivered_heads(store, [CONSENT, "cns_none"]) == {
        CONSENT: chain(1)["after"],
        "cns_none": ledger.start("cns_none"),
    }


def test_counts_follow_the_entry_and_the_message_keeps_its_values(store: Engine) -> None:
    page = ok_entry(
        message_id="evt_page",
        event_type="portability.snapshot",
        ledger=chain(4, pages=1),
        records=[],
    )
    store_entries(store, [delivered(3), page])
    store_entries(store, [ok_entry(message_id="msg_ping", consent_id="", ledger=None)])

    [row] = rows(store)
    assert (row.events, row.deltas, row.pages, row.removals) == (4, 3, 1, 0)
    message, _ = get_message(store, "app_log", "evt_page")
    assert message.ledger == chain(4, pages=1)
    ping, _ = get_message(store, "app_log", "msg_ping")
    assert ping.ledger is None


def test_an_entry_with_a_ledger_value_too_long_is_refused() -> None:
    values = chain(1)
    bad = delivered(1, ledger={**values, "after": values["after"] + "00"})
    assert entry_fault(bad) == "a ledger value longer than 64 characters"
    assert entry_fault(delivered(1)) is None


async def test_the_running_writer_keeps_the_latest_head(runtime: Runtime, store: Engine) -> None:
    await produce(runtime, delivered(2), entry(message_id="msg_1", ledger=chain(1)), delivered(1))

    async with running_writer(runtime, store) as writer:
        await wait_until(lambda: writer.stats.entries_stored == 3, "the entries stored")

    [row] = rows(store)
    assert (row.head, row.events, row.last_message_id) == (chain(2)["after"], 2, "msg_2")
    assert {m.message_id for m in messages(store)} == {"msg_1", "msg_2"}
