"""How ``portability lag`` shows a report: one rich table, a row per group and partition.

A group's lag leaves its PARKED partitions out (their records wait on purpose) and shows them
beside it: ``0 (+12 parked)``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from rich.table import Table
from rich.text import Text

from portability.ops.lag import GroupLag, LagReport, PartitionLag
from portability.ops.lag_rules import Status

__all__ = ["format_age", "lag_table"]

_STYLES = {
    Status.OK: "green",
    Status.PARKED: "cyan",
    Status.WARNING: "yellow",
    Status.REWOUND: "magenta",
    Status.STALLED: "red",
    Status.STOPPED: "bold red",
    Status.UNKNOWN: "red",
}
_NUMERIC = frozenset({"partition", "committed", "end", "lag", "lag time"})
_COLUMNS = ("group", "topic", "partition", "committed", "end", "lag", "lag time", "status", "why")


def lag_table(report: LagReport) -> Table:
    """The report as a table: each group's summary row, then its partitions."""
    at = _clock_time(report.at)
    table = Table(
        title=f"consumer lag on {report.bootstrap} at {at} (window: {report.window} sample(s))"
    )
    for column in _COLUMNS:
        table.add_column(column, justify="right" if column in _NUMERIC else "left")
    for group in report.groups:
        _add_group(table, group)
    if report.missing_topics:
        table.caption = (
            f"missing topics: {', '.join(report.missing_topics)} "
            "(create them with `portability topics create`)"
        )
    return table


def _add_group(table: Table, group: GroupLag) -> None:
    members = "?" if group.members is None else str(group.members)
    table.add_row(
        Text(group.group, style="bold"),
        f"members: {members}",
        "",
        "",
        "",
        _group_lag(group),
        "-" if group.lag is None else format_age(group.lag_seconds),
        _status(group.verdict.status),
        group.verdict.reason,
        end_section=not group.partitions,
    )
    for index, partition in enumerate(group.partitions):
        _add_partition(table, partition, last=index == len(group.partitions) - 1)


def _group_lag(group: GroupLag) -> str:
    if group.lag is None:
        return "-"
    return f"{group.lag} (+{group.parked} parked)" if group.parked else str(group.lag)


def _add_partition(table: Table, partition: PartitionLag, last: bool) -> None:
    sample, verdict = partition.sample, partition.verdict
    table.add_row(
        "",
        partition.tp.topic,
        str(partition.tp.partition),
        "-" if sample.committed is None else str(sample.committed),
        str(sample.end),
        str(sample.lag),
        format_age(sample.lag_seconds),
        _status(verdict.status),
        "" if verdict.status is Status.OK else verdict.reason,
        end_section=last,
    )


def _status(status: Status) -> Text:
    return Text(str(status), style=_STYLES[status])


def format_age(seconds: float | None) -> str:
    """A lag in seconds as an operator reads it: 0, 4.2 s, 3m 05s, 2h 03m; ? if unknown."""
    if seconds is None:
        return "?"
    if seconds == 0:
        return "0"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _clock_time(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%H:%M:%S UTC")
