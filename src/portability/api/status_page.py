"""The operator status page (``GET /status``), its JSON (``/status.json``) and ``/metrics``.

The page is rendered on the server from one :class:`~portability.api.status_snapshot.
StatusSnapshot` (the JSON is the same snapshot), with the lag chart drawn as inline SVG
(:mod:`portability.api.lag_chart`): no script, no CDN, nothing fetched from elsewhere, so it
works on an isolated operations network and in a terminal browser alike. It reloads itself
every ``?refresh=`` seconds (default 10; 0 turns that off).

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
from collections.abc import Iterable, Sequence
from importlib import resources
from string import Template
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CollectorRegistry

from portability.api.lag_chart import lag_chart
from portability.api.operator_status import OperatorStatus
from portability.api.status_format import (
    UNKNOWN,
    clock,
    duration,
    escape,
    lag_time,
    number,
    time_tag,
    time_tag_of_epoch,
)
from portability.api.status_snapshot import AppHealth, EndpointProblem, GroupHealth, StatusSnapshot
from portability.ops.dead_letters.counts import DeadLetterSummary
from portability.ops.metrics import render
from portability.settings import Settings

__all__ = ["render_status_page", "status_router"]

status_router = APIRouter(include_in_schema=False)

_REALM = 'Basic realm="portability operators", charset="UTF-8"'
_DEFAULT_REFRESH_S = 10


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
    """The snapshot as JSON (docs/operations.md documents its fields)."""
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
        generated=f"at {clock(snapshot.at)} UTC",
        kafka=_kafka(snapshot),
        tiles=_tiles(snapshot),
        problems=_problems(snapshot),
        history=duration(snapshot.history_s),
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
        interval=duration(settings.lag_sample_interval_s),
    )


def _tiles(snapshot: StatusSnapshot) -> str:
    store, letters = snapshot.store, snapshot.dead_letters
    active = store.by_status().get("active", 0) if store is not None else None
    tiles = [
        ("active-consents", "active consents", number(active)),
        ("outbox", "outbox backlog", number(store.outbox_pending if store is not None else None)),
        ("dead-letters", "dead letters", number(letters.letters if letters.following else None)),
        ("endpoints", "failing endpoints", number(len(snapshot.endpoints))),
    ]
    tiles += [
        (f"lag-{g.group}", f"lag of {g.group}", f"{number(g.lag)} · {lag_time(g.lag_seconds)}")
        for g in snapshot.groups
    ]
    return "".join(
        f'<div class="tile" id="tile-{escape(ident)}"><div class="value">{value}</div>'
        f'<div class="label">{escape(label)}</div></div>'
        for ident, label, value in tiles
    )


def _kafka(snapshot: StatusSnapshot) -> str:
    if not snapshot.kafka:
        return "no Kafka configured"
    unreachable = " (unreachable)" if snapshot.kafka_reachable is False else ""
    return escape(f"Kafka {snapshot.kafka}{unreachable}")


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
        f'<li class="{problem.severity}">{escape(problem.message)}</li>'
        for problem in snapshot.problems
    )
    return f'<ul class="problems" id="problems">{items}</ul>'


def _groups(snapshot: StatusSnapshot) -> str:
    if snapshot.lag.error and not snapshot.groups:
        return f'<p class="empty">Lag unknown: {escape(snapshot.lag.error)}</p>'
    if not snapshot.groups:
        return '<p class="empty">No lag sample yet.</p>'
    rows = "".join(
        f'<tr data-group="{escape(g.group)}"><td>{escape(g.group)}</td>'
        f'<td><span class="badge {escape(g.status)}">{escape(g.status)}</span></td>'
        f'<td class="num">{number(g.members)}</td><td class="num">{number(g.lag)}</td>'
        f'<td class="num">{lag_time(g.lag_seconds)}</td><td class="num">{_parked(g)}</td>'
        f'<td class="reason">{escape(g.reason)}</td></tr>'
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
        return UNKNOWN
    due = "" if group.next_retry_at is None else f" · next {time_tag_of_epoch(group.next_retry_at)}"
    return f"{number(group.parked)}{due}"


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
    success = UNKNOWN if ratio is None else f"{ratio * 100:.1f} %"
    failing = app.failing_consents + app.disabled_consents
    name = f'<br><span class="count">{escape(app.name)}</span>' if app.name else ""
    return (
        f'<tr data-app="{escape(app.app_id)}"><td>{escape(app.app_id)}{name}</td>'
        f'<td><span class="badge {escape(app.state.replace(" ", "-"))}">'
        f"{escape(app.state)}</span></td>"
        f'<td class="num">{number(app.active_consents)}</td>'
        f'<td class="num">{number(app.delivered)}</td>'
        f'<td class="num">{number(app.dead_letters)}</td><td class="num success">{success}</td>'
        f'<td class="num">{number(failing)}</td><td>{time_tag(app.last_delivered_at)}</td>'
        f'<td class="error">{escape(app.last_error or "")}</td></tr>'
    )


def _endpoints(endpoints: Sequence[EndpointProblem]) -> str:
    if not endpoints:
        return '<p class="empty">Every endpoint answers.</p>'
    rows = "".join(
        f'<tr data-app="{escape(p.app_id)}"><td>{escape(p.app_id)}</td>'
        f'<td><span class="badge {p.state}">{p.state}</span></td>'
        f'<td class="num">{p.consents}</td><td class="url">{escape(p.webhook_url or "?")}</td>'
        f'<td class="error">{escape(_error_text(p))}</td><td>{time_tag(p.updated_at)}</td></tr>'
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
        return f'<p class="empty">Dead letters unknown: {escape(reason)}</p>'
    if not summary.letters:
        return '<p class="empty" id="no-dead-letters">No dead letters.</p>'
    stages = ", ".join(
        f"{escape(stage)}: {count}" for stage, count in sorted(summary.by_stage().items())
    )
    apps = ", ".join(f"{escape(app)}: {count}" for app, count in sorted(summary.by_app().items()))
    counts = (
        f'<p id="dead-letter-counts">by stage: {stages}'
        + (f"<br>by app: {apps}" if apps else "")
        + (f"<br>replayed: {summary.redeliveries}" if summary.redeliveries else "")
        + "</p>"
    )
    reasons = "".join(
        f'<tr><td class="num">{count}</td><td class="reason">{escape(reason)}</td></tr>'
        for reason, count in list(summary.by_reason.items())[:8]
    )
    latest = "".join(
        f'<tr><td class="num">{b.offset}</td><td>{time_tag_of_epoch(b.at)}</td>'
        f"<td>{escape(b.stage)}</td>"
        f'<td>{escape(b.app_id or "")}</td><td class="reason">{escape(b.source)}</td>'
        f'<td class="error">{escape(b.reason[:200])}</td></tr>'
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
        f'<th class="num">{escape(h)}</th>' if i in right else f"<th>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    return f'<table id="{ident}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
