"""Consumer lag sampled in the background, for the status page and the lag metrics.

The API process runs one :class:`LagSampler`: every ``lag_sample_interval_s`` it samples the
pipeline's groups with the same :class:`~portability.ops.lag.LagMonitor` that ``portability
lag`` uses (so the page, the metrics and the command agree on lag and status), and keeps the
last ``lag_history_s`` seconds of each group's lag in a ring buffer for the page's chart.

Readers may be on other threads (a metrics scrape runs in a worker thread): after each sample
the sampler publishes a new immutable :class:`LagView`, swapped in by one assignment, so a
reader never sees a half-updated history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiokafka.errors import KafkaError

from portability.broker.inspector import Inspector
from portability.errors import PortabilityError
from portability.ops.lag import LagMonitor, LagReport, pipeline_groups
from portability.settings import Settings
from portability.wire.topics import TopicNames, pipeline_topics

__all__ = ["LagPoint", "LagSampler", "LagView"]

log = logging.getLogger(__name__)

# Samples a status is judged over: with the default 5 s interval, the last 50 s.
_JUDGING_WINDOW = 10


@dataclass(frozen=True, slots=True)
class LagPoint:
    """One group's lag at one sample."""

    at: float  # epoch seconds
    lag: int | None  # records; None when the group has no partitions (UNKNOWN)
    lag_seconds: float | None
    status: str


@dataclass(frozen=True, slots=True)
class LagView:
    """What the sampler knows now: the latest report, each group's history, the last error."""

    latest: LagReport | None = None
    history: Mapping[str, tuple[LagPoint, ...]] = field(default_factory=dict)
    error: str | None = None  # why the latest sample failed; None after a good one
    error_at: float | None = None


class LagSampler:
    """Samples the pipeline's consumer groups every ``interval_s`` until stopped."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        *,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._bootstrap = bootstrap
        self._interval_s = settings.lag_sample_interval_s
        # A sample may take longer than the interval on a slow broker: it then only waits less.
        self._timeout_s = min(timeout_s, max(self._interval_s * 4, 5.0))
        self._clock = clock
        points = max(2, math.ceil(settings.lag_history_s / self._interval_s) + 1)
        self._history: dict[str, deque[LagPoint]] = {}
        self._points = points
        self.view = LagView()
        self.samples = 0  # successful samples so far (tests wait on it)

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until ``stop`` is set; a failed sample is logged, kept as ``view.error``,
        and retried with a fresh connection at the next interval."""
        groups = pipeline_groups(self._settings)
        names = TopicNames.with_prefix(self._settings.topic_prefix)
        topics = [spec.name for spec in pipeline_topics(names, self._settings.partitions)]
        while not stop.is_set():
            try:
                async with Inspector(self._bootstrap, self._timeout_s) as inspector:
                    monitor = LagMonitor(
                        inspector,
                        groups,
                        topics,
                        window=_JUDGING_WINDOW,
                        parked_topics=(names.deliveries_retry,),
                        parked_overdue_s=self._settings.lag_parked_overdue_s,
                        clock=self._clock,
                    )
                    while not stop.is_set():
                        self._record(await monitor.sample())
                        await _pause(stop, self._interval_s)
            except (PortabilityError, KafkaError, OSError) as error:
                self._failed(str(error) or type(error).__name__)
                await _pause(stop, self._interval_s)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # this sampler is being stopped
                # A client library's own cancellation let out (see broker.stop_consumer):
                # the sampler must go on, or the status page would show the last good
                # sample for ever and never say that the broker is gone.
                self._failed("a Kafka client call was cancelled (the broker went away?)")
                await _pause(stop, self._interval_s)
            except Exception as error:
                # Whatever else a sample meets: logged, kept as the view's error, retried.
                log.exception("lag sampling failed unexpectedly; retried")
                self._failed(f"{type(error).__name__}: {error}")
                await _pause(stop, self._interval_s)

    def _record(self, report: LagReport) -> None:
        for group in report.groups:
            history = self._history.setdefault(group.group, deque(maxlen=self._points))
            history.append(
                LagPoint(report.at, group.lag, group.lag_seconds, str(group.verdict.status))
            )
        self.view = LagView(
            latest=report,
            history={group: tuple(points) for group, points in self._history.items()},
        )
        self.samples += 1

    def _failed(self, reason: str) -> None:
        if self.view.error != reason:
            log.warning("lag sampling failed (retried every %g s): %s", self._interval_s, reason)
        self.view = LagView(
            latest=self.view.latest, history=self.view.history, error=reason, error_at=self._clock()
        )


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
