"""The operator status page (``GET /status``), its JSON (``/status.json``) and ``/metrics``.

The page is rendered on the server from one :class:`~portability.api.operator_status.
StatusSnapshot` (the JSON is the same snapshot), with the lag chart drawn as inline SVG: no
script, no CDN, nothing fetched from elsewhere, so it works on an isolated operations network
and in a terminal browser alike. It reloads itself every ``?refresh=`` seconds (default 10;
0 turns that off).

The page and its JSON show app ids, webhook URLs and the apps' error answers, so they need the
operator token: ``Authorization: Bearer <token>``, or HTTP Basic with any user name and the
token as password, which lets a browser ask for it once (``http://operator:TOKEN@host/status``
works too). ``/metrics`` is open, as Prometheus scrapers expect: it carries app ids and counts
only; keep the API port on the operators' network.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from string import Template
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CollectorRegistry

from portability.api.operator_status import (
    AppHealth,
    EndpointProblem,
    GroupHealth,
    OperatorStatus,
    StatusSnapshot,
)
from portability.ops.dead_letter_counts import DeadLetterSummary
from portability.ops.metrics import render
from portability.settings import Settings

__all__ = ["lag_chart", "render_status_page", "status_router"]

status_router = APIRouter(include_in_schema=False)

_REALM = 'Basic realm="portability operators", charset="UTF-8"'
_PALETTE = ("#0969da", "#8250df", "#1a7f37", "#bf3989", "#b35900", "#57606a")
_DEFAULT_REFRESH_S = 10
Metric = Literal["records", "seconds"]
_NONE = "&ndash;"  # an unknown value


# --- routes -----------------------------------------------------------------------------------


@status_router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus exposition; sync on purpose: collecting queries the consent store."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    body, content_type = render(registry, request.headers.get("accept"))
    return Response(content=body, headers={"Content-Type": content_type})


@status_router.get("/status", response_class=HTMLResponse)
def status_page(
    request: Request,
    refresh: Annotated[int, Query(ge=0, le=3600)] = _DEFAULT_REFRESH_S,
) -> Response:
    """The page; 401 with a Basic challenge (the browser asks) without the operator token."""
    if not _is_operator(request):
        return HTMLResponse(
            "<!doctype html><title>401</title><p>The status page needs the operator token "
            "(PORTABILITY_API_OPERATOR_TOKEN): as the password of HTTP Basic (any user name) "
            "or as <code>Authorization: Bearer</code>.</p>",
            status_code=401,
            # Basic alone: a browser then asks for the token (Chromium ignores a challenge
            # list in one header). Bearer works all the same.
            headers={"WWW-Authenticate": _REALM},
        )
    status: OperatorStatus = request.app.state.operator_status
    return HTMLResponse(render_status_page(status.snapshot(), status.settings, refresh))


@status_router.get("/status.json")
def status_json(request: Request) -> Response:
    """The snapshot as JSON (the README documents its fields)."""
    if not _is_operator(request):
        return JSONResponse(
            {
                "error": "unauthorized",
                "message": "send the operator token: 'Authorization: Bearer <token>'",
            },
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    status: OperatorStatus = request.app.state.operator_status
    return JSONResponse(status.snapshot().as_dict())


def _is_operator(request: Request) -> bool:
    status: OperatorStatus = request.app.state.operator_status
    expected = status.settings.api_operator_token.get_secret_value().encode()
    given = _token(request.headers.get("authorization", ""))
    return given is not None and hmac.compare_digest(given, expected)


def _token(header: str) -> bytes | None:
    """The token of a Bearer header, or the password of a Basic one."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip().encode(errors="replace")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(b":")[2]
    return None


# --- the page ---------------------------------------------------------------------------------


def _template() -> Template:
    text = resources.files("portability.api").joinpath("templates/status.html").read_text()
    return Template(text)


_TEMPLATE = _template()


def render_status_page(snapshot: StatusSnapshot, settings: Settings, refresh_s: int) -> str:
    """The whole page as HTML."""
    letters = snapshot.dead_letters
    return _TEMPLATE.substitute(
        refresh_meta=f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else "",
        health=snapshot.health,
        health_label=snapshot.health.upper(),
        generated=f"at {_clock(snapshot.at)} UTC",
        kafka=_e(f"Kafka {snapshot.kafka}") if snapshot.kafka else "no Kafka configured",
        tiles=_tiles(snapshot),
        problems=_problems(snapshot),
        history=_duration(snapshot.history_s),
        groups=_groups(snapshot),
        charts="".join(
            lag_chart(snapshot.groups, metric, snapshot.at, snapshot.history_s)
            for metric in ("records", "seconds")
        ),
        apps_count=f"({len(snapshot.apps) + snapshot.apps_left_out})",
        apps=_apps(snapshot.apps, snapshot.apps_left_out),
        endpoints_count=f"({len(snapshot.endpoints)})",
        endpoints=_endpoints(snapshot.endpoints),
        dead_letters_count=f"({letters.letters})" if letters.following else "",
        dead_letters=_dead_letters(letters),
        refresh_text=f"Reloads every {refresh_s} s" if refresh_s else "Does not reload (refresh=0)",
        interval=_duration(settings.lag_sample_interval_s),
    )


