"""A user's disclosure report: which apps received which of their records, and when.

GDPR Art. 15 gives a user the right to know the recipients of their data; the platform's
privacy page and its operators answer from here. The report reads ``disclosed_records`` (one
row per record of a delivered message, kept ``disclosure_retention_days``) and the user's
consents through :class:`~portability.consent.ConsentService`, and holds ids, times and
policy versions, never a record's contents.

Per app it sums up categories, distinct records, deliveries, first and last delivery and
policy versions, with the consents and how they ended; the records themselves come in pages
(:class:`~portability.messages.disclosure_report.RecordPage`), oldest delivery first, by a
cursor on the rows' sort key.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from portability.consent import ConsentService, ConsentView, NotFoundError
from portability.messages.disclosure_report import (
    AppDisclosure,
    ConsentSummary,
    DisclosedRecord,
    DisclosureCursorError,
    DisclosureReport,
    DisclosureRequestError,
    RecordCursor,
    RecordPage,
)
from portability.messages.models import DisclosedRecordRow
from portability.wire.records import CATEGORIES

__all__ = [
    "DEFAULT_RECORD_LIMIT",
    "MAX_RECORD_LIMIT",
    "DisclosureCursorError",
    "DisclosureReports",
    "DisclosureRequestError",
    "disclosure_report",
    "record_page",
]

DEFAULT_RECORD_LIMIT = 100
"""Records per page when the caller does not say."""
MAX_RECORD_LIMIT = 1000
"""The most records one page holds: a user's history can be long, a response should not be."""

_R = DisclosedRecordRow
# The records' order: delivery time, then the primary key, so that it is total.
_SORT_KEY = (
    col(_R.delivered_at),
    col(_R.message_id),
    col(_R.category),
    col(_R.record_id),
    col(_R.delta_id),
)


class DisclosureReports:
    """Answers disclosure reports on one store: what the API and the CLI each hold."""

    def __init__(self, engine: Engine, service: ConsentService) -> None:
        """Read ``engine``'s message log and ``service``'s consents and apps (same store)."""
        self._engine = engine
        self._service = service

    def report(
        self,
        user_id: str,
        *,
        records: bool = False,
        cursor: str | None = None,
        limit: int = DEFAULT_RECORD_LIMIT,
    ) -> DisclosureReport:
        """:func:`disclosure_report` of ``user_id`` on this store."""
        return disclosure_report(
            self._engine, self._service, user_id, records=records, cursor=cursor, limit=limit
        )


def disclosure_report(
    engine: Engine,
    service: ConsentService,
    user_id: str,
    *,
    records: bool = False,
    cursor: str | None = None,
    limit: int = DEFAULT_RECORD_LIMIT,
    now: datetime | None = None,
) -> DisclosureReport:
    """What was disclosed of ``user_id``, per app, and (``records``) a page of the records.

    Args:
        engine: The consent store's database, where the message log's tables live.
        service: Reads the user's consents and the apps' names.
        user_id: The data subject; one with nothing disclosed gets a report without apps.
        records: Include a page of the records themselves.
        cursor: Where the page starts: a previous page's ``next_cursor`` (None: the first).
        limit: Records per page, 1 to :data:`MAX_RECORD_LIMIT`.
        now: The report's ``generated_at``; default the current time.

    Raises:
        DisclosureCursorError: ``cursor`` was not handed out by a report.
        DisclosureRequestError: ``user_id`` is empty, or ``limit`` is out of range.
    """
    if not user_id:
        # Test events are logged with an empty user: they disclose nothing of anyone.
        raise DisclosureRequestError("user_id is empty: name the user whose report to show")
    consents = service.list_consents(user_id=user_id)
    with Session(engine) as session:
        totals = _app_totals(session, user_id)
        page = record_page(session, user_id, cursor, limit) if records else None
    apps = [
        _app_disclosure(service, app_id, totals.get(app_id), consents)
        for app_id in sorted(set(totals) | {consent.app_id for consent in consents})
    ]
    apps.sort(key=_earliest_first)
    return DisclosureReport(
        user_id=user_id,
        generated_at=now or datetime.now(UTC),
        apps=apps,
        records=page,
    )


