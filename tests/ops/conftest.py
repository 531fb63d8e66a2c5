"""Fixtures of the operator commands' tests: a :class:`Scene` on the session's Tansu, and
an environment in which the CLI can run in-process."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pipeline_harness import FAST_GROUPS
from portability.broker import EmbeddedBroker
from portability.broker.inspector import Inspector
from portability.settings import Settings

from .scene import PARTITIONS, Scene


@pytest.fixture
def ops_settings(tmp_path: Path) -> Settings:
    """Unique topics and groups, two partitions a topic, fast group joins; nothing else the
    commands read."""
    unique = uuid.uuid4().hex[:10]
    return Settings(
        data_dir=tmp_path,
        topic_prefix=f"ops{unique}.",
        partitions=PARTITIONS,
        matcher_group=f"matcher-{unique}",
        delivery_group=f"delivery-{unique}",
        state_group=f"state-{unique}",
        **FAST_GROUPS,
    )


@pytest.fixture
async def scene(broker: EmbeddedBroker, ops_settings: Settings) -> AsyncIterator[Scene]:
    opened = Scene(broker.bootstrap, ops_settings)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def cli_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No PORTABILITY_* settings from the outer environment; logging restored afterwards.

    The CLI calls configure_logging, which replaces the root logger's handlers (including
    pytest's capture handlers) and sets levels: put everything back after each test.
    """
    for key in list(os.environ):
        if key.startswith("PORTABILITY_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PORTABILITY_DATA_DIR", str(tmp_path / "data"))
    # Rich sizes tables to COLUMNS when not on a terminal; keep long topic names on one line.
    monkeypatch.setenv("COLUMNS", "250")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {
        name: logging.getLogger(name).level
        for name in ("aiokafka", "faust", "mode", "aiohttp.access")
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, noisy_level in noisy.items():
        logging.getLogger(name).setLevel(noisy_level)


@pytest.fixture
async def inspector(broker: EmbeddedBroker) -> AsyncIterator[Inspector]:
    """An open :class:`Inspector` on the session's broker."""
    async with Inspector(broker.bootstrap) as opened:
        yield opened
