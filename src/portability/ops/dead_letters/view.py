"""What ``portability dlq list|show|redeliver`` print: rich tables over the dead letters.

The operator-facing words (titles, columns) keep "replay" as they were published.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC

from rich.console import Group, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from portability.ops.dead_letters.letters import Letter
from portability.ops.dead_letters.listing import Listing
from portability.ops.dead_letters.redelivery import RedeliveryPlan, RedeliveryResult
from portability.ops.tables import Column, fitted_table

__all__ = ["letter_detail", "listing_view", "plan_table", "results_table"]

_REASON_WIDTH = 60
_PREVIEW_BYTES = 64


_LISTING_COLUMNS = (
    Column("offset", whole=True, justify="right"),
    Column("time (UTC)", drop=2, squeeze=19),
    Column("stage", drop=1),
    Column("source", drop=5),
    Column("consent", whole=True),
    Column("app", whole=True),
    Column("attempts", drop=4, justify="right"),
    Column("replay", drop=3),
    Column("reason", squeeze=16),
)
"""At 80 columns an operator still sees which letter (its offset, for ``dlq show``), whose
(consent and app, whole) and why; the rest gives way first."""


def listing_view(listing: Listing, width: int | None = None) -> Group:
    """The letters, oldest first, then counts per stage and per kind of reason.

    Args:
        listing: What ``dlq list`` found.
        width: The terminal's width: the letters' table is fitted to it (None: any width).
    """
    rows = [
        (
            str(letter.offset),
            _time(letter),
            letter.stage,
            letter.source,
            letter.consent_id or "-",
            letter.app_id or "-",
            _or_dash(letter.attempts),
            _redelivery_cell(letter),
            _truncate(letter.reason),
        )
        for letter in listing.letters
    ]
    table = fitted_table(
        _LISTING_COLUMNS,
        rows,
        width,
        title=f"dead letters in {listing.topic}",
        hidden_hint="dlq show OFFSET or --json shows every field",
    )
    return Group(table, _summary(listing))


def _summary(listing: Listing) -> RenderableType:
    summary = listing.summary
    stages = ", ".join(f"{stage}: {count}" for stage, count in sorted(summary.by_stage.items()))
    shown = (
        f"the newest {len(listing.letters)} of " if len(listing.letters) < listing.matched else ""
    )
    head = Text(
        f"{shown}{listing.matched} letter(s) matched"
        + (f" ({stages})" if stages else "")
        + f"; {listing.topic} holds offsets {listing.start} to {listing.end - 1}"
        + (f", {listing.markers} replay marker(s)" if listing.markers else "")
    )
    if not summary.by_reason:
        return head
    reasons = Table(title="reasons", show_edge=False)
    reasons.add_column("count", justify="right")
    reasons.add_column("reason")
    for reason, count in summary.by_reason.items():
        reasons.add_row(str(count), reason)
    return Group(head, reasons)


def letter_detail(letter: Letter) -> Group:
    """One letter in full: what it is, its delivery history, its headers, its value."""
    parts: list[RenderableType] = [_fields(letter)]
    if letter.history or letter.history_error:
        parts.append(_history(letter))
    headers = Table(title="headers")
    headers.add_column("name")
    headers.add_column("value", overflow="fold")
    for name, value in letter.detail()["headers"].items():
        headers.add_row(name, value)
    parts += [headers, _value(letter)]
    return Group(*parts)


def _fields(letter: Letter) -> Table:
    table = Table(title=f"dead letter {letter.offset}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    detail = letter.as_dict()
    rows = [
        ("time (UTC)", _time(letter)),
        ("stage", letter.stage),
        ("source", letter.source),
        ("reason", letter.reason),
        ("consent", letter.consent_id or "-"),
        ("app", letter.app_id or "-"),
        ("attempts", _or_dash(letter.attempts)),
        ("key", detail["key"] if detail["key"] is not None else "(none)"),
    ]
    if letter.redelivery_topic != letter.source_topic:
        goes_to = letter.redelivery_topic or "(unknown: value does not decode)"
        rows.append(("replays go to", goes_to))
    if letter.redelivery_of is not None:
        rows.append(("replay of", f"letter {letter.redelivery_of}"))
    for mark in letter.redeliveries:
        where = f"{mark.topic}[{mark.partition}]@{mark.target}"
        rows.append(("replayed", f"to {where} at {mark.at} (marker {mark.offset})"))
    if letter.followups:
        rows.append(("dead-lettered again as", ", ".join(map(str, letter.followups))))
    for field, value in rows:
        table.add_row(field, value)
    return table


def _history(letter: Letter) -> RenderableType:
    if letter.history_error:
        return Text(letter.history_error, style="yellow")
    table = Table(title="delivery attempts")
    for column in ("#", "at", "status", "reason"):
        table.add_column(column, justify="right" if column == "#" else "left")
    for number, attempt in enumerate(letter.history, start=1):
        table.add_row(str(number), attempt.at, _or_dash(attempt.status), attempt.reason)
    return table


def _value(letter: Letter) -> RenderableType:
    decoded = letter.decoded
    if decoded.record is not None:
        document = decoded.as_dict(letter.value)["decoded"]
        title = Text(f"value (decoded as {decoded.schema.value if decoded.schema else '?'})")
        return Group(title, JSON(json.dumps(document)))
    value = letter.value
    lines = [
        Text(f"value does not decode: {decoded.error}", style="red"),
        Text(f"length: {0 if value is None else len(value)} bytes"),
    ]
    if value:
        head = value[:_PREVIEW_BYTES]
        more = " ..." if len(value) > _PREVIEW_BYTES else ""
        lines.append(Text(f"hex:    {head.hex(' ')}{more}"))
        lines.append(Text(f"utf-8:  {head.decode(errors='replace')!r}{more}"))
    return Group(*lines)


def plan_table(plan: RedeliveryPlan, dry_run: bool) -> Table:
    """Each selected letter, where it goes, and why not if it will not be redelivered."""
    title = "would replay" if dry_run else "replay plan"
    table = Table(title=f"{title} from {plan.topic}")
    for column in ("letter", "to", "consent", "replay"):
        table.add_column(column, justify="right" if column == "letter" else "left")
    for decision in plan.decisions:
        table.add_row(
            str(decision.letter.offset),
            decision.target,
            decision.letter.consent_id or "-",
            Text("yes", style="green")
            if decision.refusal is None
            else Text(f"no: {decision.refusal}", style="red"),
        )
    return table


def results_table(results: Sequence[RedeliveryResult]) -> Table:
    """Where each letter went (topic, partition, offset), or the error that stopped it."""
    table = Table(title="replayed")
    for column in ("letter", "to", "offset", "recorded"):
        table.add_column(column, justify="right" if column in ("letter", "offset") else "left")
    for result in results:
        letter = result.letter
        table.add_row(
            str(letter.offset),
            f"{letter.redelivery_topic}[{letter.source_partition}]",
            Text(str(result.offset)) if result.error is None else Text(result.error, style="red"),
            "yes" if result.marked else Text("no", style="yellow"),
        )
    return table


def _redelivery_cell(letter: Letter) -> str:
    notes = []
    if letter.redelivery_of is not None:
        notes.append(f"of {letter.redelivery_of}")
    if letter.redeliveries:
        last = letter.redeliveries[-1]
        times = f" x{len(letter.redeliveries)}" if len(letter.redeliveries) > 1 else ""
        notes.append(f"-> {last.topic}[{last.partition}]@{last.target}{times}")
    if letter.followups:
        notes.append("failed again: " + ",".join(map(str, letter.followups)))
    return "; ".join(notes) or "-"


def _time(letter: Letter) -> str:
    moment = letter.time
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_WIDTH else text[: _REASON_WIDTH - 1] + "…"


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)
