"""How the status page and its lag chart write numbers, durations and moments as HTML.

Shared by :mod:`portability.api.status_page` and :mod:`portability.api.lag_chart`, so that a
count, a lag time or a moment reads the same in a tile, a table and the chart's legend.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

__all__ = [
    "UNKNOWN",
    "clock",
    "duration",
    "escape",
    "lag_time",
    "number",
    "time_tag",
    "time_tag_of_epoch",
]

UNKNOWN = "&ndash;"  # an unknown value


def escape(text: object) -> str:
    """``text`` as HTML, quotes included (it also goes into attribute values)."""
    return html.escape(str(text), quote=True)


def number(value: int | None) -> str:
    """A count with thin groups of three digits (``12 345``)."""
    return UNKNOWN if value is None else f"{value:,}".replace(",", " ")


def lag_time(value: float | None) -> str:
    """Seconds behind: tenths below 10 s, then as a :func:`duration`."""
    if value is None:
        return UNKNOWN
    if value < 10:
        return f"{value:.1f} s"
    return duration(value)


def duration(seconds: float) -> str:
    """A span in the unit that keeps it short: s, min or h."""
    if seconds < 10:
        return f"{seconds:.3g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def clock(at: float) -> str:
    """A UTC date and time to the second."""
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def time_tag(moment: datetime | None) -> str:
    """A ``<time>`` element showing the UTC time of day."""
    return UNKNOWN if moment is None else time_tag_of_epoch(moment.timestamp())


def time_tag_of_epoch(at: float | None) -> str:
    """:func:`time_tag` of seconds since the epoch."""
    if at is None:
        return UNKNOWN
    stamp = datetime.fromtimestamp(at, tz=UTC)
    return f'<time datetime="{stamp.isoformat()}">{stamp.strftime("%H:%M:%S")}</time>'
