"""Tables that fit the terminal: ids whole, the columns that matter kept, the rest dropped.

Left to itself, rich squeezes every column of a table wider than the terminal (80 columns
when the output is a pipe), down to a character or two: ids are cut and wrapped, and an
operator copies nothing useful out of them. Here the columns an operator acts on (ids,
offsets) are never wrapped or cut, the others fold their text over lines, and when even that
does not fit, the least important columns are left out, and a caption says which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

__all__ = ["STORE_COLUMNS", "Column", "fitted_table", "record_table"]

Cell = str | Text


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a :func:`fitted_table`.

    Attributes:
        header: The column's title.
        whole: Never wrapped or cut: ids and offsets, what goes into the next command.
        drop: When the table is too wide, columns with the highest ``drop`` are left out
            first; 0 is never left out.
        squeeze: The narrowest a column that is not whole may become (its text then folds
            over several lines).
        justify: Alignment of the cells.
    """

    header: str
    whole: bool = False
    drop: int = 0
    squeeze: int = 10
    justify: Literal["left", "right"] = "left"


# Each shown column costs its cells' width, one space of padding on either side and a rule
# (the default box, with edges): 3 per column and 1 for the closing edge.
_PER_COLUMN = 3


def _width(cell: Cell) -> int:
    text = cell.plain if isinstance(cell, Text) else cell
    return max((cell_len(line) for line in text.splitlines()), default=0)


def fitted_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    width: int | None,
    *,
    title: str | None = None,
    hidden_hint: str = "--json shows every field",
) -> Table:
    """A table of ``rows`` that fits in ``width`` characters (None: any width).

    Args:
        columns: One per cell of each row.
        rows: The cells.
        width: The terminal's width; the table is made to fit it.
        title: Shown above the table.
        hidden_hint: Where to see the columns left out, said in the caption.

    Returns:
        The table, with a caption naming the columns left out, if any.
    """
    natural = [
        max([cell_len(column.header)] + [_width(row[index]) for row in rows])
        for index, column in enumerate(columns)
    ]
    need = [
        size if column.whole else min(size, column.squeeze)
        for column, size in zip(columns, natural, strict=True)
    ]
    shown = list(range(len(columns)))
    # Highest drop first; among equals, the rightmost first.
    for index in sorted(
        (i for i, column in enumerate(columns) if column.drop > 0),
        key=lambda i: (-columns[i].drop, -i),
    ):
        if width is None or sum(need[i] + _PER_COLUMN for i in shown) + 1 <= width:
            break
        shown.remove(index)
    hidden = [columns[i].header for i in range(len(columns)) if i not in shown]
    caption = f"not shown at this width: {', '.join(hidden)} ({hidden_hint})" if hidden else None
    table = Table(title=title, caption=caption)
    for index in shown:
        column = columns[index]
        if column.whole:
            table.add_column(
                column.header, justify=column.justify, no_wrap=True, min_width=natural[index]
            )
        else:
            table.add_column(
                column.header, justify=column.justify, overflow="fold", min_width=need[index]
            )
    for row in rows:
        table.add_row(*(row[index] for index in shown))
    return table


STORE_COLUMNS: Mapping[str, Column] = {
    "consent_id": Column("consent_id", whole=True),
    "app_id": Column("app_id", whole=True),
    "user_id": Column("user_id", squeeze=24),
    "status": Column("status"),
    "categories": Column("categories"),
    "expires_at": Column("expires_at", drop=1, squeeze=17),
    "granted_at": Column("granted_at", drop=2, squeeze=17),
    "mode": Column("mode", drop=3),
    "name": Column("name"),
    "webhook_url": Column("webhook_url", drop=1),
}
"""How the consents and apps commands show their fields; any other field folds, kept."""


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    if key.endswith("_at") and isinstance(value, str):
        # ISO times with microseconds and offset take 32 columns; the minute is enough
        # here (--json keeps them whole).
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")
    return str(value)


def record_table(rows: Sequence[Mapping[str, Any]], width: int | None) -> Table:
    """``rows`` (dicts with the same keys) as a table fitted to ``width``; see
    :data:`STORE_COLUMNS`."""
    if not rows:
        return fitted_table([Column("(none)")], [], width)
    keys = list(rows[0])
    columns = [STORE_COLUMNS.get(key, Column(key)) for key in keys]
    cells = [[_cell(key, row[key]) for key in keys] for row in rows]
    return fitted_table(columns, cells, width)
