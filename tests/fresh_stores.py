"""Consent stores at the current schema with no rows, without migrating one for every test.

Running the Alembic migrations took most of an API or consent test's time (drop the tables,
then every migration, each a commit). A test gets the same store from a copy of one migrated
SQLite file, or from the session's PostgreSQL database emptied with ``TRUNCATE`` when its
tables are exactly as a migration by :func:`empty_postgres_store` left them (migrated again
otherwise, e.g. after a migration test dropped them). The migrations themselves keep their own
tests (``bare_engine``: an empty database, every migration run).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from portability.consent import create_store_engine, init_schema

__all__ = [
    "STORE_TABLES",
    "copy_sqlite_store",
    "drop_store",
    "empty_postgres_store",
    "fresh_store",
    "migrated_sqlite_store",
]

VERSION_TABLE = "alembic_version"

# Per process (one pytest-xdist worker), by database URL: the version and the tables a
# migration by empty_postgres_store left there.
_MIGRATED: dict[str, tuple[str | None, frozenset[str]]] = {}


def migrated_sqlite_store(folder: Path) -> Path:
    """A SQLite store in ``folder`` brought to the current schema, its engine disposed."""
    path = folder / "consents.db"
    engine = create_store_engine(f"sqlite:///{path}")
    init_schema(engine)
    engine.dispose()
    return path


def copy_sqlite_store(template: Path, path: Path) -> None:
    """``template`` (a :func:`migrated_sqlite_store`) copied to ``path`` (its folder must be
    there: the consent tests leave making it to ``create_store_engine``)."""
    shutil.copyfile(template, path)


def _state(connection: Connection) -> tuple[str | None, frozenset[str]]:
    tables = frozenset(sa.inspect(connection).get_table_names())
    if VERSION_TABLE not in tables:
        return None, tables
    version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    return version, tables


def empty_postgres_store(engine: Engine, drop: Callable[[Engine], None]) -> None:
    """Bring the PostgreSQL store of ``engine`` to the current schema with no rows.

    Its tables emptied (identities restarted) when they are as this function last migrated
    them; otherwise dropped with ``drop`` and migrated.
    """
    url = engine.url.render_as_string(hide_password=False)
    with engine.begin() as connection:
        state = _state(connection)
        if state[0] is not None and state == _MIGRATED.get(url):
            names = ", ".join(sorted(state[1] - {VERSION_TABLE}))
            connection.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            return
    drop(engine)
    init_schema(engine)
    with engine.connect() as connection:
        _MIGRATED[url] = _state(connection)


# Referencing tables first: PostgreSQL refuses to drop a table another one references.
STORE_TABLES = (
    "consent_ledgers",
    "disclosed_records",
    "delivery_attempts",
    "delivery_messages",
    "transfers",
    "consent_replays",
    "consent_outbox",
    "consents",
    "apps",
    VERSION_TABLE,
)


def drop_store(engine: Engine) -> None:
    """Drop the store's tables and Alembic's version table."""
    with engine.begin() as connection:
        for table in STORE_TABLES:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))


def fresh_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a store at the current schema with no rows, for a fixture parametrized
    ``sqlite``/``postgresql``: a copy of the worker's migrated SQLite file, or the session's
    PostgreSQL database emptied before (a test that crashed mid-teardown must not leak rows)
    and after, migrated again only if its tables are not as the last migration left them."""
    if request.param == "sqlite":
        # A folder that does not exist yet: create_store_engine must make it.
        path = tmp_path / "store" / "consents.db"
        engine = create_store_engine(f"sqlite:///{path}")
        copy_sqlite_store(request.getfixturevalue("sqlite_store_template"), path)
        yield engine
    else:
        engine = create_store_engine(request.getfixturevalue("postgres_url"))
        empty_postgres_store(engine, drop_store)
        yield engine
        empty_postgres_store(engine, drop_store)
    engine.dispose()
