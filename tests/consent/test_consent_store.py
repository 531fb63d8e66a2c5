"""Opening the store, its schema, and the UTC timestamp column."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import Session

from portability.consent import (
    App,
    Consent,
    ConsentService,
    InvalidRequestError,
    create_store_engine,
    init_schema,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_sqlite_file_gets_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "consents.db"
    engine = create_store_engine(f"sqlite:///{path}")
    try:
        init_schema(engine)
        init_schema(engine)  # idempotent
        assert path.is_file()
    finally:
        engine.dispose()


def test_in_memory_sqlite_is_one_database_for_every_thread() -> None:
    engine = create_store_engine("sqlite://")
    try:
        init_schema(engine)
        app = ConsentService(engine).register_app("R", "https://r.example/h")
        seen: list[str] = []
        worker = threading.Thread(
            target=lambda: seen.extend(a.app_id for a in ConsentService(engine).list_apps())
        )
        worker.start()
        worker.join(timeout=10)
        assert seen == [app.app_id]
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["postgresql://u@db.example/x", "postgres://u@db.example/x"])
def test_postgres_urls_use_psycopg(url: str) -> None:
    engine = create_store_engine(url)  # connects lazily: nothing is dialled here
    try:
        assert engine.url.drivername == "postgresql+psycopg"
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "message"),
    [("mysql://u@h/db", "unsupported database 'mysql'"), ("no url", "bad database URL")],
)
def test_unusable_urls_say_what_works(url: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        create_store_engine(url)


def new_app(app_id: str, created_at: datetime) -> App:
    return App(app_id=app_id, name="n", webhook_url="u", signing_secret="s", created_at=created_at)


def test_timestamps_refuse_naive_and_read_back_aware_utc(engine: Engine) -> None:
    naive = datetime(2025, 3, 1, 12, 0, 0)  # noqa: DTZ001 - the point of the test
    with Session(engine) as session, session.begin():
        session.add(new_app("a", NOW))
    with Session(engine) as session:
        session.add(new_app("b", naive))
        with pytest.raises(StatementError, match="naive datetime"):
            session.commit()
    with Session(engine) as session:
        stored = session.get(App, "a")
        assert stored is not None
        assert stored.created_at == NOW
        assert stored.created_at.tzinfo is UTC


def test_consent_needs_a_registered_app(engine: Engine) -> None:
    """The foreign key holds on SQLite too (it is off there unless switched on)."""
    orphan = Consent(
        consent_id="cns_x",
        user_id="u",
        app_id="app_missing",
        categories="post",
        mode="ongoing",
        granted_at=NOW,
        updated_at=NOW,
    )
    with Session(engine) as session:
        session.add(orphan)
        with pytest.raises(IntegrityError):
            session.commit()
