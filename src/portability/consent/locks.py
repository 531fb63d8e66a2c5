"""Locks in the consent store: one outbox publisher at a time, one migrator at a time.

Any number of outbox relays may run against one store (``portability pipeline`` and
``portability api`` both start one); the :class:`PublishLock` lets exactly one of them
publish, and another takes over when the holder stops or dies. Every kind of lock here is
released by the system when its holder's process dies, even by SIGKILL, so no lease has to
expire and no clock is trusted:

- **PostgreSQL**: a session-level advisory lock on a connection of its own. The server drops
  it with the session: at once when the process dies (its socket is closed), and after the
  TCP keepalives set on the session when its host vanishes. The lock needs a real session:
  behind a transaction-pooling proxy (PgBouncer ``pool_mode=transaction``) the holder cannot
  verify it and does not publish.
- **SQLite (a file)**: an exclusive ``flock(2)`` on a file next to the database file
  (``consents.db.relay.lock``), which the kernel releases when the holder's process exits.
  Every process using the store runs on the one host that holds the file, as SQLite needs.
- **SQLite in memory**: one process by construction: a lock in this process.

Migrations: on PostgreSQL :func:`~portability.consent.store.init_schema` takes a transaction
advisory lock; on a SQLite file it holds :func:`migration_lock` (``consents.db.migrate.lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from portability.consent.errors import ConsentError

__all__ = [
    "MIGRATION_LOCK_KEY",
    "PUBLISH_LOCK_KEY",
    "PublishLock",
    "migration_lock",
    "publish_lock",
]

MIGRATION_LOCK_KEY = 0x706F7274
"""PostgreSQL advisory lock key of migrations ("port")."""
PUBLISH_LOCK_KEY = (0x706F7274 << 32) | 1
"""PostgreSQL advisory lock key of the outbox publisher (pg_locks: classid "port", objid 1)."""

_MIGRATION_POLL_S = 0.05
# PostgreSQL's application_name is cut at 63 bytes; the holder's description is kept there.
_APPLICATION_NAME_MAX = 63
# Server-side keepalives of the lock's session: a holder whose host vanished without closing
# its socket loses the lock after about 10 + 3 * 5 s instead of the kernel's 2 hours.
_SESSION_KEEPALIVES = (
    "SET tcp_keepalives_idle = 10",
    "SET tcp_keepalives_interval = 5",
    "SET tcp_keepalives_count = 3",
)


class PublishLock(Protocol):
    """A lock that at most one relay holds; each method is blocking (call it from a thread)."""

    @property
    def where(self) -> str:
        """What the lock is, for logs (a file path, or a database and key)."""
        ...

    def acquire(self) -> bool:
        """Take the lock if it is free, without waiting; True if this holder holds it now.

        Raises:
            SQLAlchemyError: The database cannot be reached (PostgreSQL).
            OSError: The lock file cannot be opened (SQLite).
        """
        ...

    def verify(self) -> bool:
        """Whether this holder still holds the lock (False after it was lost, e.g. the
        lock's connection broke); a lost lock is let go, so :meth:`acquire` may try again."""
        ...

    def holder(self) -> str | None:
        """How the current holder described itself, if known (for logs and stats)."""
        ...

    def release(self) -> None:
        """Let the lock go (idempotent); another relay may take it at once."""
        ...


def publish_lock(engine: Engine, identity: str) -> PublishLock:
    """The outbox publishing lock of ``engine``'s store, held as ``identity``.

    Raises:
        ConsentError: The store is neither SQLite nor PostgreSQL.
    """
    url = engine.url
    if url.get_backend_name() == "postgresql":
        return _PostgresLock(url, PUBLISH_LOCK_KEY, identity)
    if url.get_backend_name() == "sqlite":
        database = _sqlite_file(url)
        if database is None:
            return _ProcessLock(engine, identity)
        return _FileLock(Path(f"{database}.relay.lock"), identity)
    raise ConsentError(f"no publishing lock for a {url.get_backend_name()} store")


@contextlib.contextmanager
def migration_lock(engine: Engine, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold the migration lock of a SQLite file store (other stores: nothing to do here).

    Waits while another process migrates: a process that died holding it has released it.

    Raises:
        ConsentError: Another process has migrated for ``timeout_s`` and still holds it.
    """
    database = _sqlite_file(engine.url) if engine.url.get_backend_name() == "sqlite" else None
    if database is None:
        yield
        return
    lock = _FileLock(Path(f"{database}.migrate.lock"), f"migrating pid {os.getpid()}")
    deadline = time.monotonic() + timeout_s
    while not lock.acquire():
        if time.monotonic() > deadline:
            raise ConsentError(
                f"another process ({lock.holder() or 'unknown'}) has been migrating {database} "
                f"for over {timeout_s:.0f} s: wait for it to finish, or stop it if it hangs"
            )
        time.sleep(_MIGRATION_POLL_S)
    try:
        yield
    finally:
        lock.release()


def _sqlite_file(url: URL) -> Path | None:
    """The SQLite database file of ``url``, absolute; None for an in-memory database."""
    database = url.database
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser().absolute()


class _FileLock:
    """An exclusive ``flock(2)`` on ``path``; the file names its holder."""

    def __init__(self, path: Path, identity: str) -> None:
        self._path = path
        self._identity = identity
        self._file: IO[str] | None = None

    @property
    def where(self) -> str:
        return str(self._path)

    def acquire(self) -> bool:
        if self._file is not None:
            return self.verify()
        # "a+": create it if missing, never truncate a file someone else is writing.
        handle = self._path.open("a+", encoding="utf-8")
        try:
            # flock, not fcntl's record locks: those are per process, so two relays of one
            # process would both get one, and closing any descriptor of the file drops them.
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        except BaseException:
            handle.close()
            raise
        handle.truncate(0)
        handle.write(self._identity + "\n")
        handle.flush()
        self._file = handle
        return True

    def verify(self) -> bool:
        if self._file is None:
            return False
        try:
            held, named = os.fstat(self._file.fileno()), os.stat(self._path)
            same = (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)
        except FileNotFoundError:
            same = False
        if not same:
            # The file was deleted or replaced: another process may lock the new one, so the
            # lock on the old one proves nothing any more.
            self.release()
        return same

    def holder(self) -> str | None:
        try:
            return self._path.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def release(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()


class _PostgresLock:
    """A session-level advisory lock on a connection of its own (outside any pool)."""

    def __init__(self, url: URL, key: int, identity: str) -> None:
        self._key = key
        self._identity = identity
        self._database = url.database or "?"
        self._engine = sa.create_engine(
            url,
            poolclass=NullPool,
            connect_args={
                "application_name": identity[:_APPLICATION_NAME_MAX],
                "connect_timeout": 10,
            },
        )
        self._connection: Connection | None = None
        self._held = False

    @property
    def where(self) -> str:
        return f"advisory lock {self._key:#x} of database {self._database}"

    def acquire(self) -> bool:
        if self._held:
            return self.verify()
        try:
            got = self._connect().execute(
                sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
            )
            self._held = bool(got.scalar())
        except SQLAlchemyError:
            self._drop()
            raise
        return self._held

    def verify(self) -> bool:
        if not self._held:
            return False
        # Ask the server whether this very session holds the lock: a broken connection, a
        # terminated backend or a transaction pooler that swapped the session all say no.
        query = sa.text(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid() AND granted AND classid::bigint = :high "
            "AND objid::bigint = :low AND objsubid = 1)"
        )
        try:
            held = bool(self._connect().execute(query, self._key_parts()).scalar())
        except SQLAlchemyError:
            held = False
        if not held:
            self._drop()
        return held

    def holder(self) -> str | None:
        query = sa.text(
            "SELECT a.application_name, a.pid FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = :high "
            "AND l.objid::bigint = :low AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        try:
            row = self._connect().execute(query, self._key_parts()).first()
        except SQLAlchemyError:
            self._drop()
            return None
        return None if row is None else f"{row[0] or 'unnamed'} (server pid {row[1]})"

    def release(self) -> None:
        if self._held and self._connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._connection.execute(
                    sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key}
                )
        # Closing the session releases the lock even where the unlock failed.
        self._drop()

    def _key_parts(self) -> dict[str, int]:
        return {"high": self._key >> 32, "low": self._key & 0xFFFFFFFF}

    def _connect(self) -> Connection:
        if self._connection is None:
            # Autocommit: the session holds the lock, no transaction stays open around it.
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            for statement in _SESSION_KEEPALIVES:
                # Unix sockets and some proxies refuse these; the lock works without them.
                with contextlib.suppress(SQLAlchemyError):
                    connection.execute(sa.text(statement))
            self._connection = connection
        return self._connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._held = False
        if connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                connection.invalidate()
            with contextlib.suppress(SQLAlchemyError):
                connection.close()


_PROCESS_HOLDERS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
_PROCESS_GUARD = threading.Lock()


class _ProcessLock:
    """For an in-memory SQLite store, which only its own process can reach."""

    def __init__(self, engine: Engine, identity: str) -> None:
        self._engine = engine
        self._identity = identity

    @property
    def where(self) -> str:
        return "the in-memory store's lock in this process"

    def acquire(self) -> bool:
        with _PROCESS_GUARD:
            holder = _PROCESS_HOLDERS.setdefault(self._engine, self._identity)
            return holder == self._identity

    def verify(self) -> bool:
        with _PROCESS_GUARD:
            return _PROCESS_HOLDERS.get(self._engine) == self._identity

    def holder(self) -> str | None:
        with _PROCESS_GUARD:
            return _PROCESS_HOLDERS.get(self._engine)

    def release(self) -> None:
        with _PROCESS_GUARD:
            if _PROCESS_HOLDERS.get(self._engine) == self._identity:
                del _PROCESS_HOLDERS[self._engine]
