"""Consent store fixtures: one engine per test, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from portability.consent import AppView, ConsentService, create_store_engine, init_schema
from portability.consent.models import TABLE_NAMES
from portability.messages.models import MESSAGE_TABLE_NAMES


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine with a fresh schema; PostgreSQL tests share one database, not its tables."""
    if request.param == "sqlite":
        # A folder that does not exist yet: create_store_engine must make it.
        url = f"sqlite:///{tmp_path / 'store' / 'consents.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    created = create_store_engine(url)
    _drop_tables(created)  # a previous test that crashed mid-teardown must not leak rows
    init_schema(created)
    yield created
    _drop_tables(created)
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
