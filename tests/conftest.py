"""Shared fixtures: a real embedded broker per test session, runtimes on unique topics."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from _pytest.nodeid import NodeId
from psycopg import sql
from sqlalchemy.engine import make_url

from delivery.test_worker_faults import World, fault_settings
from durable_broker import DurableBroker, durable_broker
from fresh_stores import migrated_sqlite_store
from pipeline_harness import pipeline_settings
from portability.broker import EmbeddedBroker
from portability.runtime import Runtime
from portability.settings import Settings

if "PYTEST_XDIST_WORKER" in os.environ:
    # A pytest-xdist worker starts with COLUMNS=80 and LINES=24 in its environment, which a
    # serial run does not have: a Rich console made at import (the CLI's stderr console) would
    # then keep 80 columns for the session instead of following the COLUMNS a test sets.
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)

# Under pytest -n, what the workers start first: the longest runs on one worker, so that none
# is left to start near the end and run alone there (the chaos run, 75 s, used to start at
# 316 s of 390). Only these: the other long tests start processes (roles, brokers) as the chaos
# run does, and all of them at once at the start starved each other of CPU on two cores (a
# role missed its 30 s start bound). A prefix of a node id; whatever matches none keeps its
# collection order behind them. A module with a module-scoped fixture is listed whole.
SLOW_FIRST = (
    "tests/test_chaos.py",  # 75-90 s, every role as a process
    "tests/api/test_schemathesis.py",  # one group, 60-90 s on its worker, in process
    "tests/transfers/test_snapshot_handover.py",  # one group, 35 s, in process
)


def _xdist_groups(item: pytest.Item) -> list[str]:
    names = {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    }
    return sorted(names)


def _slow_rank(item: pytest.Item) -> int:
    return next(
        (rank for rank, prefix in enumerate(SLOW_FIRST) if item.nodeid.startswith(prefix)),
        len(SLOW_FIRST),
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a pytest-xdist worker: keep each ``xdist_group`` on one worker, slow tests first.

    pytest-xdist (3.8) tells ``--dist loadgroup`` a test's group by appending ``@group`` to
    ``item._nodeid``, which pytest 9.2 no longer reads (the node id is ``item._id``): without
    this, every group was spread over the workers and its module-scoped fixture set up on
    each. The order of the worker's collection is the order the scheduler hands work out in
    (``--no-loadscope-reorder`` in pyproject.toml), hence the sort.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    if config.getvalue("loadgroup"):
        for item in items:
            groups = _xdist_groups(item)
            if groups and "@" not in item.nodeid.rpartition("]")[2]:
                item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")
    items.sort(key=_slow_rank)


# The server the suite runs against (trust auth); override for another one.
POSTGRES_URL = os.environ.get(
    "PORTABILITY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, dropped afterwards."""
    admin = make_url(POSTGRES_URL)
    name = f"portability_{uuid.uuid4().hex[:12]}"
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def sqlite_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite consent store at the current schema, migrated once for the session: tests
    copy it (``fresh_stores``) instead of migrating a store of their own."""
    return migrated_sqlite_store(tmp_path_factory.mktemp("store_template"))


@pytest.fixture(scope="session")
def broker_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("broker") / "tansu.log"


@pytest.fixture(scope="session")
def broker(broker_log: Path) -> Iterator[EmbeddedBroker]:
    """One Tansu for the whole session; tests isolate themselves with unique topic prefixes.

    Sync on purpose: the broker is a process, not bound to any test's event loop.
    """
    embedded = EmbeddedBroker(log_file=broker_log)
    asyncio.run(embedded.start())
    yield embedded
    asyncio.run(embedded.stop())


@pytest.fixture
async def durable(tmp_path: Path) -> AsyncIterator[DurableBroker]:
    """A broker of this test's own on S3 storage (moto): kill() and start() it at will."""
    async with durable_broker(tmp_path) as started:
        yield started


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on unique topics and groups, fast retries, SQLite in tmp_path."""
    return pipeline_settings(tmp_path)


@pytest.fixture
async def runtime(broker: EmbeddedBroker, settings: Settings) -> AsyncIterator[Runtime]:
    opened = await Runtime.open(settings, broker.bootstrap)
    yield opened
    await opened.close()


@pytest.fixture
async def world(broker: EmbeddedBroker, settings: Settings) -> AsyncIterator[World]:
    """A runtime with fast retries (the delivery tests' ``fault_settings``) and a store."""
    opened = await Runtime.open(fault_settings(settings), broker.bootstrap)
    made = World(opened)
    yield made
    made.close()
    await opened.close()


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium, for the tests of pages; they skip, saying why, where it is missing
    (``make test`` installs it where it can)."""
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return found
