"""What the operator status page shows, gathered from the API process's sources.

One :class:`StatusSnapshot` per request, from:

- the lag sampler (consumer lag, a status per group, and the lag history for the chart);
- the delivery status board (the latest ``delivery.status`` record of every consent): which
  apps' endpoints fail or are disabled, and why; deltas delivered per app;
- the dead-letter counter (letters per stage and app, the newest letters);
- the consent store (apps, active consents, the outbox relay's backlog).

The snapshot and its rows are in :mod:`portability.api.status_snapshot`; it is rendered as HTML
by :mod:`portability.api.status_page` and served as JSON (``as_dict``) for scripts; both come
from the same object, so they always agree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from portability.api.delivery_status import DeliveryStatusBoard
from portability.api.status_snapshot import (
    AppHealth,
    EndpointProblem,
    GroupHealth,
    Health,
    Problem,
    Severity,
    StatusSnapshot,
)
from portability.consent import AppView, ConsentService
from portability.ops.dead_letters.counts import (
    LATEST_KEPT,
    DeadLetterCounter,
    DeadLetterSummary,
    follow_dead_letters,
)
from portability.ops.lag_rules import Status
from portability.ops.lag_sampler import LagSampler, LagView
from portability.ops.store_counts import StoreCounts, read_store_counts
from portability.settings import Settings
from portability.wire.records import DeliveryStatusRecord

__all__ = ["MAX_APPS", "OperatorStatus"]

log = logging.getLogger(__name__)

_CRITICAL_GROUP = {Status.STOPPED, Status.STALLED}
_WARNING_GROUP = {Status.WARNING, Status.REWOUND, Status.UNKNOWN}
# PARKED is no problem: retries wait on purpose, and their endpoints' trouble is listed apart.
MAX_APPS = 100  # rows of the app table; the JSON says how many were left out


@dataclass(slots=True)
class OperatorStatus:
    """The sources of the status page; :meth:`snapshot` reads them (blocking: a thread)."""

    settings: Settings
    engine: Engine
    board: DeliveryStatusBoard
    lag: LagSampler | None = None
    dead_letters: DeadLetterCounter | None = None
    bootstrap: str | None = None  # the Kafka that lag and dead letters are read from
    clock: Callable[[], float] = field(default=time.time)

    def follow_kafka(self, bootstrap: str, stop: asyncio.Event) -> list[Coroutine[Any, Any, None]]:
        """Add a lag sampler and a dead-letter counter on ``bootstrap``; returns the loops that
        feed them, for the caller to run until ``stop``."""
        self.bootstrap = bootstrap
        self.lag = LagSampler(self.settings, bootstrap)
        self.dead_letters = DeadLetterCounter()
        return [
            self.lag.run(stop),
            follow_dead_letters(self.settings, bootstrap, self.dead_letters, stop),
        ]

    def snapshot(self) -> StatusSnapshot:
        now = self.clock()
        store, apps = self._read_store()
        view = self.lag.view if self.lag is not None else LagView()
        letters = self.dead_letters.summary if self.dead_letters else DeadLetterSummary()
        records = self.board.all()
        groups = _groups(view)
        app_rows = _apps(apps, store, records, letters)
        endpoints = _endpoints(records, {app.app_id: app for app in apps})
        problems = self._problems(now, view, groups, endpoints, letters, store)
        return StatusSnapshot(
            at=now,
            health=_health(problems, kafka=self.bootstrap is not None),
            problems=tuple(problems),
            kafka=self.bootstrap,
            lag=view,
            history_s=self.settings.lag_history_s,
            groups=groups,
            apps=tuple(app_rows[:MAX_APPS]),
            apps_left_out=max(len(app_rows) - MAX_APPS, 0),
            endpoints=endpoints,
            dead_letters=letters,
            store=store,
            delivery_status_available=self.board.available,
        )

    def _read_store(self) -> tuple[StoreCounts | None, list[AppView]]:
        try:
            return read_store_counts(self.engine), ConsentService(self.engine).list_apps()
        except SQLAlchemyError as error:
            log.warning("status page: cannot read the consent store: %s", error)
            return None, []

    def _problems(
        self,
        now: float,
        view: LagView,
        groups: Sequence[GroupHealth],
        endpoints: Sequence[EndpointProblem],
        letters: DeadLetterSummary,
        store: StoreCounts | None,
    ) -> list[Problem]:
        problems: list[Problem] = []
        if store is None:
            problems.append(Problem("critical", "the consent store cannot be read (see logs)"))
        if self.bootstrap is None:
            return problems  # nothing else can be known
        if view.error is not None:
            problems.append(
                Problem(
                    "critical",
                    f"Kafka at {self.bootstrap} unreachable or failing; cannot sample consumer "
                    f"lag: {view.error}",
                )
            )
        problems += _group_problems(groups)
        for endpoint in endpoints:
            severity: Severity = "critical" if endpoint.state == "disabled" else "warning"
            problems.append(
                Problem(
                    severity,
                    f"endpoint of {endpoint.app_id} {endpoint.state} "
                    f"({endpoint.consents} consent(s)): {endpoint.last_error or '?'}",
                )
            )
        recent = [b for b in letters.latest if b.at is not None and b.at >= now - self.history_s]
        if recent:
            problems.append(
                Problem(
                    "warning",
                    f"{len(recent)}{'+' if len(recent) >= LATEST_KEPT else ''} dead "
                    f"letter(s) in the last {_span(self.history_s)}; newest: "
                    f"{recent[-1].reason[:120]}",
                )
            )
        if letters.error is not None:
            problems.append(Problem("warning", f"dead-letter counts: {letters.error}"))
        return problems

    @property
    def history_s(self) -> float:
        return self.settings.lag_history_s


def _groups(view: LagView) -> tuple[GroupHealth, ...]:
    if view.latest is None:
        return ()
    return tuple(
        GroupHealth(
            group=group.group,
            status=str(group.verdict.status),
            reason=group.verdict.reason,
            members=group.members,
            lag=group.lag,
            lag_seconds=group.lag_seconds,
            history=view.history.get(group.group, ()),
            parked=group.parked,
            next_retry_at=group.next_retry_at,
        )
        for group in view.latest.groups
    )


def _group_problems(groups: Iterable[GroupHealth]) -> list[Problem]:
    problems = []
    for group in groups:
        status = Status(group.status)
        if status in _CRITICAL_GROUP:
            problems.append(Problem("critical", f"{group.group} {status}: {group.reason}"))
        elif status in _WARNING_GROUP:
            problems.append(Problem("warning", f"{group.group} {status}: {group.reason}"))
    return problems


def _health(problems: Sequence[Problem], *, kafka: bool) -> Health:
    if any(problem.severity == "critical" for problem in problems):
        return "critical"
    if problems:
        return "warning"
    return "ok" if kafka else "unknown"


@dataclass(slots=True)
class _AppTally:
    consents: int = 0
    delivered: int = 0
    failing: int = 0
    disabled: int = 0
    last_delivered_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None

    def add(self, record: DeliveryStatusRecord) -> None:
        self.consents += 1
        self.delivered += record["last_sequence"]
        delivered_at = record["last_delivered_at"]
        if delivered_at is not None and (
            self.last_delivered_at is None or delivered_at > self.last_delivered_at
        ):
            self.last_delivered_at = delivered_at
        if not record["failing"]:
            return
        if record.get("endpoint_disabled"):
            self.disabled += 1
        else:
            self.failing += 1
        if self.last_error_at is None or record["updated_at"] > self.last_error_at:
            self.last_error, self.last_error_at = record["last_error"], record["updated_at"]


def _apps(
    apps: Sequence[AppView],
    store: StoreCounts | None,
    records: Iterable[DeliveryStatusRecord],
    letters: DeadLetterSummary,
) -> list[AppHealth]:
    """One row per app that has active consents, delivery status or dead letters; the apps
    with problems first."""
    tallies: dict[str, _AppTally] = {}
    for record in records:
        tallies.setdefault(record["app_id"], _AppTally()).add(record)
    active = store.active_by_app() if store is not None else {}
    dead = {app: n for (stage, app), n in letters.by_stage_app.items() if stage == "delivery"}
    known = {app.app_id: app for app in apps}
    shown = sorted(set(tallies) | {a for a, n in active.items() if n} | {a for a in dead if a})
    rows = []
    for app_id in shown:
        tally, view = tallies.get(app_id, _AppTally()), known.get(app_id)
        rows.append(
            AppHealth(
                app_id=app_id,
                name=view.name if view is not None else "",
                webhook_url=view.webhook_url if view is not None else None,
                enabled=view.enabled if view is not None else None,
                active_consents=active.get(app_id, 0),
                consents_delivered_to=tally.consents,
                delivered=tally.delivered,
                dead_letters=dead.get(app_id, 0),
                failing_consents=tally.failing,
                disabled_consents=tally.disabled,
                last_delivered_at=tally.last_delivered_at,
                last_error=tally.last_error,
                last_error_at=tally.last_error_at,
            )
        )
    rows.sort(key=lambda row: (-row.disabled_consents, -row.failing_consents, -row.dead_letters))
    return rows


def _endpoints(
    records: Iterable[DeliveryStatusRecord], apps: dict[str, AppView]
) -> tuple[EndpointProblem, ...]:
    failing: dict[str, list[DeliveryStatusRecord]] = {}
    for record in records:
        if record["failing"]:
            failing.setdefault(record["app_id"], []).append(record)
    problems = []
    for app_id, app_records in failing.items():
        latest = max(app_records, key=lambda r: r["updated_at"])
        disabled = any(r.get("endpoint_disabled") for r in app_records)
        view = apps.get(app_id)
        problems.append(
            EndpointProblem(
                app_id=app_id,
                webhook_url=view.webhook_url if view is not None else None,
                state="disabled" if disabled else "failing",
                consents=len(app_records),
                last_error=latest["last_error"],
                last_status=latest["last_status"],
                last_response=latest.get("last_response"),
                updated_at=latest["updated_at"],
            )
        )
    problems.sort(key=lambda p: (p.state != "disabled", p.app_id))
    return tuple(problems)


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
