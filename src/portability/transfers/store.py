"""The current-state view's storage: one SQLite file per partition of ``account.changes``.

Each file holds the partition's users' current records and the position they are consistent
with, written in the same transaction, so the file always describes the state after exactly
the changes before ``next_offset``. It also remembers where in ``state.changelog`` that state
was last confirmed (``changelog_offset``), so a restart catches up from the changelog's tail
instead of re-reading anything from the beginning.

Writes come from one owner at a time (the view's instance that holds the partition); reads
(:class:`Snapshot`) open their own connection and see one committed state for as long as they
iterate, whatever is applied meanwhile (SQLite WAL snapshot isolation).

``synchronous=NORMAL`` is enough: after a power loss the file may lose its last commits, but
it stays consistent with its own position, and the changelog, which is always written first,
brings it forward again.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from portability.transfers.errors import StateStoreError
from portability.transfers.render import Deletion, StoredRecord

__all__ = ["PartitionStore", "Position", "Snapshot", "StateChange", "state_path"]

log = logging.getLogger(__name__)

StateChange = StoredRecord | Deletion

LAYOUT_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_offset INTEGER NOT NULL,       -- next offset of account.changes to apply
    changelog_offset INTEGER NOT NULL   -- state.changelog offset after the last checkpoint seen
);
CREATE TABLE IF NOT EXISTS records (
    user_id TEXT NOT NULL,
    category TEXT NOT NULL,
    record_id TEXT NOT NULL,
    record TEXT NOT NULL,               -- JSON, rendered as the webhook contract renders it
    occurred_at TEXT NOT NULL,
    change_id TEXT NOT NULL,
    source_offset INTEGER NOT NULL,
    context TEXT,                       -- the platform's context (JSON), for the privacy rules
    PRIMARY KEY (user_id, category, record_id)
) WITHOUT ROWID;
INSERT OR IGNORE INTO position (id, next_offset, changelog_offset) VALUES (1, 0, 0);
"""

_UPSERT: Final = (
    "INSERT OR REPLACE INTO records "
    "(user_id, category, record_id, record, occurred_at, change_id, source_offset, context) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELETE: Final = "DELETE FROM records WHERE user_id = ? AND category = ? AND record_id = ?"
_SELECT: Final = (
    "SELECT user_id, category, record_id, record, occurred_at, change_id, source_offset, "
    "context FROM records WHERE user_id = ? AND category = ? ORDER BY record_id"
)


def state_path(data_dir: Path, topic: str, partition: int) -> Path:
    """The state file of ``topic``'s ``partition`` (the topic name keeps prefixes apart)."""
    return data_dir / "state" / f"{topic}-{partition}.sqlite"


@dataclass(frozen=True, slots=True)
class Position:
    """A place in the source: every change of ``topic[partition]`` before ``offset`` is applied,
    none after it.

    Attributes:
        offset: The next offset to apply; deltas of changes at this offset or later continue
            where a snapshot at this position ends.
    """

    topic: str
    partition: int
    offset: int

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "next_offset": self.offset}


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: this module issues BEGIN/COMMIT itself. check_same_thread=False:
    # the view runs SQLite in worker threads (asyncio.to_thread), one at a time per connection.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 10000")
    return connection


