"""Consumer-group lag of the pipeline: sampled from Kafka, judged by :mod:`lag_rules`.

A sample reads, for each group, its committed offset on every partition of the pipeline's
topics, then fetches from that offset: the fetch answer carries the partition's end (its
high watermark) and the record at the committed offset, the oldest one the group has not
consumed, whose timestamp gives the lag in seconds. A :class:`LagMonitor` keeps a window of
samples per partition so the rules can see movement: lag growing, an offset standing still
or going back. On the retry topic, a partition held at a parked record is read further
(:mod:`portability.ops.lag_parked`) to say when that record is due.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition

from portability.broker.inspector import Inspector, PartitionRead
from portability.ops.errors import MissingTopicsError
from portability.ops.lag_parked import ParkedReader
from portability.ops.lag_rules import (
    PARKED_OVERDUE_S,
    ParkedHold,
    PartitionHistory,
    PartitionSample,
    Status,
    Verdict,
    group_verdict,
    lag_seconds,
    worst_status,
)
from portability.settings import Settings
from portability.wire.topics import TopicNames, pipeline_topics

__all__ = [
    "GroupLag",
    "LagMonitor",
    "LagOptions",
    "LagReport",
    "PartitionLag",
    "pipeline_groups",
    "sample_lag",
]

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class LagOptions:
    """What ``portability lag`` samples, how often, and how it judges."""

    groups: tuple[str, ...] = ()  # empty: the pipeline's groups
    samples: int | None = 3  # None: until cancelled
    interval_s: float = 1.0
    window: int = 10
    stop_after_s: float = 300.0
    parked_overdue_s: float = PARKED_OVERDUE_S


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One group on one partition: the latest sample and its verdict over the window."""

    tp: TopicPartition
    sample: PartitionSample
    verdict: Verdict

    @property
    def parked(self) -> bool:
        """Held at a parked record that is waiting as it should (its lag is no lag)."""
        return self.verdict.status is Status.PARKED

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.tp.topic,
            "partition": self.tp.partition,
            "committed": self.sample.committed,
            "start": self.sample.start,
            "end": self.sample.end,
            "lag": self.sample.lag,
            "lag_seconds": _rounded(self.sample.lag_seconds),
            "status": str(self.verdict.status),
            "reason": self.verdict.reason,
            "parked": None if self.sample.parked is None else self.sample.parked.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class GroupLag:
    """A group's verdict, members and partitions."""

    group: str
    verdict: Verdict
    members: int | None  # None: the broker could not say
    partitions: tuple[PartitionLag, ...] = ()

    @property
    def lag(self) -> int | None:
        """Records behind over the partitions not PARKED (parked records wait on purpose:
        see :attr:`parked`); None for a group with no partitions read."""
        if not self.partitions:
            return None
        return sum(p.sample.lag for p in self.partitions if not p.parked)

    @property
    def parked(self) -> int:
        """Records from the committed offset to the end of the PARKED partitions."""
        return sum(p.sample.lag for p in self.partitions if p.parked)

    @property
    def lag_seconds(self) -> float | None:
        """The oldest unconsumed record's age over the partitions not PARKED (None if
        unknown): a parked record is as old as its wait, which is no delay."""
        if not self.partitions:
            return None
        ages = [p.sample.lag_seconds for p in self.partitions if not p.parked]
        if any(age is None for age in ages):
            return None
        return max((age for age in ages if age is not None), default=0.0)

    @property
    def next_retry_at(self) -> float | None:
        """When the first of the PARKED partitions' held retries is due (None: none known)."""
        due = [
            p.sample.parked.due_at
            for p in self.partitions
            if p.parked and p.sample.parked is not None and p.sample.parked.due_at is not None
        ]
        return min(due, default=None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "status": str(self.verdict.status),
            "reason": self.verdict.reason,
            "members": self.members,
            "lag": self.lag,
            "lag_seconds": _rounded(self.lag_seconds),
            "parked": self.parked,
            "next_retry_at": None if self.next_retry_at is None else _iso(self.next_retry_at),
            "partitions": [p.as_dict() for p in self.partitions],
        }


