"""``portability disclosures USER``: which apps received which of a user's records, and when.

The operator's side of the disclosure report (the platform's privacy page reads the same
document from ``GET /v1/users/{user_id}/disclosures``): read straight from the consent
store's database, printed as tables, or exported whole with ``--json``. It holds ids, times
and policy versions, never a record's contents.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from portability.cli import root

if TYPE_CHECKING:
    from rich.table import Table

    from portability.messages.disclosure_report import (
        DisclosureReport,
        RecordPage,
    )

__all__ = ["disclosures"]

# Only a handful of characters of a failure's first line: a driver's message can run long.
_REASON_CHARS = 200


def disclosures(
    user_id: Annotated[str, typer.Argument(help="The user whose disclosures to show.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="The whole report as JSON (the API's document).")
    ] = False,
    records: Annotated[
        bool, typer.Option("--records", help="Also list which record ids went when.")
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=1000, help="Records per page (with --records).")
    ] = 100,
    cursor: Annotated[
        str | None,
        typer.Option("--cursor", help="Continue the records after a previous page (its cursor)."),
    ] = None,
) -> None:
    """Show what was disclosed of USER_ID: per app, categories, counts, first and last delivery,
    policy versions and consents; with --records, the record ids themselves."""
    if cursor is not None and not records:
        root.error_line("--cursor pages the records: add --records")
        raise typer.Exit(2)
    report = _read(user_id, records=records or cursor is not None, cursor=cursor, limit=limit)
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    if report.is_empty:
        root.console.print(
            f"no disclosures for user {user_id!r}: no app received their records or holds a "
            "consent of theirs (check the id; records older than the disclosure retention "
            "are gone)",
            soft_wrap=True,
            markup=False,
        )
        return
    out = Console()  # its width: the terminal's, COLUMNS, or 80 on a pipe
    out.print(_apps_table(report, out.width))
    if any(app.consents for app in report.apps):
        out.print(_consents_table(report, out.width))
    if report.records is not None:
        out.print(_records_table(report.records, out.width))
        if report.records.next_cursor is not None:
            root.console.print(
                f"more records: portability disclosures {user_id} --records "
                f"--limit {limit} --cursor {report.records.next_cursor}",
                soft_wrap=True,
                markup=False,
            )


def _read(user_id: str, *, records: bool, cursor: str | None, limit: int) -> DisclosureReport:
    """The report, from the store the settings name; an unreachable store is one line, exit 1."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from portability.consent import ConsentService, create_store_engine, init_schema
    from portability.messages.disclosures import DisclosureReports

    url = root.state.settings.resolved_database_url()

    def report() -> DisclosureReport:
        engine = create_store_engine(url)
        try:
            init_schema(engine)
            reports = DisclosureReports(engine, ConsentService(engine))
            return reports.report(user_id, records=records, cursor=cursor, limit=limit)
        finally:
            engine.dispose()

    try:
        result: DisclosureReport = root.guarded(report)
    except (SQLAlchemyError, OSError) as error:
        where = make_url(url).render_as_string(hide_password=True)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        root.error_line(
            f"cannot read the consent store at {where}: {reason[:_REASON_CHARS]} "
            "(check --database-url or PORTABILITY_DATABASE_URL, and that the database is up)"
        )
        raise typer.Exit(1) from None
    return result


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _apps_table(report: DisclosureReport, width: int | None) -> Table:
    from portability.ops.tables import Column, fitted_table

    columns = (
        Column("app", whole=True),
        Column("name", drop=3),
        Column("records by category", squeeze=14),
        Column("records", justify="right"),
        Column("deliveries", drop=4, justify="right"),
        Column("first delivery (UTC)", drop=2, squeeze=10),
        Column("last delivery (UTC)", squeeze=10),
        Column("policy versions", drop=1),
    )
    rows = [
        (
            app.app_id,
            app.app_name or "(app gone)",
            ", ".join(f"{c}: {n}" for c, n in app.records_by_category.items()) or "-",
            str(app.record_count),
            str(app.delivery_count),
            _time(app.first_delivered_at),
            _time(app.last_delivered_at),
            ", ".join(app.policy_versions) or "-",
        )
        for app in report.apps
    ]
    return fitted_table(
        columns, rows, width, title=f"disclosures of user {report.user_id} (ids, not contents)"
    )


def _consents_table(report: DisclosureReport, width: int | None) -> Table:
    from portability.ops.tables import Column, fitted_table

    columns = (
        Column("app", whole=True),
        Column("consent", whole=True),
        Column("status"),
        Column("removal reason", squeeze=12),
        Column("ended (UTC)", drop=1, squeeze=10),
        Column("granted (UTC)", drop=2, squeeze=10),
        Column("categories", drop=3),
    )
    rows = [
        (
            app.app_id,
            consent.consent_id,
            consent.status,
            consent.removal_reason or "-",
            _time(consent.ended_at),
            _time(consent.granted_at),
            ", ".join(consent.categories),
        )
        for app in report.apps
        for consent in app.consents
    ]
    return fitted_table(columns, rows, width, title="their consents")


def _records_table(page: RecordPage, width: int | None) -> Table:
    from portability.ops.tables import Column, fitted_table

    columns = (
        Column("delivered (UTC)", squeeze=10),
        Column("app", whole=True),
        Column("consent", whole=True, drop=3),
        Column("category"),
        Column("record", whole=True),
        Column("operation", drop=2),
        Column("sequence", drop=1, justify="right"),
        Column("delta", drop=4),
        Column("message", drop=5),
    )
    rows = [
        (
            _time(record.delivered_at),
            record.app_id,
            record.consent_id,
            record.category,
            record.record_id,
            record.operation,
            "-" if record.sequence is None else str(record.sequence),
            record.delta_id or "-",
            record.message_id,
        )
        for record in page.items
    ]
    title = f"records, oldest delivery first ({len(rows)} shown)"
    return fitted_table(columns, rows, width, title=title)
