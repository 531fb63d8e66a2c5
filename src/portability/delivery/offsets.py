"""Which offset of a partition may be committed when deliveries finish out of order."""

from __future__ import annotations

from collections import deque

__all__ = ["OffsetTracker"]


class OffsetTracker:
    """Offsets of one partition in arrival order; commit up to the first one not done.

    Deliveries of different consents finish in any order, but a committed offset promises
    that everything before it is done (delivered, dropped or dead-lettered).
    """

    def __init__(self) -> None:
        self._pending: deque[int] = deque()  # arrival order, up to the first one not done
        self._open: set[int] = set()  # not done
        self._committable: int | None = None

    def __len__(self) -> int:
        """Offsets not committable yet: not done, or done behind one that is not."""
        return len(self._pending)

    @property
    def outstanding(self) -> int:
        """Offsets not done: the records still held for this partition."""
        return len(self._open)

    def add(self, offset: int) -> None:
        self._pending.append(offset)
        self._open.add(offset)

    def done(self, offset: int) -> None:
        """Mark ``offset`` done; done twice, or never added, it changes nothing."""
        self._open.discard(offset)
        while self._pending and self._pending[0] not in self._open:
            self._committable = self._pending.popleft() + 1

    def take_committable(self) -> int | None:
        """The offset to commit if it advanced since the last call, else None."""
        committable, self._committable = self._committable, None
        return committable

    def give_back(self, offset: int) -> None:
        """An offset taken but not committed (its commit was held): committed next time,
        unless a later one is by then."""
        if self._committable is None or self._committable < offset:
            self._committable = offset
