"""The Faust app hosting the pipeline roles, started in-process against the embedded Tansu.

Checks the web views an operator relies on: ``/stats/`` reports each hosted role,
``/healthz/`` turns 200 once the runtime is open and the matcher is ready, they listen on
``web_host`` only, and ``/metrics`` says which privacy policy is in force. (The roles as
separate processes: test_role_processes.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import faust
import faust.exceptions
import pytest

from portability.broker import EmbeddedBroker, free_port
from portability.ops.worker_app import Role, build_app
from portability.privacy import current_policy, default_policy_path, load_policy, policy_source
from portability.settings import Settings

from .processes import listening_ports

# Joining the consumer groups on Tansu takes about 6 s; allow generous headroom.
_DEADLINE_S = 60.0


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings, bootstrap: str, roles: set[Role]
) -> AsyncIterator[tuple[Any, str]]:
    """The app of ``roles`` started, and its base URL; stopped on the way out."""
    port = free_port(settings.web_host)
    configured = settings.model_copy(update={"web_port": port})
    app = build_app(configured, bootstrap, roles)
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


@pytest.fixture
async def worker_app(broker: EmbeddedBroker, settings: Settings) -> AsyncIterator[tuple[Any, str]]:
    async with running_app(settings, broker.bootstrap, {Role.MATCHER, Role.DELIVERY}) as started:
        yield started


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")
async def test_web_views_listen_on_web_host_only(worker_app: tuple[Any, str]) -> None:
    app, base = worker_app
    port = app.conf.web_port
    async with aiohttp.ClientSession() as session:
        status, _ = await _poll(session, f"{base}/stats/", 200)
    assert status == 200  # reachable on 127.0.0.1

    # Bound to 127.0.0.1 alone (0100007F as /proc/net/tcp writes it), not to every interface.
    assert listening_ports(port) == ["0100007F"]
    with socket.socket() as other:
        # Free on another loopback address: it would be taken by a bind to 0.0.0.0.
        other.bind(("127.0.0.2", port))


async def test_metrics_name_the_privacy_policy_in_force(worker_app: tuple[Any, str]) -> None:
    _, base = worker_app
    version = load_policy().version
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        text = await response.text()

    assert f'portability_privacy_policy_info{{version="{version}"}} 1.0' in text
    assert "portability_privacy_policy_refusals_total 0.0" in text


async def test_a_refused_policy_edit_is_logged_once_for_matcher_and_transfers(
    broker: EmbeddedBroker, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``portability pipeline`` runs the matcher and the transfers role in one process; each
    had its own source of the policy file, and a refused edit was logged by both."""
    policy = tmp_path / "policy.yaml"
    shutil.copyfile(default_policy_path(), policy)
    configured = settings.model_copy(
        update={"privacy_policy_path": policy, "privacy_policy_reload_s": 0.05}
    )
    roles = {Role.MATCHER, Role.TRANSFERS}
    async with running_app(configured, broker.bootstrap, roles) as (app, base):
        matcher = app.pipeline.matcher
        assert matcher.policy_source is policy_source(configured)

        with caplog.at_level(logging.ERROR, logger="portability.privacy.loader"):
            policy.write_text("version: [unclosed\n")
            async with aiohttp.ClientSession() as session:
                await _poll_metrics(session, f"{base}/metrics", "refusals_total 1.0")
            current_policy(configured)  # what the transfers role asks before each archive

    refusals = [
        r
        for r in caplog.records
        if r.name == "portability.privacy.loader" and r.levelno >= logging.ERROR
    ]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    assert "keeping privacy policy" in refusals[0].getMessage()


async def _poll_metrics(session: aiohttp.ClientSession, url: str, wanted: str) -> None:
    deadline = time.monotonic() + _DEADLINE_S
    while time.monotonic() < deadline:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            if wanted in await response.text():
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{wanted!r} not in {url} within {_DEADLINE_S} s")
