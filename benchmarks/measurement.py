"""One timed pass over the benchmark's changes."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["InvalidRunError", "Measurement"]


class InvalidRunError(Exception):
    """A measured path did not do the work it was given, so its rate means nothing."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """Changes handled by one path in one run; ``deltas`` where the path matches consents."""

    path: str
    run: int
    changes: int
    seconds: float
    decoded: int
    complete: bool = True  # False: the run timed out, and these are the figures so far
    seen: int | None = None  # the path's own count of changes, where it keeps one
    deltas: int | None = None
    start_s: float | None = None
    consents_s: float | None = None

    @property
    def rate(self) -> float:
        return self.changes / self.seconds if self.seconds > 0 else 0.0
