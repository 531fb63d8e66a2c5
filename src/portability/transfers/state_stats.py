"""Counters of one current-state view instance: what it read, wrote and restored."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["StateStats"]


@dataclass(slots=True)
class StateStats:
    """Counters of one view instance (what it read, wrote and restored)."""

    source_records_read: int = 0  # account.changes records processed (not re-reads of a file)
    changes_applied: int = 0
    changes_ignored: int = 0  # off-platform shares and the like: no user's record
    changelog_records_written: int = 0
    changelog_records_read: int = 0  # while restoring
    restores: int = 0
    batches: int = 0
    last_batch_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
