"""The deployment under test: every role as an OS process, as an operator runs them.

A broker (``portability broker``), the consent store on a private PostgreSQL server, the API
with its outbox relay and message log writer (``portability api``), two matchers, two
workers, a transfers role and the receiving app (``python -m chaos.receiver``). All share one
data folder, one sealing key and short group timeouts (``Timeouts``). :class:`Cluster` starts
them, replaces a killed one, scales a role up and down, and stops everything on the way out.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from chaos.processes import Fleet, Proc, free_port

__all__ = ["ROLES", "Cluster", "Timeouts"]

ROLES = ("matcher", "worker", "transfers", "api")
PARTITIONS = 6
# A compressed retry schedule: the app's bad days must cost seconds here, not the production
# schedule's minutes and hours (which would leave deliveries parked past the run's end).
_RETRY_SCHEDULE = [0, 1, 1, 2, 2, 2, 3, 3, *([4] * 40)]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The consumer groups' timeouts the roles run with (ms)."""

    session_ms: int = 3000
    heartbeat_ms: int = 500
    rebalance_ms: int = 3000


class Cluster:
    """The roles' processes in ``fleet``; ``folder`` holds the data and the logs."""

    def __init__(
        self, fleet: Fleet, folder: Path, database_url: str, timeouts: Timeouts, seed: int
    ) -> None:
        self.fleet = fleet
        self.folder = folder
        self.tokens = (secrets.token_hex(16), secrets.token_hex(16))  # platform, operator
        self.broker_port = free_port()
        self.api_port = free_port()
        self.receiver_port = free_port()
        self.secrets_file = folder / "secrets.json"
        self.received_log = folder / "received.jsonl"
        self.broker_env: dict[str, str] = {}
        self._seed = seed
        key = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PORTABILITY_")}
        self.env |= {
            "PORTABILITY_KAFKA_BOOTSTRAP": self.bootstrap,
            "PORTABILITY_DATABASE_URL": database_url,
            "PORTABILITY_DATA_DIR": str(folder / "data"),
            "PORTABILITY_PARTITIONS": str(PARTITIONS),
            "PORTABILITY_SECRETS_KEY": f"k1:{key}",
            "PORTABILITY_DEVELOPMENT_MODE": "true",
            "PORTABILITY_WEBHOOK_ALLOW_LOOPBACK": "true",
            "PORTABILITY_KAFKA_SESSION_TIMEOUT_MS": str(timeouts.session_ms),
            "PORTABILITY_KAFKA_HEARTBEAT_INTERVAL_MS": str(timeouts.heartbeat_ms),
            "PORTABILITY_KAFKA_REBALANCE_TIMEOUT_MS": str(timeouts.rebalance_ms),
            "PORTABILITY_DELIVERY_RETRY_SCHEDULE_S": json.dumps(_RETRY_SCHEDULE),
            "PORTABILITY_DELIVERY_TIMEOUT_S": "5",
            "PORTABILITY_DELIVERY_CIRCUIT_OPEN_S": "2",
            "PORTABILITY_SECRET_ROTATION_OVERLAP_S": "30",
            "PORTABILITY_API_PORT": str(self.api_port),
            "PORTABILITY_API_PLATFORM_TOKEN": self.tokens[0],
            "PORTABILITY_API_OPERATOR_TOKEN": self.tokens[1],
            "PYTHONDONTWRITEBYTECODE": "",
        }
        (folder / "data").mkdir(parents=True, exist_ok=True)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}"

    def start_broker(self) -> Proc:
        argv = [sys.executable, "-m", "portability", "broker", "--port", str(self.broker_port)]
        return self.fleet.new("broker", argv, self.env | self.broker_env)

    def start_receiver(self) -> Proc:
        argv = [
            sys.executable,
            "-m",
            "chaos.receiver",
            "--port",
            str(self.receiver_port),
            "--secrets",
            str(self.secrets_file),
            "--log",
            str(self.received_log),
            "--seed",
            str(self._seed),
        ]
        # The suite's own package, wherever the command is run from.
        root = str(Path(__file__).resolve().parent.parent)
        return self.fleet.new("receiver", argv, self.env | {"PYTHONPATH": root})

    def start(self, role: str) -> Proc:
        """One more process of ``role`` (``matcher``, ``worker``, ``transfers`` or ``api``)."""
        if role == "api":
            health = f"{self.api_url}/openapi.json"
            env = self.env | {"PORTABILITY_WEB_PORT": str(free_port())}
        else:
            port = free_port()
            health = f"http://127.0.0.1:{port}/healthz/"
            env = self.env | {"PORTABILITY_WEB_PORT": str(port)}
        argv = [sys.executable, "-m", "portability", role]
        return self.fleet.new(role, argv, env, health)

    def restart(self, proc: Proc) -> Proc:
        """A replacement for ``proc`` (ended): the same role, command and environment."""
        self.fleet.forget(proc)
        return self.fleet.new(proc.role, proc.argv, proc.env, proc.health_url)
