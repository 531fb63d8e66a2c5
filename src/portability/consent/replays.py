"""Replay requests in the consent store: created by the API, advanced by the replay executor.

A replay is ``pending`` until the executor takes it, ``running`` while it posts, then ``done``
or ``failed`` (with ``last_error``). At most one replay per consent is unfinished at a time,
and an app has at most :data:`MAX_UNFINISHED_PER_APP` unfinished: each one reads a partition
of the deliveries topic, so they are not free.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from portability.consent._time import utc_now
from portability.consent.errors import ConflictError, NotFoundError
from portability.consent.models import Consent, ConsentReplay, ReplayState

__all__ = [
    "MAX_UNFINISHED_PER_APP",
    "ReplayInProgressError",
    "ReplayProgress",
    "ReplayStore",
    "ReplayView",
    "TooManyReplaysError",
]

MAX_UNFINISHED_PER_APP = 8
"""Unfinished (pending or running) replays one app may have at once, over all its consents."""

_UNFINISHED: tuple[ReplayState, ...] = ("pending", "running")
_MAX_ERROR = 2000


class ReplayInProgressError(ConflictError):
    """The consent already has an unfinished replay; ``replay_id`` names it."""

    code = "replay_in_progress"

    def __init__(self, consent_id: str, replay_id: str) -> None:
        super().__init__(
            f"consent {consent_id!r} already has replay {replay_id!r} in progress: wait for it "
            f"to finish (GET /v1/consents/{consent_id}/replays/{replay_id}), then ask again"
        )
        self.replay_id = replay_id


class TooManyReplaysError(ConflictError):
    """The app has :data:`MAX_UNFINISHED_PER_APP` unfinished replays already."""

    code = "too_many_replays"


@dataclass(frozen=True, slots=True)
class ReplayView:
    """One replay request and its progress, as stored.

    Attributes:
        replay_id: ``rpl_`` and 16 hex digits.
        consent_id: The consent whose deltas are replayed.
        app_id: The consent's app, which receives them.
        requested_by: Role of the caller that asked: ``app`` or ``operator``.
        from_sequence: Replay deltas with at least this sequence (or None).
        since: Replay deltas the pipeline produced at or after this time (or None).
        state: ``pending``, ``running``, ``done`` or ``failed``.
        deltas_found: Deltas of the consent in range found on the topic so far.
        deltas_sent: Of those, delivered (2xx) so far.
        requests: HTTP requests made to the app's endpoint, retries included.
        first_sequence: Lowest sequence found; above ``from_sequence`` when older deltas
            are beyond the topic's retention.
        last_sequence: Highest sequence found.
        last_error: Why it failed, or the last failure it retried past.
        created_at: When it was requested.
        started_at: When the executor took it.
        finished_at: When it ended (done or failed).
    """

    replay_id: str
    consent_id: str
    app_id: str
    requested_by: str
    from_sequence: int | None
    since: datetime | None
    state: ReplayState
    deltas_found: int
    deltas_sent: int
    requests: int
    first_sequence: int | None
    last_sequence: int | None
    last_error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: ConsentReplay) -> ReplayView:
        """Snapshot a ``ConsentReplay`` row."""
        return cls(
            replay_id=row.replay_id,
            consent_id=row.consent_id,
            app_id=row.app_id,
            requested_by=row.requested_by,
            from_sequence=row.from_sequence,
            since=row.since,
            state=cast("ReplayState", row.state),
            deltas_found=row.deltas_found,
            deltas_sent=row.deltas_sent,
            requests=row.requests,
            first_sequence=row.first_sequence,
            last_sequence=row.last_sequence,
            last_error=row.last_error,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )

    @property
    def finished(self) -> bool:
        """Whether the replay ended (done or failed)."""
        return self.state not in _UNFINISHED


@dataclass(frozen=True, slots=True)
class ReplayProgress:
    """Counters the executor reports as it goes (absolute values, not increments)."""

    deltas_found: int = 0
    deltas_sent: int = 0
    requests: int = 0
    first_sequence: int | None = None
    last_sequence: int | None = None
    last_error: str | None = None


class ReplayStore:
    """Creates, reads and advances replays; every method is one short transaction.

    Synchronous like :class:`~portability.consent.ConsentService`: call it from async code
    with ``asyncio.to_thread``.
    """

    def __init__(self, engine: Engine) -> None:
        """Use ``engine``, whose schema :func:`~portability.consent.init_schema` created."""
        self._engine = engine

    def create(
        self,
        consent_id: str,
        requested_by: str,
        *,
        from_sequence: int | None = None,
        since: datetime | None = None,
    ) -> ReplayView:
        """Record a pending replay of ``consent_id``.

        The consent's row is locked first (PostgreSQL), so two concurrent requests for the
        same consent cannot both pass the "nothing in progress" check.

        Raises:
            NotFoundError: No such consent.
            ReplayInProgressError: The consent already has an unfinished replay.
            TooManyReplaysError: Its app has too many unfinished replays.
        """
        with Session(self._engine) as session, session.begin():
            query = select(Consent).where(col(Consent.consent_id) == consent_id)
            consent = session.exec(query.with_for_update()).first()
            if consent is None:
                raise NotFoundError(f"no consent {consent_id!r}: check the id")
            running = session.exec(
                select(ConsentReplay.replay_id).where(
                    col(ConsentReplay.consent_id) == consent_id,
                    col(ConsentReplay.state).in_(_UNFINISHED),
                )
            ).first()
            if running is not None:
                raise ReplayInProgressError(consent_id, running)
            self._check_app_limit(session, consent.app_id)
            row = ConsentReplay(
                replay_id=f"rpl_{secrets.token_hex(8)}",
                consent_id=consent_id,
                app_id=consent.app_id,
                requested_by=requested_by,
                from_sequence=from_sequence,
                since=since,
                state="pending",
                created_at=utc_now(),
            )
            session.add(row)
            session.flush()
            return ReplayView.of(row)

    @staticmethod
    def _check_app_limit(session: Session, app_id: str) -> None:
        unfinished = session.exec(
            select(func.count()).where(
                col(ConsentReplay.app_id) == app_id, col(ConsentReplay.state).in_(_UNFINISHED)
            )
        ).one()
        if unfinished >= MAX_UNFINISHED_PER_APP:
            raise TooManyReplaysError(
                f"app {app_id!r} has {unfinished} replays in progress, the most allowed: "
                "wait for one to finish, then ask again"
            )

    def get(self, replay_id: str) -> ReplayView:
        """The replay ``replay_id``.

        Raises:
            NotFoundError: No such replay.
        """
        with Session(self._engine) as session:
            row = session.get(ConsentReplay, replay_id)
            if row is None:
                raise NotFoundError(f"no replay {replay_id!r}: check the id")
            return ReplayView.of(row)

    def start(self, replay_id: str) -> ReplayView:
        """Mark the replay running."""
        return self._update(replay_id, state="running", started_at=utc_now())

    def progress(self, replay_id: str, progress: ReplayProgress) -> ReplayView:
        """Record the executor's counters."""
        return self._update(replay_id, **_progress_fields(progress))

    def finish(
        self, replay_id: str, progress: ReplayProgress, *, error: str | None = None
    ) -> ReplayView:
        """End the replay: ``done``, or ``failed`` with ``error``."""
        fields = _progress_fields(progress)
        if error is not None:
            fields["last_error"] = error[:_MAX_ERROR]
        return self._update(
            replay_id, state="failed" if error else "done", finished_at=utc_now(), **fields
        )

    def fail_unfinished(
        self, reason: str, replay_ids: Sequence[str] | None = None
    ) -> list[ReplayView]:
        """Fail pending or running replays with ``reason``: they do not run any more.

        Called when the API starts (nothing survives a restart: every unfinished replay) and
        when it stops (the ones it was running, ``replay_ids``).
        """
        now = utc_now()
        query = select(ConsentReplay).where(col(ConsentReplay.state).in_(_UNFINISHED))
        if replay_ids is not None:
            query = query.where(col(ConsentReplay.replay_id).in_(replay_ids))
        with Session(self._engine) as session, session.begin():
            rows = session.exec(query).all()
            for row in rows:
                row.state = "failed"
                row.last_error = reason[:_MAX_ERROR]
                row.finished_at = now
                session.add(row)
            session.flush()
            return [ReplayView.of(row) for row in rows]

    def _update(self, replay_id: str, **fields: object) -> ReplayView:
        with Session(self._engine) as session, session.begin():
            row = session.get(ConsentReplay, replay_id)
            if row is None:
                raise NotFoundError(f"no replay {replay_id!r}: check the id")
            for name, value in fields.items():
                setattr(row, name, value)
            session.add(row)
            session.flush()
            return ReplayView.of(row)


def _progress_fields(progress: ReplayProgress) -> dict[str, object]:
    fields: dict[str, object] = {
        "deltas_found": progress.deltas_found,
        "deltas_sent": progress.deltas_sent,
        "requests": progress.requests,
        "first_sequence": progress.first_sequence,
        "last_sequence": progress.last_sequence,
    }
    if progress.last_error is not None:
        fields["last_error"] = progress.last_error[:_MAX_ERROR]
    return fields
