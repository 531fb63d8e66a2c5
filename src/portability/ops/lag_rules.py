"""How a consumer group is judged from samples of its offsets: rules in the spirit of Burrow.

A single lag number says little: 5,000 records behind is fine for a group that is draining
a burst and alarming for one that has not moved in ten minutes. So, like LinkedIn's Burrow,
each partition is judged over a window of samples (committed offset, end offset, lag), and
the group takes the worst status of its partitions. Everything here is pure: the Kafka
reading is in :mod:`portability.ops.lag`, and tests feed crafted sample sequences.

Kafka does not say *when* an offset was committed (Burrow reads ``__consumer_offsets`` for
that), so "no commits" is judged from what the samples can see: the committed offset not
moving, together with the group's membership.

One partition is held still on purpose: the delivery worker keeps its commit on a
``deliveries.retry`` partition at the oldest parked record it still owes, for as long as that
record waits for its retry (minutes to hours). Such a partition is judged from the record
holding it (a :class:`ParkedHold`, read by :mod:`portability.ops.lag_parked`): PARKED while
its retry is due in the future, or due less than a margin ago, and a WARNING once overdue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise
from typing import Any

__all__ = [
    "EXIT_CODES",
    "PARKED_OVERDUE_S",
    "ParkedHold",
    "PartitionHistory",
    "PartitionSample",
    "Status",
    "Verdict",
    "evaluate_partition",
    "group_verdict",
    "lag_records",
    "lag_seconds",
    "worst_status",
]

# A parked retry due longer ago than this is overdue: the worker should have tried it. Longer
# than an endpoint's longest open circuit (10 x PORTABILITY_DELIVERY_CIRCUIT_OPEN_S, 5 min by
# default) plus the worker's own re-checks, so that a circuit's normal wait is not reported.
PARKED_OVERDUE_S = 900.0


class Status(StrEnum):
    """A partition's or a group's state; the declaration order is the order of severity."""

    OK = "OK"
    PARKED = "PARKED"  # waiting on purpose: parked retries not due yet (OK for the pipeline)
    WARNING = "WARNING"
    REWOUND = "REWOUND"
    STALLED = "STALLED"
    STOPPED = "STOPPED"
    UNKNOWN = "UNKNOWN"

    @property
    def severity(self) -> int:
        return list(Status).index(self)

    @property
    def exit_code(self) -> int:
        """What ``portability lag`` exits with when this is the worst status.

        The table of exit codes is in docs/operations.md, "Reading lag".
        """
        return EXIT_CODES[self]


# 1 (Kafka unreachable, no topics) and 2 (a usage error: typer's, or a missing setting) are
# taken by the command's failures, so the statuses that need attention start at 3, in order
# of severity: a script can test ``-ge 5`` for "the pipeline is not consuming".
EXIT_CODES: dict[Status, int] = {
    Status.OK: 0,
    Status.PARKED: 0,
    Status.WARNING: 3,
    Status.REWOUND: 4,
    Status.STALLED: 5,
    Status.STOPPED: 6,
    Status.UNKNOWN: 7,
}


def worst_status(statuses: Iterable[Status]) -> Status:
    """The most severe of ``statuses``; OK when there are none."""
    return max(statuses, key=lambda status: status.severity, default=Status.OK)


@dataclass(frozen=True, slots=True)
class ParkedHold:
    """The parked record a retry partition's committed offset is held at, and when its retry
    is due, as the delivery worker wrote it in the ``retry.*`` headers of its copies.

    The due time is that of the latest copy of the record's consent: a consent's deliveries
    are tried in order, so a record never tried yet (``failures`` 0) waits for the retry of an
    earlier one, whose newer copy may lie further on in the partition.
    """

    offset: int
    consent_id: str
    failures: int  # failed attempts, as the retry state deciding the wait says
    due_at: float | None  # epoch seconds; None: not known (see endpoint_disabled)
    endpoint_disabled: bool = False  # held until the app's endpoint gets a new webhook URL

    def as_dict(self) -> dict[str, Any]:
        due = None if self.due_at is None else _iso(self.due_at)
        return {
            "offset": self.offset,
            "consent_id": self.consent_id,
            "failures": self.failures,
            "due_at": due,
            "endpoint_disabled": self.endpoint_disabled,
        }


@dataclass(frozen=True, slots=True)
class PartitionSample:
    """One reading of one group on one partition.

    ``committed`` is None when the group has no committed offset there; it then starts
    from ``start`` (the log start offset), as the pipeline's consumers reset to earliest.
    """

    at: float  # wall-clock seconds (time.time()) of the reading
    committed: int | None
    start: int
    end: int
    lag_seconds: float | None = 0.0  # age of the oldest unconsumed record; None: unknown
    parked: ParkedHold | None = None  # a retry partition held at a parked record

    @property
    def position(self) -> int:
        """Where the group consumes from next: its committed offset, else the log start."""
        return self.committed if self.committed is not None else self.start

    @property
    def lag(self) -> int:
        return lag_records(self.committed, self.start, self.end)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A status and, for the operator, why."""

    status: Status
    reason: str


