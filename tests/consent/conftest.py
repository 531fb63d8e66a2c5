"""Consent store fixtures: one engine per test, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from fresh_stores import copy_sqlite_store, empty_postgres_store
from portability.consent import AppView, ConsentService, create_store_engine
from portability.consent.models import TABLE_NAMES
from portability.messages.models import MESSAGE_TABLE_NAMES


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a store at the current schema with no rows; PostgreSQL tests share one
    database, emptied between them."""
    if request.param == "sqlite":
        # A folder that does not exist yet: create_store_engine must make it (the copy of the
        # migrated store, ``fresh_stores``, goes into it).
        path = tmp_path / "store" / "consents.db"
        created = create_store_engine(f"sqlite:///{path}")
        copy_sqlite_store(request.getfixturevalue("sqlite_store_template"), path)
        yield created
    else:
        created = create_store_engine(request.getfixturevalue("postgres_url"))
        # Emptied before (a previous test that crashed mid-teardown must not leak rows) and
        # after; migrated again only if the tables are not as the last migration left them.
        empty_postgres_store(created, _drop_tables)
        yield created
        empty_postgres_store(created, _drop_tables)
    created.dispose()


def _drop_tables(engine: Engine) -> None:
    # The message log's tables too: the next init_schema creates them again from scratch.
    names = (*TABLE_NAMES, *MESSAGE_TABLE_NAMES)
    tables = [SQLModel.metadata.tables[name] for name in names]
    SQLModel.metadata.drop_all(engine, tables=tables)


@pytest.fixture
def service(engine: Engine) -> ConsentService:
    return ConsentService(engine)


@pytest.fixture
def app(service: ConsentService) -> AppView:
    return service.register_app("Example Recipient", "https://recipient.example/hooks")
