"""The disclosure report's query, on SQLite and PostgreSQL: sums per app, consents and how
they ended, and record pages that are complete and stable under later writes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from fresh_stores import fresh_store
from messages.disclosure_helpers import (
    ARCHIVE,
    FEED,
    IDLE,
    OTHER_USER,
    T0,
    USER,
    disclose,
    seed_history,
)
from portability.consent import ConsentService
from portability.messages.disclosure_report import (
    DisclosedRecord,
    DisclosureCursorError,
    DisclosureRequestError,
    RecordCursor,
)
from portability.messages.disclosures import DisclosureReports

PAGED_USER = "u-paged"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A store at the current schema with no rows (``fresh_stores``)."""
    yield from fresh_store(request, tmp_path)


@pytest.fixture
def service(store_engine: Engine) -> ConsentService:
    return ConsentService(store_engine)


@pytest.fixture
def reports(store_engine: Engine, service: ConsentService) -> DisclosureReports:
    return DisclosureReports(store_engine, service)


def test_each_app_is_summed_up_with_its_consents(
    store_engine: Engine, service: ConsentService, reports: DisclosureReports
) -> None:
    history = seed_history(store_engine, service)

    report = reports.report(USER)

    assert [app.app_id for app in report.apps] == [ARCHIVE, FEED, IDLE]
    archive, feed, idle = report.apps
    assert archive.app_name == "Archive Pal"
    assert archive.categories == ["profile", "post"]
    assert archive.records_by_category == {"profile": 1, "post": 3}
    assert archive.record_count == 4
    assert archive.delivery_count == 6  # three in the snapshot page, three deltas
    assert archive.message_count == 4
    assert archive.first_delivered_at == T0
    assert archive.last_delivered_at == T0 + timedelta(minutes=3)
    assert archive.policy_versions == ["2026-01", "2026-02"]
    [consent] = archive.consents
    assert (consent.consent_id, consent.status, consent.ended_at) == (
        history.archive_consent,
        "active",
        None,
    )
    assert consent.removal_reason is None
    assert consent.categories == ["profile", "post"]
    [revoked] = feed.consents
    assert (revoked.status, revoked.removal_reason) == ("revoked", "user_revoked")
    assert revoked.ended_at == T0 + timedelta(hours=1)
    assert (feed.record_count, feed.delivery_count) == (1, 1)
    # An app that holds a consent but received nothing yet is listed, with nothing counted.
    assert idle.record_count == idle.delivery_count == idle.message_count == 0
    assert (idle.first_delivered_at, idle.categories, idle.policy_versions) == (None, [], [])
    assert [c.consent_id for c in idle.consents] == [history.idle_consent]
    assert report.records is None


def test_another_users_records_and_consents_stay_out(
    store_engine: Engine, service: ConsentService, reports: DisclosureReports
) -> None:
    history = seed_history(store_engine, service)

    mine = reports.report(USER, records=True)
    theirs = reports.report(OTHER_USER, records=True)

    assert mine.records is not None
    assert "q1" not in {record.record_id for record in mine.records.items}
    [archive] = theirs.apps
    assert (archive.app_id, archive.record_count) == (ARCHIVE, 1)
    assert [c.consent_id for c in archive.consents] == [history.other_consent]
    assert theirs.records is not None
    assert [r.record_id for r in theirs.records.items] == ["q1"]


def test_an_unknown_user_gets_an_empty_report(reports: DisclosureReports) -> None:
    report = reports.report("nobody", records=True)

    assert report.is_empty
    assert report.apps == []
    assert report.records is not None
    assert (report.records.items, report.records.next_cursor) == ([], None)


def test_the_records_say_which_id_went_where_when(
    store_engine: Engine, service: ConsentService, reports: DisclosureReports
) -> None:
    history = seed_history(store_engine, service)

    page = reports.report(USER, records=True).records

    assert page is not None
    assert page.next_cursor is None
    first_delta = page.items[3]
    assert first_delta == DisclosedRecord(
        delivered_at=T0 + timedelta(minutes=1),
        app_id=ARCHIVE,
        consent_id=history.archive_consent,
        category="post",
        record_id="p1",
        operation="upsert",
        delta_id="dlt_1",
        sequence=1,
        message_id="msg_d1",
        event_type="portability.delta",
        policy_version="2026-01",
    )
    # The snapshot page's records first (one delivery time, by key), then deltas in order.
    assert [(r.message_id, r.record_id) for r in page.items] == [
        ("msg_snapshot", "p1"),
        ("msg_snapshot", "p2"),
        ("msg_snapshot", "me"),
        ("msg_d1", "p1"),
        ("msg_d2", "p3"),
        ("msg_d3", "p2"),
        ("msg_feed", "a1"),
    ]
    assert {r.delta_id for r in page.items[:3]} == {""}


