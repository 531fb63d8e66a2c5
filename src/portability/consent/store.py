"""Opening the consent store: SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import create_engine

from portability.consent import models
from portability.consent.errors import InvalidRequestError
from portability.consent.locks import MIGRATION_LOCK_KEY, migration_lock

__all__ = ["FIRST_REVISION", "create_store_engine", "init_schema"]

FIRST_REVISION = "0001"
"""The schema before the API (apps, consents, outbox); older stores are adopted as it."""
_VERSION_TABLE = "alembic_version"

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


def init_schema(engine: Engine, revision: str = "head") -> None:
    """Bring the consent store's schema to ``revision`` with its Alembic migrations.

    Idempotent and safe on a live database: migrations only add, with server defaults, so
    rows survive. A database created before migrations existed (tables, no version table) is
    recognised as the first revision and upgraded from there. Processes that start at the same
    time take turns: a PostgreSQL advisory lock, or a file lock beside a SQLite file.

    Args:
        engine: The store's engine.
        revision: The target revision; ``"head"`` (the default) is the current schema, an
            older one is for tests that start from a previous version.

    Raises:
        ConsentError: Another process has held the migration lock for 10 minutes.
    """
    # Processes started together on an empty store would each create the tables ("table apps
    # already exists"): one migrates, the others wait, then find nothing left to do.
    with migration_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Transaction-scoped: released with the transaction, or when the process dies.
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        config = _alembic_config(connection)
        _adopt_unversioned(connection, config)
        command.upgrade(config, revision)


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", "portability.consent:migrations")
    config.attributes["connection"] = connection
    return config


def _adopt_unversioned(connection: Connection, config: Config) -> None:
    """Reconcile the version table with the tables that actually exist.

    No tables: start from scratch (clearing a version left by dropped tables). Tables but no
    version: a store created by ``create_all`` before migrations existed, i.e. revision 0001.
    """
    tables = set(sa.inspect(connection).get_table_names())
    if models.APPS_TABLE not in tables:
        if _VERSION_TABLE in tables:
            connection.execute(sa.text(f"DELETE FROM {_VERSION_TABLE}"))  # noqa: S608
        return
    if _VERSION_TABLE not in tables:
        command.stamp(config, FIRST_REVISION)
