"""When a failed delivery is tried again, and when it is given up.

The default schedule is the one the best webhook services use: at once, then after 5 s, 5 min,
30 min, 2 h, 5 h, 10 h and 10 h; a delivery failing all eight attempts is dead-lettered.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RetrySchedule"]


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Waits before each attempt, with jitter.

    Attributes:
        waits_s: ``waits_s[n]`` is the wait before attempt ``n + 1``; its length is the
            number of attempts.
        jitter: Each wait is multiplied by a random factor in ``[1 - jitter, 1 + jitter]`` so
            the retries of many consents that failed together spread out and a recovering
            endpoint is not hit all at once.
    """

    waits_s: Sequence[float]
    jitter: float = 0.2

    @property
    def attempts(self) -> int:
        return len(self.waits_s)

    def next_wait(self, failures: int, retry_after_s: float | None = None) -> float | None:
        """Seconds to wait after ``failures`` failed attempts; None when none is left.

        A ``Retry-After`` the endpoint sent (already bounded by the sender) is honoured when it
        asks for more than the schedule would wait: the endpoint knows its own load.
        """
        if failures >= self.attempts:
            return None
        wait = self.waits_s[failures] * random.uniform(1 - self.jitter, 1 + self.jitter)
        if retry_after_s is not None:
            wait = max(wait, retry_after_s)
        return wait