def record_page(session: Session, user_id: str, cursor: str | None, limit: int) -> RecordPage:
    """The user's records delivered after ``cursor``, oldest first, at most ``limit``.

    Raises:
        DisclosureCursorError: ``cursor`` was not handed out by a report.
        DisclosureRequestError: ``limit`` is out of range.
    """
    if not 1 <= limit <= MAX_RECORD_LIMIT:
        raise DisclosureRequestError(
            f"limit must be 1 to {MAX_RECORD_LIMIT}, not {limit}: page through longer histories "
            "with the cursor"
        )
    query = select(_R).where(col(_R.user_id) == user_id)
    if cursor is not None:
        query = query.where(_after(RecordCursor.decode(cursor)))
    # One more than asked: whether there is a next page, without counting.
    rows = list(session.exec(query.order_by(*_SORT_KEY).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _cursor_of(rows[-1]).encode() if more else None
    return RecordPage(items=[_record(row) for row in rows], limit=limit, next_cursor=next_cursor)


def _after(cursor: RecordCursor) -> sa.ColumnElement[bool]:
    """Rows after ``cursor`` in the sort order.

    Spelled out column by column rather than as a row-value comparison, so that each value
    is bound with its column's type (the UTC timestamp's especially, which SQLite keeps as
    naive text).
    """
    values = (
        cursor.delivered_at,
        cursor.message_id,
        cursor.category,
        cursor.record_id,
        cursor.delta_id,
    )
    terms = []
    for index, column in enumerate(_SORT_KEY):
        equal = [_SORT_KEY[i] == values[i] for i in range(index)]
        terms.append(sa.and_(*equal, column > values[index]))
    return sa.or_(*terms)


def _cursor_of(row: DisclosedRecordRow) -> RecordCursor:
    return RecordCursor(row.delivered_at, row.message_id, row.category, row.record_id, row.delta_id)


def _record(row: DisclosedRecordRow) -> DisclosedRecord:
    return DisclosedRecord(
        delivered_at=row.delivered_at,
        app_id=row.app_id,
        consent_id=row.consent_id,
        category=row.category,
        record_id=row.record_id,
        operation=row.operation,
        delta_id=row.delta_id,
        sequence=row.sequence,
        message_id=row.message_id,
        event_type=row.event_type,
        policy_version=row.policy_version,
    )


@dataclass
class _Totals:
    """One app's sums over the user's disclosed records."""

    delivery_count: int = 0
    message_count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    by_category: dict[str, int] = field(default_factory=dict)
    policy_versions: list[str] = field(default_factory=list)


def _app_totals(session: Session, user_id: str) -> dict[str, _Totals]:
    """Per app: deliveries, messages, first and last; records per category; policy versions.

    Three grouped queries: distinct records are counted per category (a count of distinct
    pairs is not portable to SQLite) and summed per app; messages are counted per app, as
    one message may carry records of several categories.
    """
    mine = col(_R.user_id) == user_id
    totals: dict[str, _Totals] = defaultdict(_Totals)
    per_app = (
        sa.select(
            col(_R.app_id),
            func.count(),
            func.count(sa.distinct(col(_R.message_id))),
            func.min(col(_R.delivered_at)),
            func.max(col(_R.delivered_at)),
        )
        .where(mine)
        .group_by(col(_R.app_id))
    )
    # Core: sqlmodel's select takes at most four columns.
    for app_id, deliveries, messages, first, last in session.connection().execute(per_app):
        totals[app_id] = _Totals(deliveries, messages, first, last)
    per_category = (
        select(col(_R.app_id), col(_R.category), func.count(sa.distinct(col(_R.record_id))))
        .where(mine)
        .group_by(col(_R.app_id), col(_R.category))
        .order_by(col(_R.app_id), col(_R.category))
    )
    for app_id, category, distinct_records in session.exec(per_category):
        totals[app_id].by_category[category] = distinct_records
    versions = (
        select(col(_R.app_id), col(_R.policy_version))
        .where(mine)
        .distinct()
        .order_by(col(_R.app_id), col(_R.policy_version))
    )
    for app_id, version in session.exec(versions):
        totals[app_id].policy_versions.append(version)
    return dict(totals)


def _app_disclosure(
    service: ConsentService,
    app_id: str,
    totals: _Totals | None,
    consents: list[ConsentView],
) -> AppDisclosure:
    sums = totals or _Totals()
    categories = sorted(sums.by_category, key=_category_order)
    return AppDisclosure(
        app_id=app_id,
        app_name=_app_name(service, app_id),
        categories=categories,
        records_by_category={category: sums.by_category[category] for category in categories},
        record_count=sum(sums.by_category.values()),
        delivery_count=sums.delivery_count,
        message_count=sums.message_count,
        first_delivered_at=sums.first,
        last_delivered_at=sums.last,
        policy_versions=sums.policy_versions,
        consents=[_consent(view) for view in consents if view.app_id == app_id],
    )


def _app_name(service: ConsentService, app_id: str) -> str | None:
    try:
        return service.get_app(app_id).name
    except NotFoundError:
        return None  # records outlive their app: the report still names where they went


def _consent(view: ConsentView) -> ConsentSummary:
    # An ended consent's last change is its end: revoked_at is set only for a revocation.
    ended_at = None if view.is_active else (view.revoked_at or view.updated_at)
    return ConsentSummary(
        consent_id=view.consent_id,
        status=view.status,
        mode=view.mode,
        categories=list(view.categories),
        granted_at=view.granted_at,
        ended_at=ended_at,
        removal_reason=None if view.is_active else view.removal_reason,
    )


def _category_order(category: str) -> tuple[int, str]:
    """The platform's order of categories (profile first); any other after, by name."""
    known = CATEGORIES.index(category) if category in CATEGORIES else len(CATEGORIES)
    return (known, category)


def _earliest_first(app: AppDisclosure) -> tuple[bool, datetime, str]:
    """Apps by first delivery; those that received nothing yet last, by first grant."""
    granted = min((c.granted_at for c in app.consents), default=datetime.max.replace(tzinfo=UTC))
    first = app.first_delivered_at
    return (first is None, first or granted, app.app_id)
