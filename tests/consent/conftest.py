"""Consent store fixtures: one engine per test, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from fresh_stores import fresh_store
from portability.consent import AppView, ConsentService


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a store at the current schema with no rows; PostgreSQL tests share one
    database, emptied between them (``fresh_stores``)."""
    yield from fresh_store(request, tmp_path)


@pytest.fixture
def service(engine: Engine) -> ConsentService:
    return ConsentService(engine)


@pytest.fixture
def app(service: ConsentService) -> AppView:
    return service.register_app("Example Recipient", "https://recipient.example/hooks")