def _tiles(snapshot: StatusSnapshot) -> str:
    store, letters = snapshot.store, snapshot.dead_letters
    active = store.by_status().get("active", 0) if store is not None else None
    tiles = [
        ("active-consents", "active consents", _n(active)),
        ("outbox", "outbox backlog", _n(store.outbox_pending if store is not None else None)),
        ("dead-letters", "dead letters", _n(letters.letters if letters.following else None)),
        ("endpoints", "failing endpoints", _n(len(snapshot.endpoints))),
    ]
    tiles += [
        (f"lag-{g.group}", f"lag of {g.group}", f"{_n(g.lag)} · {_seconds(g.lag_seconds)}")
        for g in snapshot.groups
    ]
    return "".join(
        f'<div class="tile" id="tile-{_e(ident)}"><div class="value">{value}</div>'
        f'<div class="label">{_e(label)}</div></div>'
        for ident, label, value in tiles
    )


def _problems(snapshot: StatusSnapshot) -> str:
    if not snapshot.problems:
        text = (
            "Nothing needs attention."
            if snapshot.kafka
            else (
                "No Kafka configured (PORTABILITY_KAFKA_BOOTSTRAP): lag, delivery status and dead "
                "letters are unknown."
            )
        )
        return f'<p class="empty" id="no-problems">{text}</p>'
    items = "".join(
        f'<li class="{problem.severity}">{_e(problem.message)}</li>'
        for problem in snapshot.problems
    )
    return f'<ul class="problems" id="problems">{items}</ul>'


def _groups(snapshot: StatusSnapshot) -> str:
    if snapshot.lag.error and not snapshot.groups:
        return f'<p class="empty">Lag unknown: {_e(snapshot.lag.error)}</p>'
    if not snapshot.groups:
        return '<p class="empty">No lag sample yet.</p>'
    rows = "".join(
        f'<tr data-group="{_e(g.group)}"><td>{_e(g.group)}</td>'
        f'<td><span class="badge {_e(g.status)}">{_e(g.status)}</span></td>'
        f'<td class="num">{_n(g.members)}</td><td class="num">{_n(g.lag)}</td>'
        f'<td class="num">{_seconds(g.lag_seconds)}</td><td class="num">{_parked(g)}</td>'
        f'<td class="reason">{_e(g.reason)}</td></tr>'
        for g in snapshot.groups
    )
    return _table(
        "groups",
        ["group", "status", "members", "lag", "lag time", "parked", "why"],
        rows,
        numeric={2, 3, 4, 5},
    )


def _parked(group: GroupHealth) -> str:
    """Records waiting on PARKED partitions, and when the first of their retries is due."""
    if not group.parked:
        return _NONE
    due = "" if group.next_retry_at is None else f" · next {_at_epoch(group.next_retry_at)}"
    return f"{_n(group.parked)}{due}"


def _apps(apps: Sequence[AppHealth], left_out: int) -> str:
    if not apps:
        return '<p class="empty">No app has active consents or deliveries yet.</p>'
    rows = "".join(_app_row(app) for app in apps)
    more = f'<p class="empty">and {left_out} more (see /status.json)</p>' if left_out else ""
    headers = ["app", "state", "active consents", "delivered", "dead letters", "success"]
    headers += ["failing consents", "last delivery", "last error"]
    return _table("apps-table", headers, rows, numeric={2, 3, 4, 5, 6}) + more


def _app_row(app: AppHealth) -> str:
    ratio = app.success_ratio
    success = _NONE if ratio is None else f"{ratio * 100:.1f} %"
    failing = app.failing_consents + app.disabled_consents
    name = f'<br><span class="count">{_e(app.name)}</span>' if app.name else ""
    return (
        f'<tr data-app="{_e(app.app_id)}"><td>{_e(app.app_id)}{name}</td>'
        f'<td><span class="badge {_e(app.state.replace(" ", "-"))}">{_e(app.state)}</span></td>'
        f'<td class="num">{_n(app.active_consents)}</td><td class="num">{_n(app.delivered)}</td>'
        f'<td class="num">{_n(app.dead_letters)}</td><td class="num success">{success}</td>'
        f'<td class="num">{_n(failing)}</td><td>{_at(app.last_delivered_at)}</td>'
        f'<td class="error">{_e(app.last_error or "")}</td></tr>'
    )