def lag_records(committed: int | None, start: int, end: int) -> int:
    """Records between where the group consumes next and the partition's end (never < 0).

    A committed offset beyond the end (after a topic was recreated, say) is not negative
    lag: the consumer will be reset, and there is nothing to read.
    """
    position = committed if committed is not None else start
    return max(0, end - max(position, start))


def lag_seconds(lag: int, now: float, oldest_timestamp_ms: int | None) -> float | None:
    """Age of the oldest unconsumed record: 0 when caught up, None when its time is unknown.

    The record timestamp is the producer's (CreateTime) or the broker's (LogAppendTime);
    a clock ahead of ours would give a negative age, which is reported as 0.
    """
    if lag == 0:
        return 0.0
    if oldest_timestamp_ms is None or oldest_timestamp_ms < 0:
        return None
    return max(0.0, now - oldest_timestamp_ms / 1000)


class PartitionHistory:
    """The last ``window`` samples of one group on one partition, and since when its
    position has not moved (which can be longer ago than the window reaches)."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("the evaluation window holds at least one sample")
        self.samples: deque[PartitionSample] = deque(maxlen=window)
        self.unchanged_since: float | None = None

    def add(self, sample: PartitionSample) -> None:
        if not self.samples or self.samples[-1].position != sample.position:
            self.unchanged_since = sample.at
        self.samples.append(sample)

    def evaluate(
        self,
        has_members: bool | None,
        stop_after_s: float,
        parked_overdue_s: float = PARKED_OVERDUE_S,
    ) -> Verdict:
        since = self.unchanged_since if self.unchanged_since is not None else 0.0
        return evaluate_partition(
            list(self.samples),
            has_members=has_members,
            unchanged_since=since,
            stop_after_s=stop_after_s,
            parked_overdue_s=parked_overdue_s,
        )


def evaluate_partition(
    window: Sequence[PartitionSample],
    *,
    has_members: bool | None,
    unchanged_since: float,
    stop_after_s: float,
    parked_overdue_s: float = PARKED_OVERDUE_S,
) -> Verdict:
    """Judge one partition from its samples, oldest first; the last one is "now".

    In order: caught up (lag 0 now) is OK whatever happened before; a position that went
    back is REWOUND; a partition held at a parked record, in a group with members, is PARKED
    (a WARNING once its retry is overdue by ``parked_overdue_s``, see :func:`_parked`); a
    position that did not move is STOPPED when the group has no members or it has not moved
    for ``stop_after_s``, else STALLED when the lag stayed above 0; a lag that only grew is
    WARNING; anything else is OK (consuming, not falling behind). ``has_members`` is None
    when the broker could not say.
    """
    if not window:
        raise ValueError("no samples to evaluate")
    current = window[-1]
    if current.lag == 0:
        return Verdict(Status.OK, "caught up")
    rewind = _rewind(window)
    if rewind is not None:
        before, after = rewind
        return Verdict(Status.REWOUND, f"committed offset went back from {before} to {after}")
    if current.parked is not None and has_members is not False:
        # Without members nobody will retry it: the ordinary rules say STOPPED below.
        return _parked(current, current.parked, current.at - unchanged_since, parked_overdue_s)
    if _position_unchanged(window):
        verdict = _not_moving(window, has_members, current.at - unchanged_since, stop_after_s)
        if verdict is not None:
            return verdict
    return _trend(window)


def _rewind(window: Sequence[PartitionSample]) -> tuple[int, int] | None:
    for before, after in pairwise(window):
        if after.position < before.position:
            return before.position, after.position
    return None


def _position_unchanged(window: Sequence[PartitionSample]) -> bool:
    return len({sample.position for sample in window}) == 1


def _not_moving(
    window: Sequence[PartitionSample],
    has_members: bool | None,
    unchanged_s: float,
    stop_after_s: float,
) -> Verdict | None:
    """STOPPED or STALLED for a position that did not move in the window, else None."""
    current = window[-1]
    held = f"{_unmoved(current, unchanged_s)} with lag {current.lag}"
    if has_members is False:
        if len(window) == 1:
            return Verdict(Status.STOPPED, f"lag {current.lag} and the group has no members")
        return Verdict(Status.STOPPED, f"{held}; the group has no members")
    if unchanged_s >= stop_after_s:
        return Verdict(Status.STOPPED, f"{held} (stop threshold {stop_after_s:g} s)")
    if len(window) >= 2 and all(sample.lag > 0 for sample in window):
        return Verdict(Status.STALLED, held)
    return None


def _parked(
    current: PartitionSample, hold: ParkedHold, unchanged_s: float, overdue_s: float
) -> Verdict:
    """PARKED while the held record's retry is not due, or due less than ``overdue_s`` ago;
    WARNING past that: the worker should have tried it (an endpoint whose circuit stays open
    keeps its waiting consents past their time too: the status page shows that endpoint)."""
    held = f"parked record of consent {hold.consent_id}"
    if hold.endpoint_disabled:
        return Verdict(
            Status.PARKED, f"{held} waits for its app's endpoint (disabled) to get a new URL"
        )
    if hold.due_at is None:
        # Never tried, and the retry it waits behind was not found in what was read: judged
        # by how long the commit has stood still instead.
        if unchanged_s <= overdue_s:
            return Verdict(Status.PARKED, f"{held} waits behind its earlier records' retry")
        return Verdict(
            Status.WARNING,
            f"{held} at offset {hold.offset} has held the partition for {_span(unchanged_s)} "
            f"(overdue after {overdue_s:g} s)",
        )
    late = current.at - hold.due_at
    attempt = f"retry {hold.failures + 1}"
    if late <= 0:
        return Verdict(
            Status.PARKED, f"{held}: {attempt} due at {_clock(hold.due_at)}, in {_span(-late)}"
        )
    if late <= overdue_s:
        return Verdict(Status.PARKED, f"{held}: {attempt} due {_span(late)} ago, being retried")
    return Verdict(
        Status.WARNING,
        f"{held} at offset {hold.offset}: {attempt} was due {_span(late)} ago (overdue after "
        f"{overdue_s:g} s): its app's endpoint may still refuse (circuit open or disabled: "
        "see the status page), or the worker is stuck",
    )


def _trend(window: Sequence[PartitionSample]) -> Verdict:
    current = window[-1]
    if len(window) == 1:
        return Verdict(Status.WARNING, f"lag {current.lag} (one sample: no trend yet)")
    lags = [sample.lag for sample in window]
    growing = all(later >= earlier for earlier, later in pairwise(lags))
    if growing and lags[-1] > lags[0]:
        span = current.at - window[0].at
        return Verdict(Status.WARNING, f"lag grew from {lags[0]} to {lags[-1]} in {span:.1f} s")
    return Verdict(Status.OK, f"consuming, lag {current.lag} not growing")


def _unmoved(sample: PartitionSample, unchanged_s: float) -> str:
    if sample.committed is None:
        return f"no offset committed in {unchanged_s:.1f} s"
    return f"committed offset {sample.committed} unchanged for {unchanged_s:.1f} s"


def group_verdict(found: bool, partitions: Sequence[tuple[str, Verdict]]) -> Verdict:
    """A group's status: the worst of its partitions', that partition named in the reason.

    Of equally severe partitions the first is named, so a caller listing partitions in order
    gets the lowest-numbered one (a PARKED group also says how many more are parked). A group
    with neither members nor committed offsets is UNKNOWN: most likely a misspelled name, or
    a role that never ran.
    """
    if not found:
        return Verdict(
            Status.UNKNOWN, "group not found: no members and no committed offsets on its topics"
        )
    if not partitions:
        return Verdict(Status.UNKNOWN, "no committed offsets on any existing topic it reads")
    label, chosen = partitions[0]
    for candidate_label, candidate in partitions[1:]:
        if candidate.status.severity > chosen.status.severity:
            label, chosen = candidate_label, candidate
    if chosen.status is Status.OK:
        return Verdict(Status.OK, f"{len(partitions)} partition(s) caught up or consuming")
    if chosen.status is Status.PARKED:
        more = sum(1 for _, verdict in partitions if verdict.status is Status.PARKED) - 1
        others = f" (and {more} more parked partition(s))" if more else ""
        return Verdict(Status.PARKED, f"{label}: {chosen.reason}{others}")
    return Verdict(chosen.status, f"{label}: {chosen.reason}")


def _span(seconds: float) -> str:
    """A duration as an operator reads it: 42 s, 8m 05s, 2h 03m."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%H:%M:%S UTC")


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="milliseconds")