@dataclass(frozen=True, slots=True)
class LagReport:
    """Every group's lag at one moment, judged over ``window`` samples."""

    at: float
    bootstrap: str
    window: int  # samples the verdicts are judged over (fewer than asked at the start)
    groups: tuple[GroupLag, ...]
    missing_topics: tuple[str, ...] = ()

    @property
    def status(self) -> Status:
        """The worst group's status (OK without groups): what ``portability lag`` exits by."""
        return worst_status(group.verdict.status for group in self.groups)

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document; its shape is documented in docs/operations.md."""
        return {
            "at": _iso(self.at),
            "bootstrap": self.bootstrap,
            "status": str(self.status),
            "window": self.window,
            "missing_topics": list(self.missing_topics),
            "groups": [group.as_dict() for group in self.groups],
        }


def pipeline_groups(settings: Settings) -> dict[str, tuple[str, ...]]:
    """The pipeline's consumer groups and the topics each consumes.

    Listing them lets a group that never committed still show its whole backlog; topics a
    group commits on beyond these are found from its offsets. The worker's retry topic is
    listed so that its parked records show before it ever committed there.
    """
    names = TopicNames.with_prefix(settings.topic_prefix)
    return {
        settings.matcher_group: (names.account_changes, names.consents),
        settings.delivery_group: (names.deliveries, names.notifications, names.deliveries_retry),
        settings.state_group: (names.account_changes,),
    }


@dataclass(slots=True)
class _GroupReading:
    committed: dict[TopicPartition, int | None]
    members: int | None
    tps: list[TopicPartition] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.members) or any(o is not None for o in self.committed.values())


class LagMonitor:
    """Samples groups' lag through an :class:`Inspector` and keeps each partition's window.

    ``groups`` maps each group to the topics it is known to consume (may be empty);
    ``topics`` are every topic the groups' committed offsets are looked for on;
    ``parked_topics`` those where a partition may be held at a parked record on purpose
    (the worker's retry topic).
    """

    def __init__(
        self,
        inspector: Inspector,
        groups: Mapping[str, Sequence[str]],
        topics: Sequence[str],
        *,
        window: int = 10,
        stop_after_s: float = 300.0,
        parked_topics: Collection[str] = (),
        parked_overdue_s: float = PARKED_OVERDUE_S,
        clock: Clock = time.time,
    ) -> None:
        self._inspector = inspector
        self._groups = {group: tuple(expected) for group, expected in groups.items()}
        self._topics = tuple(dict.fromkeys([*topics, *(t for e in groups.values() for t in e)]))
        self._window = window
        self._stop_after_s = stop_after_s
        self._parked = ParkedReader(parked_topics)
        self._parked_overdue_s = parked_overdue_s
        self._clock = clock
        self._histories: dict[tuple[str, TopicPartition], PartitionHistory] = {}
        self._taken = 0

    async def sample(self) -> LagReport:
        """Read every group once, add the readings to the windows, judge them."""
        layouts = await self._inspector.layouts(self._topics)
        missing = tuple(t for t in self._topics if t not in layouts)
        if not layouts:
            raise MissingTopicsError(list(missing), self._inspector.bootstrap)
        everything = [
            TopicPartition(t, p) for t, layout in layouts.items() for p in layout.partitions
        ]
        readings = {group: await self._read_group(group, everything) for group in self._groups}
        starts = await self._inspector.earliest({tp for r in readings.values() for tp in r.tps})
        reads = await self._read_partitions(readings, starts)
        holds = await self._read_holds(readings, starts, reads)
        now = self._clock()
        groups = tuple(
            self._judge(group, reading, starts, reads, holds, now)
            for group, reading in readings.items()
        )
        self._taken += 1
        window = min(self._taken, self._window)
        return LagReport(now, self._inspector.bootstrap, window, groups, missing)

    async def _read_group(self, group: str, everything: list[TopicPartition]) -> _GroupReading:
        reading = _GroupReading(
            committed=await self._inspector.committed(group, everything),
            members=await self._inspector.member_count(group),
        )
        if reading.found:
            committed_on = {tp.topic for tp, o in reading.committed.items() if o is not None}
            topics = set(self._groups[group]) | committed_on
            reading.tps = [tp for tp in everything if tp.topic in topics]
        return reading

    async def _read_partitions(
        self, readings: Mapping[str, _GroupReading], starts: Mapping[TopicPartition, int]
    ) -> dict[tuple[TopicPartition, int], PartitionRead]:
        """Fetch from every (partition, offset) a group consumes next; a partition two groups
        read at different offsets is fetched once per offset (one round each)."""
        wanted: dict[TopicPartition, set[int]] = {}
        for reading in readings.values():
            for tp in reading.tps:
                wanted.setdefault(tp, set()).add(_next_offset(reading.committed[tp], starts[tp]))
        reads: dict[tuple[TopicPartition, int], PartitionRead] = {}
        while wanted:
            round_ = {tp: offsets.pop() for tp, offsets in wanted.items()}
            for tp, read in (await self._inspector.read(round_)).items():
                reads[(tp, round_[tp])] = read
            wanted = {tp: offsets for tp, offsets in wanted.items() if offsets}
        return reads

    async def _read_holds(
        self,
        readings: Mapping[str, _GroupReading],
        starts: Mapping[TopicPartition, int],
        reads: Mapping[tuple[TopicPartition, int], PartitionRead],
    ) -> dict[tuple[str, TopicPartition], ParkedHold]:
        """The parked record each lagging partition of a parked topic is held at."""
        wanted: dict[tuple[str, TopicPartition], tuple[int, int]] = {}
        for group, reading in readings.items():
            for tp in reading.tps:
                if tp.topic not in self._parked.topics:
                    continue
                held = _next_offset(reading.committed[tp], starts[tp])
                end = reads[(tp, held)].end
                if end > held:
                    wanted[(group, tp)] = (held, end)
        return await self._parked.read(self._inspector, wanted)

    def _judge(
        self,
        group: str,
        reading: _GroupReading,
        starts: Mapping[TopicPartition, int],
        reads: Mapping[tuple[TopicPartition, int], PartitionRead],
        holds: Mapping[tuple[str, TopicPartition], ParkedHold],
        now: float,
    ) -> GroupLag:
        has_members = None if reading.members is None else reading.members > 0
        partitions = []
        for tp in reading.tps:
            committed, start = reading.committed[tp], starts[tp]
            read = reads[(tp, _next_offset(committed, start))]
            sample = _sample(now, committed, start, read, holds.get((group, tp)))
            history = self._histories.setdefault((group, tp), PartitionHistory(self._window))
            history.add(sample)
            verdict = history.evaluate(has_members, self._stop_after_s, self._parked_overdue_s)
            partitions.append(PartitionLag(tp, sample, verdict))
        self._forget_others(group, set(reading.tps))
        labelled = [(f"{p.tp.topic}[{p.tp.partition}]", p.verdict) for p in partitions]
        verdict = group_verdict(reading.found, labelled)
        return GroupLag(group, verdict, reading.members, tuple(partitions))

    def _forget_others(self, group: str, kept: set[TopicPartition]) -> None:
        """Drop the windows of partitions the group no longer reads (a topic was deleted)."""
        for key in [k for k in self._histories if k[0] == group and k[1] not in kept]:
            del self._histories[key]

    async def every(self, interval_s: float, count: int | None) -> AsyncIterator[LagReport]:
        """Sample every ``interval_s`` seconds, ``count`` times (None: until cancelled)."""
        taken = 0
        while count is None or taken < count:
            started = time.monotonic()
            yield await self.sample()
            taken += 1
            if count is None or taken < count:
                await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))


async def sample_lag(
    settings: Settings,
    bootstrap: str,
    options: LagOptions,
    on_report: Callable[[LagReport], None],
    timeout_s: float = 10.0,
) -> None:
    """Sample the groups of ``options`` (default: the pipeline's) as often as it says, and
    hand each report to ``on_report`` as it comes (a watch shows each; a run keeps the last)."""
    known = pipeline_groups(settings)
    groups = {g: known.get(g, ()) for g in options.groups} if options.groups else known
    names = TopicNames.with_prefix(settings.topic_prefix)
    topics = [spec.name for spec in pipeline_topics(names, settings.partitions)]
    async with Inspector(bootstrap, timeout_s) as inspector:
        monitor = LagMonitor(
            inspector,
            groups,
            topics,
            window=options.window,
            stop_after_s=options.stop_after_s,
            parked_topics=(names.deliveries_retry,),
            parked_overdue_s=options.parked_overdue_s,
        )
        async for report in monitor.every(options.interval_s, options.samples):
            on_report(report)


def _next_offset(committed: int | None, start: int) -> int:
    """Where a group reads next: its committed offset, or the log start if it has none or
    retention removed the records up to it."""
    return start if committed is None else max(committed, start)


def _sample(
    now: float, committed: int | None, start: int, read: PartitionRead, hold: ParkedHold | None
) -> PartitionSample:
    end = max(read.end, start)
    partial = PartitionSample(at=now, committed=committed, start=start, end=end)
    age = lag_seconds(partial.lag, now, read.first_timestamp_ms)
    return PartitionSample(now, committed, start, end, lag_seconds=age, parked=hold)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="milliseconds")