def _endpoints(endpoints: Sequence[EndpointProblem]) -> str:
    if not endpoints:
        return '<p class="empty">Every endpoint answers.</p>'
    rows = "".join(
        f'<tr data-app="{_e(p.app_id)}"><td>{_e(p.app_id)}</td>'
        f'<td><span class="badge {p.state}">{p.state}</span></td>'
        f'<td class="num">{p.consents}</td><td class="url">{_e(p.webhook_url or "?")}</td>'
        f'<td class="error">{_e(_error_text(p))}</td><td>{_at(p.updated_at)}</td></tr>'
        for p in endpoints
    )
    return _table(
        "endpoints-table",
        ["app", "state", "consents", "webhook URL", "last error", "at"],
        rows,
        numeric={2},
    )


def _error_text(problem: EndpointProblem) -> str:
    """The error, with the app's answer when it said more than its status."""
    text = problem.last_error or "?"
    if problem.last_status is not None and str(problem.last_status) not in text:
        text = f"HTTP {problem.last_status}: {text}"
    answer = (problem.last_response or "").strip()
    if answer and answer not in text:
        text = f"{text}: {answer[:200]}"
    return text


def _dead_letters(summary: DeadLetterSummary) -> str:
    if not summary.following:
        reason = summary.error or "no Kafka configured, or not read yet"
        return f'<p class="empty">Dead letters unknown: {_e(reason)}</p>'
    if not summary.letters:
        return '<p class="empty" id="no-dead-letters">No dead letters.</p>'
    stages = ", ".join(
        f"{_e(stage)}: {count}" for stage, count in sorted(summary.by_stage().items())
    )
    apps = ", ".join(f"{_e(app)}: {count}" for app, count in sorted(summary.by_app().items()))
    counts = (
        f'<p id="dead-letter-counts">by stage: {stages}'
        + (f"<br>by app: {apps}" if apps else "")
        + (f"<br>replayed: {summary.replays}" if summary.replays else "")
        + "</p>"
    )
    reasons = "".join(
        f'<tr><td class="num">{count}</td><td class="reason">{_e(reason)}</td></tr>'
        for reason, count in list(summary.by_reason.items())[:8]
    )
    latest = "".join(
        f'<tr><td class="num">{b.offset}</td><td>{_at_epoch(b.at)}</td><td>{_e(b.stage)}</td>'
        f'<td>{_e(b.app_id or "")}</td><td class="reason">{_e(b.source)}</td>'
        f'<td class="error">{_e(b.reason[:200])}</td></tr>'
        for b in reversed(summary.latest[-8:])
    )
    return (
        counts
        + _table("dead-letter-reasons", ["letters", "reason"], reasons, numeric={0})
        + "<h3>Newest letters</h3>"
        + _table(
            "dead-letter-latest",
            ["offset", "at", "stage", "app", "source", "reason"],
            latest,
            numeric={0},
        )
    )


def _table(ident: str, headers: Sequence[str], rows: str, numeric: Iterable[int] = ()) -> str:
    right = set(numeric)
    head = "".join(
        f'<th class="num">{_e(h)}</th>' if i in right else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    return f'<table id="{ident}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


# --- the lag chart ----------------------------------------------------------------------------

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
                f'<polyline class="series" data-group="{_e(group)}" data-points="{len(run)}" '
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
        f"{_e(g.group)}: {_n(g.lag) if metric == 'records' else _seconds(g.lag_seconds)}</span>"
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
        label = f"{value:,.10g}".replace(",", " ") if metric == "records" else _seconds(value)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + width}" y1="{level:.1f}" '
            f'y2="{level:.1f}"/><text x="{_LEFT - 6}" y="{level + 4:.1f}" '
            f'text-anchor="end">{label}</text>'
        )
    baseline = _HEIGHT - _BOTTOM
    for fraction in (0.0, 1 / 3, 2 / 3, 1.0):
        ago = history_s * (1 - fraction)
        label = "now" if ago == 0 else f"-{_duration(round(ago))}"
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


# --- formatting -------------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _n(value: int | None) -> str:
    return _NONE if value is None else f"{value:,}".replace(",", " ")


def _seconds(value: float | None) -> str:
    if value is None:
        return _NONE
    if value < 10:
        return f"{value:.1f} s"
    return _duration(value)


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.3g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _at(moment: datetime | None) -> str:
    return _NONE if moment is None else _at_epoch(moment.timestamp())


def _at_epoch(at: float | None) -> str:
    if at is None:
        return _NONE
    stamp = datetime.fromtimestamp(at, tz=UTC)
    return f'<time datetime="{stamp.isoformat()}">{stamp.strftime("%H:%M:%S")}</time>'
