"""Consent store fixtures: one engine per test, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import Engine, make_url
from sqlmodel import SQLModel

from portability.consent import AppView, ConsentService, create_store_engine, init_schema
from portability.consent.models import TABLE_NAMES

# The server the suite runs against (trust auth); tests/conftest.py names the same one.
ADMIN_URL = os.environ.get(
    "PORTABILITY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this session, dropped afterwards (even if a client lingers)."""
    admin = make_url(ADMIN_URL)
    name = f"portability_{uuid.uuid4().hex[:12]}"
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


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
    tables = [SQLModel.metadata.tables[name] for name in TABLE_NAMES]
    SQLModel.metadata.drop_all(engine, tables=tables)


@pytest.fixture
def service(engine: Engine) -> ConsentService:
    return ConsentService(engine)


@pytest.fixture
def app(service: ConsentService) -> AppView:
    return service.register_app("Example Recipient", "https://recipient.example/hooks")
