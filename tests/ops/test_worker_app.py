"""The Faust app hosting the pipeline roles, started in-process against the embedded Tansu.

Checks the web views an operator relies on: ``/stats/`` reports each hosted role and
``/healthz/`` turns 200 once the runtime is open and the matcher is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import faust
import faust.exceptions
import pytest

from portability.broker import EmbeddedBroker, free_port
from portability.ops.worker_app import Role, build_app
from portability.settings import Settings

# Joining the consumer groups on Tansu takes about 6 s; allow generous headroom.
_DEADLINE_S = 60.0


@pytest.fixture
async def worker_app(broker: EmbeddedBroker, settings: Settings) -> AsyncIterator[tuple[Any, str]]:
    port = free_port(settings.web_host)
    configured = settings.model_copy(update={"web_port": port})
    app = build_app(configured, broker.bootstrap, {Role.MATCHER, Role.DELIVERY})
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        await asyncio.wait_for(app.start(), _DEADLINE_S)
        yield app, f"http://{configured.web_host}:{port}"
    finally:
        await asyncio.wait_for(app.stop(), _DEADLINE_S)
        # Faust/mode may reconfigure logging when a worker starts; leave pytest's as it was.
        root.handlers[:] = handlers
        root.setLevel(level)


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
        return response.status, await response.json()


async def _poll(session: aiohttp.ClientSession, url: str, want: int) -> tuple[int, Any]:
    """GET ``url`` until it answers ``want`` or the deadline passes; the last answer."""
    deadline = time.monotonic() + _DEADLINE_S
    last: tuple[int, Any] = (0, None)
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientConnectionError, asyncio.TimeoutError):
            last = await _get(session, url)
            if last[0] == want:
                return last
        await asyncio.sleep(0.1)
    return last


def test_build_app_names_the_app_after_its_roles(
    broker: EmbeddedBroker, settings: Settings
) -> None:
    configured = settings.model_copy(update={"web_port": free_port()})

    app = build_app(configured, broker.bootstrap, {Role.RELAY, Role.MATCHER})

    assert isinstance(app, faust.App)
    assert app.conf.id == "portability-matcher-relay"
    assert app.conf.web_port == configured.web_port
    assert app.conf.web_host == configured.web_host


def test_build_app_accepts_web_port_zero(broker: EmbeddedBroker, settings: Settings) -> None:
    assert settings.web_port == 0

    app = build_app(settings, broker.bootstrap, {Role.MATCHER})

    assert app.conf.web_port > 0


async def test_web_views_report_roles_and_health(worker_app: tuple[Any, str]) -> None:
    _, base = worker_app
    async with aiohttp.ClientSession() as session:
        status, stats = await _poll(session, f"{base}/stats/", 200)
        assert status == 200, stats
        assert stats["roles"] == ["delivery", "matcher"]
        assert "matcher" in stats
        assert "delivery" in stats
        assert "relay" not in stats
        assert isinstance(stats["matcher"]["ready"], bool)
        assert "pending" in stats["delivery"]

        status, health = await _poll(session, f"{base}/healthz/", 200)
        assert status == 200, health
        assert health == {"ok": True}

        _, stats = await _get(session, f"{base}/stats/")
        assert stats["matcher"]["ready"] is True