class PartitionStore:
    """The writable state file of one partition; one owner at a time."""

    def __init__(self, path: Path, connection: sqlite3.Connection, topic: str, partition: int):
        self.path = path
        self.topic = topic
        self.partition = partition
        self._db = connection
        self._in_transaction = False
        self.next_offset, self.changelog_offset = self._read_position()

    @classmethod
    def open(cls, path: Path, topic: str, partition: int) -> PartitionStore:
        """Open (or create) the file of ``topic[partition]`` at ``path``.

        Raises:
            StateStoreError: The file belongs to another topic or partition, has a newer
                layout, or is not a SQLite database.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = _connect(path)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(_SCHEMA)
            _check_meta(connection, path, topic, partition)
        except sqlite3.DatabaseError as error:
            raise StateStoreError(
                f"cannot open the state file {path}: {error}; move it away to rebuild it from "
                "state.changelog"
            ) from error
        return cls(path, connection, topic, partition)

    @staticmethod
    def discard(path: Path) -> None:
        """Delete a state file and its WAL files (a reader still open keeps its snapshot)."""
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    def position(self) -> Position:
        return Position(self.topic, self.partition, self.next_offset)

    def write(self, changes: Iterable[StateChange]) -> int:
        """Apply ``changes`` in order inside the open transaction (opening one if needed).

        Nothing is visible to readers until :meth:`commit`. Returns how many were applied.
        """
        if not self._in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._in_transaction = True
        latest = _latest_per_key(changes)
        upserts = [_row(c) for c in latest.values() if isinstance(c, StoredRecord)]
        deletions = [c.key for c in latest.values() if isinstance(c, Deletion)]
        if upserts:
            self._db.executemany(_UPSERT, upserts)
        if deletions:
            self._db.executemany(_DELETE, deletions)
        return len(latest)

    def commit(self, next_offset: int, changelog_offset: int) -> None:
        """Record the position the written changes bring the state to, and commit both."""
        if not self._in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._in_transaction = True
        self._db.execute(
            "UPDATE position SET next_offset = ?, changelog_offset = ? WHERE id = 1",
            (next_offset, changelog_offset),
        )
        self._db.execute("COMMIT")
        self._in_transaction = False
        self.next_offset, self.changelog_offset = next_offset, changelog_offset

    def rollback(self) -> None:
        """Forget what was written since the last commit."""
        if self._in_transaction:
            self._db.execute("ROLLBACK")
            self._in_transaction = False

    def apply(
        self, changes: Sequence[StateChange], next_offset: int, changelog_offset: int
    ) -> None:
        """Apply one batch and its position in one transaction."""
        try:
            self.write(changes)
            self.commit(next_offset, changelog_offset)
        except BaseException:
            self.rollback()
            raise

    def record_count(self) -> int:
        """Records held for every user of the partition (for stats and tests)."""
        row = self._db.execute("SELECT COUNT(*) FROM records").fetchone()
        return int(row[0])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.rollback()
        self._db.close()

    def _read_position(self) -> tuple[int, int]:
        row = self._db.execute(
            "SELECT next_offset, changelog_offset FROM position WHERE id = 1"
        ).fetchone()
        return int(row[0]), int(row[1])


def _check_meta(connection: sqlite3.Connection, path: Path, topic: str, partition: int) -> None:
    """Stamp a new file with what it holds; refuse a file that holds something else."""
    expected = {"layout": str(LAYOUT_VERSION), "topic": topic, "partition": str(partition)}
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.executemany(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", expected.items()
        )
        stored = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    wrong = {key: stored.get(key) for key, value in expected.items() if stored.get(key) != value}
    if wrong:
        raise StateStoreError(
            f"the state file {path} holds {wrong}, not {expected}: point data_dir elsewhere, "
            "or move the file away to rebuild it from state.changelog"
        )


def _row(record: StoredRecord) -> tuple[str, str, str, str, str, str, int, str | None]:
    return (
        record.user_id,
        record.category,
        record.record_id,
        record.record_json,
        record.occurred_at,
        record.change_id,
        record.source_offset,
        record.context_json,
    )


def _latest_per_key(changes: Iterable[StateChange]) -> dict[tuple[str, str, str], StateChange]:
    """The last change of each record: within one transaction only the last one matters."""
    latest: dict[tuple[str, str, str], StateChange] = {}
    for change in changes:
        latest[change.key] = change
    return latest


class Snapshot:
    """One user's records in some categories and the position they are as of, read together.

    Opening it starts a read transaction: :attr:`position` and every record it yields come from
    the same committed state, however long the iteration takes and whatever is applied
    meanwhile. Records are streamed from the database cursor (never all loaded), per category
    in the order asked for, by ``record_id`` within a category. Use it as a context manager
    (or call :meth:`close`) to end the read transaction.
    """

    def __init__(self, path: Path, user_id: str, categories: Sequence[str]) -> None:
        if not path.is_file():
            raise StateStoreError(f"no state file at {path}")
        self.user_id = user_id
        self.categories = tuple(dict.fromkeys(categories))
        self._db = _connect(path)
        try:
            self._db.execute("PRAGMA query_only = ON")
            self._db.execute("BEGIN")  # deferred: the read snapshot starts at the first SELECT
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            row = self._db.execute("SELECT next_offset FROM position WHERE id = 1").fetchone()
        except BaseException:
            self._db.close()
            raise
        self.position = Position(str(meta["topic"]), int(meta["partition"]), int(row[0]))

    def records(self, category: str) -> Iterator[StoredRecord]:
        """The user's current records of ``category``, streamed by ``record_id``."""
        cursor = self._db.execute(_SELECT, (self.user_id, category))
        cursor.arraysize = 500
        while rows := cursor.fetchmany():
            for row in rows:
                yield StoredRecord(*row)

    def count(self, category: str) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM records WHERE user_id = ? AND category = ?",
            (self.user_id, category),
        ).fetchone()
        return int(row[0])

    def __iter__(self) -> Iterator[StoredRecord]:
        for category in self.categories:
            yield from self.records(category)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("COMMIT")
        self._db.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