def _seed_paged(engine: Engine, count: int) -> None:
    # Several records per delivery time, and times with microseconds: the cursor must keep
    # both the order among equal times and the full precision.
    for index in range(count):
        disclose(
            engine,
            message_id=f"msg_{index % 3}",
            app_id=ARCHIVE,
            consent_id="cns_paged",
            user_id=PAGED_USER,
            category="post",
            record_id=f"r{index:02d}",
            delivered_at=T0 + timedelta(seconds=index // 4, microseconds=123457),
            delta_id=f"dlt_{index:02d}",
            sequence=index + 1,
        )


def _all_pages(reports: DisclosureReports, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    for _ in range(100):  # bounded: far more pages than any test writes
        page = reports.report(PAGED_USER, records=True, cursor=cursor, limit=limit).records
        assert page is not None
        pages.append([record.record_id for record in page.items])
        cursor = page.next_cursor
        if cursor is None:
            return pages
    raise AssertionError("the pages never ended")


def test_record_pages_are_complete_and_in_order(
    store_engine: Engine, reports: DisclosureReports
) -> None:
    _seed_paged(store_engine, 23)
    everything = reports.report(PAGED_USER, records=True, limit=1000).records
    assert everything is not None

    pages = _all_pages(reports, limit=5)

    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    flat = [record_id for page in pages for record_id in page]
    assert flat == [record.record_id for record in everything.items]
    assert sorted(flat) == [f"r{i:02d}" for i in range(23)]
    keys = [(r.delivered_at, r.message_id, r.record_id) for r in everything.items]
    assert keys == sorted(keys)
    # A page that ends exactly at the last record says there is no next one.
    assert [len(page) for page in _all_pages(reports, limit=23)] == [23]


def test_a_page_stays_the_same_when_records_are_written_before_or_after_it(
    store_engine: Engine, reports: DisclosureReports
) -> None:
    _seed_paged(store_engine, 12)
    first = reports.report(PAGED_USER, records=True, limit=4).records
    assert first is not None
    assert first.next_cursor is not None
    second = reports.report(PAGED_USER, records=True, cursor=first.next_cursor, limit=4).records

    for delivered_at, record_id in (
        (T0 - timedelta(hours=1), "early"),
        (T0 + timedelta(hours=1), "late"),
    ):
        disclose(
            store_engine,
            message_id="msg_new",
            app_id=ARCHIVE,
            consent_id="cns_paged",
            user_id=PAGED_USER,
            category="post",
            record_id=record_id,
            delivered_at=delivered_at,
        )
    again = reports.report(PAGED_USER, records=True, cursor=first.next_cursor, limit=4).records

    assert again == second  # an offset would have shifted it by the early record
    assert _all_pages(reports, limit=4)[-1][-1] == "late"


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "d1.!!!",
        "d1." + "e30",  # "{}"
        RecordCursor(T0, "m", "post", "r", "d").encode()[:-3],
        "d1.WyIyMDI2LTAzLTAxVDEwOjAwOjAwIiwibSIsInBvc3QiLCJyIiwiZCJd",  # a naive time
    ],
)
def test_a_cursor_not_handed_out_is_refused_saying_what_to_pass(
    reports: DisclosureReports, cursor: str
) -> None:
    with pytest.raises(DisclosureCursorError, match="next_cursor of the previous page"):
        reports.report(USER, records=True, cursor=cursor)


def test_a_limit_out_of_range_is_refused(reports: DisclosureReports) -> None:
    for limit in (0, 1001):
        with pytest.raises(DisclosureRequestError, match="limit must be 1 to 1000"):
            reports.report(USER, records=True, limit=limit)


def test_an_empty_user_id_is_refused(reports: DisclosureReports) -> None:
    with pytest.raises(DisclosureRequestError, match="user_id is empty"):
        reports.report("")


def test_a_cursor_round_trips_with_full_precision() -> None:
    cursor = RecordCursor(T0 + timedelta(microseconds=7), "msg", "post", "r/1 é", "")

    assert RecordCursor.decode(cursor.encode()) == cursor


def test_the_report_is_the_same_when_asked_again(
    store_engine: Engine, service: ConsentService, reports: DisclosureReports
) -> None:
    seed_history(store_engine, service)

    first = reports.report(USER, records=True, limit=3)
    again = reports.report(USER, records=True, limit=3)

    assert first.model_dump(exclude={"generated_at"}) == again.model_dump(exclude={"generated_at"})
