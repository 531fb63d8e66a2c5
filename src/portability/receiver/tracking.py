"""What a recipient keeps per consent and overall: unique deltas, sequences, gaps, latency."""

from __future__ import annotations

import bisect
import collections
import math
from array import array
from dataclasses import dataclass, field

from portability.webhooks.parsing import Delta

__all__ = ["ConsentLog", "LatencyRecorder", "SequenceRange"]

SequenceRange = tuple[int, int]
"""An inclusive range of sequence numbers, ``(first, last)``."""


@dataclass
class ConsentLog:
    """The unique deltas of one consent in arrival order, and the state of its sequence.

    Sequences of a consent start at 1, so everything below the highest one seen that has not
    arrived is missing. Memory stays small however long a consent lives: sequences up to
    ``contiguous`` are one number, only those above it (beyond a gap) are kept one by one;
    with ``retain`` False the deltas themselves are not kept either.
    """

    deltas: list[Delta] = field(default_factory=list)
    sequences: set[int] = field(default_factory=set)  # arrived, above ``contiguous``
    highest: int = 0
    detected_gaps: list[SequenceRange] = field(default_factory=list)
    contiguous: int = 0  # every sequence from 1 to this one has arrived
    retain: bool = True
    restart_next: bool = False  # a snapshot ended: the next delta's sequence starts afresh

    def restart_after_snapshot(self) -> None:
        """A snapshot was received: deltas it holds are skipped, so the next delta's sequence
        is where the consent's sequence continues, not a gap."""
        self.restart_next = True

    def has(self, sequence: int) -> bool:
        """Whether a delta with ``sequence`` arrived already."""
        return sequence <= self.contiguous or sequence in self.sequences

    def add(self, delta: Delta) -> tuple[SequenceRange | None, int]:
        """Record a delta whose id was not seen before.

        Args:
            delta: The new delta.

        Returns:
            The gap its arrival revealed, if any, and the change in missing sequence numbers
            (positive when a gap opened, -1 when a missing one arrived late, else 0).
        """
        if self.retain:
            self.deltas.append(delta)
        sequence = delta.sequence
        if self.restart_next and not self.has(sequence):
            self.restart_next = False
            self.contiguous = max(self.contiguous, sequence - 1)
            self.sequences = {s for s in self.sequences if s > self.contiguous}
            self.highest = max(self.highest, sequence - 1)
        if self.has(sequence):
            # A new id reusing a sequence is the sender's bug; the sequence count stays right.
            return None, 0
        self.sequences.add(sequence)
        while self.contiguous + 1 in self.sequences:
            self.contiguous += 1
            self.sequences.discard(self.contiguous)
        if sequence < self.highest:
            return None, -1
        previous, self.highest = self.highest, sequence
        if sequence == previous + 1:
            return None, 0
        gap = (previous + 1, sequence - 1)
        self.detected_gaps.append(gap)
        return gap, sequence - previous - 1

    def missing_ranges(self) -> list[SequenceRange]:
        """Sequence numbers still absent below the highest one seen, as inclusive ranges."""
        ranges: list[SequenceRange] = []
        expected = self.contiguous + 1
        for sequence in sorted(self.sequences):
            if sequence > expected:
                ranges.append((expected, sequence - 1))
            expected = sequence + 1
        return ranges


class LatencyRecorder:
    """Latencies kept sorted as they arrive, so percentiles are cheap to read on every request.

    A compact array of doubles: inserting is a memmove, far cheaper than re-sorting per read.

    Args:
        window: Keep only the latest this many (percentiles of recent traffic, bounded memory
            for a long-running receiver); None keeps all.
    """

    def __init__(self, window: int | None = None) -> None:
        if window is not None and window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self._sorted: array[float] = array("d")
        self._window = window
        self._arrivals: collections.deque[float] = collections.deque()

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, latency_ms: float) -> None:
        """Record one latency in milliseconds (dropping the oldest beyond the window)."""
        bisect.insort(self._sorted, latency_ms)
        if self._window is None:
            return
        self._arrivals.append(latency_ms)
        if len(self._arrivals) > self._window:
            oldest = self._arrivals.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]

    def percentile(self, percent: float) -> float | None:
        """The nearest-rank percentile, or None before any latency was recorded.

        Args:
            percent: Between 0 (exclusive) and 100 (inclusive).

        Returns:
            The smallest recorded latency with at least ``percent`` % of them at or below it.
        """
        if not self._sorted:
            return None
        rank = math.ceil(percent / 100 * len(self._sorted))
        return self._sorted[max(rank, 1) - 1]
