"""The suite's record files: what the platform published, what the churn asked and was told,
what the receiving app received, which faults were injected. JSON lines, one file each.

Shared by the harness (which writes them) and the oracle (which only reads them): nothing
here imports the pipeline, so the oracle judges the pipeline by what its users saw.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "CALLS",
    "FAULTS",
    "PUBLISHED",
    "RECEIVED",
    "JsonLines",
    "iso_millis",
    "parse_time",
    "read_lines",
]

PUBLISHED = "published.jsonl"  # one line per account change the broker acknowledged
CALLS = "calls.jsonl"  # one line per consent API call (churn), with when it was answered
RECEIVED = "received.jsonl"  # one line per webhook request the receiving app answered
FAULTS = "faults.jsonl"  # one line per fault injected, with when it began and ended


class JsonLines:
    """An append-only JSON lines file, flushed per line (a killed run keeps what it wrote)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, line: dict[str, Any]) -> None:
        text = json.dumps(line, separators=(",", ":"), sort_keys=True)
        with self._lock:
            self._file.write(text + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The file's lines as objects; a last line cut by a kill mid-write is skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def iso_millis(moment: datetime) -> str:
    """As the webhook contract writes times: UTC, milliseconds (cut, as Avro's
    timestamp-millis keeps them), ``Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> float:
    """An ISO 8601 time (``Z`` or an offset) as Unix seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
