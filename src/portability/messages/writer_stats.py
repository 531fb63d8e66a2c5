"""What the message log's writer counts, and its once-a-minute log line.

The counts are served on the roles' ``/stats/`` view and logged; a lag in storing shows as
the consumer group's lag (``portability lag``), which the writer does not repeat.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

__all__ = ["StatsLine", "WriterStats"]

log = logging.getLogger("portability.messages.writer")  # the role's logger, as writer.py's

_INTERVAL_S: Final = 60.0


@dataclass(slots=True)
class WriterStats:
    """What the writer did since it started."""

    batches: int = 0
    entries_stored: int = 0
    messages_written: int = 0
    disclosed_records_offered: int = 0  # rows offered; one already stored is skipped
    dead_lettered: int = 0
    store_retries: int = 0  # failed tries to store a batch (database unreachable...)
    last_batch_seconds: float = 0.0
    sweeps: int = 0
    swept_messages: int = 0
    swept_attempts: int = 0
    swept_disclosed_records: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StatsLine:
    """Logs, at most once a minute, what was stored since the last line (nothing when idle)."""

    def __init__(self, stats: WriterStats, interval_s: float = _INTERVAL_S) -> None:
        self._stats = stats
        self._interval_s = interval_s
        self._logged = replace(stats)
        self._next = time.monotonic() + interval_s

    def maybe_log(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval_s
        stats, logged = self._stats, self._logged
        stored = stats.entries_stored - logged.entries_stored
        lettered = stats.dead_lettered - logged.dead_lettered
        batches = stats.batches - logged.batches
        if stored or lettered:
            log.info(
                "message log: %d entries stored in %d batches, %d dead-lettered",
                stored,
                batches,
                lettered,
                extra={"entries": stored, "batches": batches, "dead_lettered": lettered},
            )
        self._logged = replace(stats)
