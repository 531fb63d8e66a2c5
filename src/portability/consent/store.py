"""Opening the consent store: SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import SQLModel, create_engine

from portability.consent import models
from portability.consent.errors import InvalidRequestError

__all__ = ["create_store_engine", "init_schema"]

# psycopg (3) is the driver this project installs; SQLAlchemy's default for a bare
# "postgresql://" would be psycopg2.
_POSTGRES_DRIVERS = {"postgresql", "postgres", "postgresql+psycopg"}


def create_store_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine on the consent store at ``url``.

    ``sqlite:///path`` creates the file's folder; ``sqlite://`` is one in-memory database
    shared by every thread (the outbox relay reads it from worker threads). A
    ``postgresql://`` URL uses psycopg 3.

    Args:
        url: A SQLAlchemy URL, e.g. ``sqlite:///data/consents.db`` or
            ``postgresql+psycopg://user@host:5432/db``.
        echo: Log every SQL statement.

    Raises:
        InvalidRequestError: The URL is malformed or names an unsupported database.
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as error:
        raise InvalidRequestError(f"bad database URL {url!r}: {error}") from error
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo)
    if parsed.drivername in _POSTGRES_DRIVERS:
        parsed = parsed.set(drivername="postgresql+psycopg")
        # pre_ping: a connection the server closed (restart, idle timeout) is replaced
        # instead of failing the next request.
        return create_engine(parsed, echo=echo, pool_pre_ping=True)
    raise InvalidRequestError(
        f"unsupported database {parsed.drivername!r}: use sqlite:///PATH or "
        "postgresql+psycopg://USER@HOST:PORT/DB"
    )


def _sqlite_engine(url: URL, echo: bool) -> Engine:
    database = url.database
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if not database or database == ":memory:":
        # One connection for all threads, or each thread would see its own empty database.
        kwargs["poolclass"] = StaticPool
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, **kwargs)
    sa.event.listen(engine, "connect", _enable_sqlite_foreign_keys)
    return engine


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    # SQLite ignores REFERENCES unless asked, per connection.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def init_schema(engine: Engine) -> None:
    """Create the consent store's tables and indexes that do not exist yet.

    Only this package's tables: other packages may define SQLModel tables of their own in the
    same metadata.
    """
    tables = [SQLModel.metadata.tables[name] for name in models.TABLE_NAMES]
    SQLModel.metadata.create_all(engine, tables=tables)
