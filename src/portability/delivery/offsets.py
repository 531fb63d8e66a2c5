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
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._committable: int | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, offset: int) -> None:
        self._pending.append(offset)

    def done(self, offset: int) -> None:
        self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            finished = self._pending.popleft()
            self._done.discard(finished)
            self._committable = finished + 1

    def take_committable(self) -> int | None:
        """The offset to commit if it advanced since the last call, else None."""
        committable, self._committable = self._committable, None
        return committable
