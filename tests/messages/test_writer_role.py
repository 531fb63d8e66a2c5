"""The writer as a role: ``portability messages`` (the roles' Faust app, in-process) stores
the log in the configured store and reports it on ``/stats/``; its CLI help says what it does.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from messages.writer_helpers import entry, messages, ok_entry, produce
from pipeline_harness import pipeline_settings
from portability.broker import EmbeddedBroker, free_port
from portability.cli import app as cli
from portability.consent import create_store_engine
from portability.messages import DELIVERED
from portability.ops.worker_app import Role, build_app
from portability.runtime import Runtime
from portability.settings import Settings
from waiting import wait_until

_DEADLINE_S = 30.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Short group timeouts (see test_writer), a web port of its own."""
    return pipeline_settings(tmp_path).model_copy(
        update={
            "kafka_session_timeout_ms": 2000,
            "kafka_heartbeat_interval_ms": 300,
            "kafka_rebalance_timeout_ms": 500,
            "web_port": free_port("127.0.0.1"),
        }
    )


async def test_the_messages_role_stores_the_log_and_reports_it(
    broker: EmbeddedBroker, runtime: Runtime, settings: Settings
) -> None:
    await produce(runtime, entry(), ok_entry())
    app = build_app(settings, broker.bootstrap, {Role.MESSAGES})
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    engine = create_store_engine(settings.resolved_database_url())
    try:
        await asyncio.wait_for(app.start(), _DEADLINE_S)
        await wait_until(lambda: _stored(engine), "the role stored the message")
        url = f"http://127.0.0.1:{settings.web_port}/stats/"
        stats: dict[str, Any] = {}
        async with aiohttp.ClientSession() as session:

            async def counted() -> bool:
                async with session.get(url) as answer:
                    stats.update(await answer.json())
                return bool(stats["messages"]["entries_stored"] == 2)

            await wait_until(counted, "/stats/ counts the entries (after the commit)")
        assert stats["roles"] == ["messages"]
        assert stats["messages"]["sweeps"] == 1
    finally:
        await asyncio.wait_for(app.stop(), _DEADLINE_S)
        root.handlers[:] = handlers  # Faust may reconfigure logging; leave pytest's as it was
        root.setLevel(level)
        engine.dispose()


def _stored(engine: Engine) -> bool:
    try:
        rows = messages(engine)
    except OperationalError:  # no such table yet: the role migrates the store as it starts
        return False
    return [(m.attempts, m.outcome) for m in rows] == [(2, DELIVERED)]


def test_the_role_has_a_help_that_names_its_settings() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = CliRunner().invoke(cli, ["messages", "--help"], env={"COLUMNS": "200"})
    finally:
        # The root command configures logging before the subcommand's --help: leave pytest's.
        root.handlers[:] = handlers
        root.setLevel(level)

    assert result.exit_code == 0, result.output
    for fragment in (
        "message log",
        "PORTABILITY_MESSAGES_GROUP",
        "PORTABILITY_MESSAGE_RETENTION_DAYS",
        "portability api",
    ):
        assert fragment in result.output


async def test_the_api_process_runs_a_writer(
    broker: EmbeddedBroker, runtime: Runtime, settings: Settings
) -> None:
    """`portability api` with Kafka stores the log with nothing more to run (embedded mode)."""
    from portability.api.server import serve_api

    configured = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap, "api_port": 0})
    await produce(runtime, entry(), ok_entry())
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_api(configured, stop))
    engine = create_store_engine(settings.resolved_database_url())
    try:
        await wait_until(lambda: serving.done() or _stored(engine), "the API stored the log")
        assert not serving.done(), serving
    finally:
        stop.set()
        await asyncio.wait_for(serving, _DEADLINE_S)
        engine.dispose()
