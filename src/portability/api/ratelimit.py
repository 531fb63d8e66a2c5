"""Request rate limits: a token bucket per key, in memory.

Two limiters use it: one per app API key, and one per client address for the requests that
carry no valid token (registration, refused tokens), which no API key can be charged for.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimiter", "client_key"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``per_minute`` requests a minute per key, in bursts of up to ``per_minute``.

    Thread-safe (FastAPI runs sync dependencies in worker threads). State is per process:
    behind several API processes, each enforces the limit on its own. At most ``max_keys``
    buckets are kept: keys are client addresses for the per-client limit, which a caller can
    vary at will, so the map must not grow with them. Beyond it, full buckets go first (a
    full bucket is what a new key gets anyway), then the least recently used.
    """

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_keys: int = 100_000,
    ) -> None:
        """Allow ``per_minute`` requests a minute per key; ``clock`` is for tests."""
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take a token for ``key``.

        Returns:
            0 if the request may proceed, else the seconds until a token is available.
        """
        now = self._clock()
        with self._lock:
            # Popped and put back: the dict's order is then least recently used first.
            bucket = self._buckets.pop(key, None)
            if bucket is None:
                bucket = _Bucket(self._capacity, now)
                if len(self._buckets) >= self._max_keys:
                    self._evict(now)
            self._buckets[key] = bucket
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self._capacity, bucket.tokens + elapsed * self._rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self._rate

    def tracked(self) -> int:
        """How many keys have a bucket."""
        return len(self._buckets)

    def _evict(self, now: float) -> None:
        """Make room: drop refilled buckets, then the least recently used, down to 3/4.

        Down to 3/4 rather than one below the bound, so that a stream of new keys scans the
        map once per quarter of it, not once per key.
        """
        refill_s = self._capacity / self._rate
        for key in [k for k, b in self._buckets.items() if now - b.updated >= refill_s]:
            del self._buckets[key]
        target = self._max_keys * 3 // 4
        while len(self._buckets) > target:
            del self._buckets[next(iter(self._buckets))]

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """The ``Retry-After`` header value (whole seconds, at least 1) for a wait."""
        return str(max(1, math.ceil(wait_s)))


def client_key(host: str | None) -> str:
    """The per-client limit's key for a client address.

    An IPv6 client is keyed by its /64 network: one subscriber usually holds a whole /64,
    and keying by single addresses would give it 2**64 buckets to draw from.
    """
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # not an IP address (a Unix socket, a test client): its name
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # an IPv4 client on a dual-stack socket
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
