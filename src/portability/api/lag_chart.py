"""The status page's lag chart: each consumer group's lag over time as an inline SVG.

Drawn on the server as plain SVG (no script, nothing fetched), so the page works on an isolated
operations network and in a terminal browser alike; :mod:`portability.api.status_page` puts one
chart per metric on the page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from portability.api.status_format import duration, escape, lag_time, number
from portability.api.status_snapshot import GroupHealth

__all__ = ["Metric", "lag_chart"]

Metric = Literal["records", "seconds"]

_PALETTE = ("#0969da", "#8250df", "#1a7f37", "#bf3989", "#b35900", "#57606a")

_WIDTH, _HEIGHT = 600, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 10, 26


def lag_chart(groups: Sequence[GroupHealth], metric: Metric, now: float, history_s: float) -> str:
    """An inline SVG line chart of each group's lag over the last ``history_s`` seconds.

    One ``polyline`` per run of known values (a failed sample breaks the line), each marked
    ``data-group``; the y axis starts at 0 and ends at a round number above the largest value.
    """
    series = {
        g.group: [(p.at, _value(p.lag, p.lag_seconds, metric)) for p in g.history] for g in groups
    }
    values = [v for points in series.values() for _, v in points if v is not None]
    top = _nice_ceiling(max(values, default=0.0))
    width, height = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    start = now - history_s

    def x(at: float) -> float:
        return _LEFT + max(0.0, min(1.0, (at - start) / history_s)) * width

    def y(value: float) -> float:
        return _TOP + height - (value / top) * height

    parts = [_axes(top, metric, history_s, y)]
    for index, (group, points) in enumerate(series.items()):
        color = _PALETTE[index % len(_PALETTE)]
        for run in _runs(points):
            coordinates = " ".join(f"{x(at):.1f},{y(value):.1f}" for at, value in run)
            parts.append(
                f'<polyline class="series" data-group="{escape(group)}" data-points="{len(run)}" '
                f'stroke="{color}" points="{coordinates}"/>'
            )
    if not values:
        parts.append(
            f'<text x="{_LEFT + width / 2}" y="{_TOP + height / 2}" text-anchor="middle">'
            "no samples yet</text>"
        )
    title = "records behind" if metric == "records" else "seconds behind (oldest unconsumed)"
    legend = "".join(
        f'<span><span class="swatch" style="background:{_PALETTE[i % len(_PALETTE)]}"></span>'
        f"{escape(g.group)}: "
        f"{number(g.lag) if metric == 'records' else lag_time(g.lag_seconds)}</span>"
        for i, g in enumerate(groups)
    )
    return (
        f"<figure><figcaption>{title}</figcaption>"
        f'<svg class="lag-chart" data-metric="{metric}" viewBox="0 0 {_WIDTH} {_HEIGHT}" '
        f'role="img" aria-label="consumer lag, {title}">{"".join(parts)}</svg>'
        f'<div class="legend">{legend}</div></figure>'
    )


def _axes(top: float, metric: Metric, history_s: float, y: Callable[[float], float]) -> str:
    width = _WIDTH - _LEFT - _RIGHT
    parts = []
    for fraction in (0.0, 0.5, 1.0):
        value = top * fraction
        level = y(value)
        label = f"{value:,.10g}".replace(",", " ") if metric == "records" else lag_time(value)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + width}" y1="{level:.1f}" '
            f'y2="{level:.1f}"/><text x="{_LEFT - 6}" y="{level + 4:.1f}" '
            f'text-anchor="end">{label}</text>'
        )
    baseline = _HEIGHT - _BOTTOM
    for fraction in (0.0, 1 / 3, 2 / 3, 1.0):
        ago = history_s * (1 - fraction)
        label = "now" if ago == 0 else f"-{duration(round(ago))}"
        position = _LEFT + fraction * width
        parts.append(
            f'<text x="{position:.1f}" y="{baseline + 16}" text-anchor="middle">{label}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{_LEFT}" x2="{_LEFT + width}" y1="{baseline}" y2="{baseline}"/>'
    )
    return "".join(parts)


def _value(lag: int | None, lag_seconds: float | None, metric: Metric) -> float | None:
    if metric == "records":
        return None if lag is None else float(lag)
    return lag_seconds


def _runs(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Consecutive known values; a single point is drawn as a tiny segment."""
    runs: list[list[tuple[float, float]]] = [[]]
    for at, value in points:
        if value is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((at, value))
    return [run if len(run) > 1 else [*run, run[0]] for run in runs if run]


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return float(step * magnitude)
    return float(10 * magnitude)  # pragma: no cover - the loop ends at 10x
