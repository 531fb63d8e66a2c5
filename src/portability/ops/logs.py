"""Structured logs: one line per event, as ``key=value`` text or JSON.

Fields passed with ``extra=`` (topic, partition, offset, consent, endpoint...) are printed
with the message, so an operator can grep for a consent or an offset.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["ClientRepeats", "configure_logging"]

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{moment} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line = f"{line} [{extras}]"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class ClientRepeats(logging.Filter):
    """One line a window for each message the Kafka client library repeats.

    With the broker away, aiokafka logs every failed connect, fetch and heartbeat as an ERROR:
    about a hundred lines in the first half second in each role process, on and on, burying
    the lines that say what the roles do. The first of each message (logger and format) passes;
    its repeats within ``window_s`` are counted, and the next one to pass carries how many
    were left out (``repeats_left_out=N``). Other loggers pass untouched.
    """

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}  # shown at, left out

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka"):
            return True
        key = (record.name, record.msg)  # the format, not the text: hosts and ids vary
        now = self._clock()
        shown_at, left_out = self._seen.get(key, (-math.inf, 0))
        if now - shown_at < self._window_s:
            self._seen[key] = (shown_at, left_out + 1)
            return False
        self._seen[key] = (now, 0)
        if left_out:
            record.repeats_left_out = left_out
        return True


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Route every logger to stderr in the chosen format."""
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    handler.addFilter(ClientRepeats())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries are chatty at INFO about every join and fetch.
    for noisy in ("aiokafka", "faust", "mode", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
