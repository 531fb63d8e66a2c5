"""Roles started together on an empty store all come up: migrations take turns.

Several processes are told at the same instant to migrate one empty store (a SQLite file,
and a fresh PostgreSQL database): every one succeeds, and the schema is at head once. Before
the migration lock a SQLite store failed here with "table apps already exists".
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy.engine import make_url

from portability.consent import create_store_engine

PROCESSES = 5
SCRIPT = Path(__file__).with_name("migrate_when_told.py")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a store with nothing in it: a new SQLite file, or a new database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh' / 'consents.db'}"
        return
    admin = make_url(request.getfixturevalue("postgres_url"))
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"portability_first_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", "portability.consent:migrations")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def start(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - this folder's script, on the test's own store
        [sys.executable, str(SCRIPT), url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_together(url: str) -> list[tuple[int, str]]:
    """Start the processes, wait until each is ready, tell all, collect (exit code, output)."""
    processes = [start(url) for _ in range(PROCESSES)]
    try:
        for process in processes:
            assert process.stdout is not None
            # Bounded: the process prints "ready" or exits, and readline returns either way.
            assert process.stdout.readline().strip() == "ready", "a process did not start"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        return [(process.wait(60), process.communicate()[0]) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)


async def test_processes_migrating_one_empty_store_at_once_all_succeed(empty_store: str) -> None:
    results = await asyncio.to_thread(run_together, empty_store)

    assert [code for code, _ in results] == [0] * PROCESSES, results
    assert all("migrated" in output for _, output in results)
    engine = create_store_engine(empty_store)
    try:
        with engine.connect() as connection:
            versions = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
            tables = set(sa.inspect(connection).get_table_names())
            [(version,)] = versions.all()
    finally:
        engine.dispose()
    assert {"apps", "consents", "consent_outbox", "transfers"} <= tables
    assert version == head_revision()
