"""Roles as OS processes, as an operator runs them, for the benchmarks that need them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import aiohttp

from benchmarks.measurement import InvalidRunError
from portability.settings import Settings

__all__ = ["Role", "matchers_ready", "role_processes"]

Role = Literal["matcher", "worker"]


async def matchers_ready(ports: list[int], processes: int) -> None:
    """Each matcher held partitions at the end (a process that held none did no work)."""
    ready = 0
    async with aiohttp.ClientSession() as session:
        for port in ports:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
            ready += any(
                line.split()[1:] in (["1"], ["1.0"])
                for line in text.splitlines()
                if line.startswith("portability_matcher_ready ")
            )
    if ready != processes:
        raise InvalidRunError(f"{ready} of {processes} matcher processes held partitions")


@contextlib.contextmanager
def role_processes(
    role: Role,
    bootstrap: str,
    settings: Settings,
    ports: list[int],
    logs: Path,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``portability ROLE`` processes of one group, stopped (SIGTERM) on the way out."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTABILITY_")}
    env.update(
        {
            "PORTABILITY_KAFKA_BOOTSTRAP": bootstrap,
            "PORTABILITY_TOPIC_PREFIX": settings.topic_prefix,
            "PORTABILITY_PARTITIONS": str(settings.partitions),
            "PORTABILITY_MATCHER_GROUP": settings.matcher_group,
            "PORTABILITY_DELIVERY_GROUP": settings.delivery_group,
            "PORTABILITY_DATA_DIR": str(settings.data_dir),
            "PORTABILITY_PRIVACY_POLICY_PATH": str(settings.privacy_policy_path),
            "PORTABILITY_DEVELOPMENT_MODE": "true",
            "PORTABILITY_WEBHOOK_ALLOW_LOOPBACK": "true",
            "PORTABILITY_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
            "PORTABILITY_KAFKA_HEARTBEAT_INTERVAL_MS": str(settings.kafka_heartbeat_interval_ms),
            "PORTABILITY_KAFKA_REBALANCE_TIMEOUT_MS": str(settings.kafka_rebalance_timeout_ms),
        }
    )
    started: list[subprocess.Popen[bytes]] = []
    try:
        for index, port in enumerate(ports):
            with (logs / f"{role}-{index}.log").open("wb") as log:
                started.append(
                    subprocess.Popen(  # noqa: S603  # role: "matcher" or "worker", ours
                        [sys.executable, "-m", "portability", role],
                        env={**env, "PORTABILITY_WEB_PORT": str(port)},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield started
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
