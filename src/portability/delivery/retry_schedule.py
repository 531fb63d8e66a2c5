"""How long to wait before the next attempt of a failed delivery."""

from __future__ import annotations

import random

__all__ = ["backoff_seconds"]


def backoff_seconds(
    attempt: int, base_s: float, max_s: float, retry_after_s: float | None = None
) -> float:
    """Exponential backoff with full jitter, honouring a server's ``Retry-After`` within bounds.

    ``attempt`` counts failures so far (1 after the first). Jitter spreads the retries of many
    consents that failed together, so that a recovering endpoint is not hit all at once.
    """
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), max_s)
    ceiling = min(max_s, base_s * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
