"""The ``portability`` command as a separate OS process, for tests of its lifecycle.

Each process gets an environment of its own: no ``PORTABILITY_*`` variable from outside, a
unique topic prefix and unique groups (as ``pipeline_settings`` makes them), short Kafka
timeouts, its data folder in the test's ``tmp_path``. Its stdout and stderr go to files, read
as they grow; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from waiting import wait_until

__all__ = [
    "COMMAND",
    "RoleProcess",
    "gone",
    "listening_ports",
    "process_state",
    "role_environment",
    "started",
]

# The console script of the venv running the tests.
COMMAND = str(Path(sys.executable).parent / "portability")
# Whatever happens, a process is not left behind longer than this after its test.
_KILL_AFTER_S = 15.0


def role_environment(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of one process: unique topics and groups, fast group joins."""
    unique = uuid.uuid4().hex[:10]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTABILITY_")}
    env |= {
        "PORTABILITY_DATA_DIR": str(data_dir),
        "PORTABILITY_TOPIC_PREFIX": f"p{unique}.",
        "PORTABILITY_PARTITIONS": "2",
        "PORTABILITY_MATCHER_GROUP": f"matcher-{unique}",
        "PORTABILITY_DELIVERY_GROUP": f"delivery-{unique}",
        "PORTABILITY_STATE_GROUP": f"state-{unique}",
        "PORTABILITY_MESSAGES_GROUP": f"messages-{unique}",
        "PORTABILITY_KAFKA_REBALANCE_TIMEOUT_MS": "3000",
        # As the in-process tests' (pipeline_harness.FAST_GROUPS): a join waits 1 s, not 3.
        "PORTABILITY_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "PORTABILITY_KAFKA_HEARTBEAT_INTERVAL_MS": "300",
        "COLUMNS": "250",
    }
    return env | {f"PORTABILITY_{name.upper()}": value for name, value in settings.items()}


@dataclass
class RoleProcess:
    """One running ``portability`` command, its output in files."""

    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def output(self) -> str:
        return self.stdout() + self.stderr()

    async def wait_for(self, text: str, timeout_s: float = 30.0) -> None:
        """Until ``text`` is in stderr; fails at once if the process ended first."""

        def seen() -> bool:
            if text in self.stderr():
                return True
            if self.process.poll() is not None:
                raise AssertionError(
                    f"exited {self.process.returncode} before {text!r}:\n{self.output()}"
                )
            return False

        await wait_until(seen, f"{text!r} in the output of pid {self.pid}", timeout_s)

    async def wait_healthy(self, port: int, timeout_s: float = 60.0) -> None:
        """Until ``/healthz/`` on 127.0.0.1:``port`` answers 200."""
        url = f"http://127.0.0.1:{port}/healthz/"
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"exited {self.process.returncode} before healthy:\n{self.output()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        return r.status == 200
                return False

            await wait_until(healthy, f"{url} healthy", timeout_s, poll_s=0.2)

    async def exit_code(self, timeout_s: float) -> int:
        """The exit code, once the process ends within ``timeout_s``."""
        try:
            return await asyncio.to_thread(self.process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"pid {self.pid} still running after {timeout_s} s:\n{self.output()}"
            ) from None

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    def children(self) -> list[int]:
        """Process ids of its children (Linux: /proc)."""
        found: list[int] = []
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                found += [int(pid) for pid in (task / "children").read_text().split()]
        return found


@contextlib.asynccontextmanager
async def started(
    args: list[str], env: Mapping[str, str], log_dir: Path
) -> AsyncIterator[RoleProcess]:
    """Start ``portability ARGS``; SIGKILL it on the way out if it still runs (a failed test)."""
    running = _spawn(args, env, log_dir)
    process = running.process
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
        await asyncio.to_thread(process.wait, _KILL_AFTER_S)


def _spawn(args: list[str], env: Mapping[str, str], log_dir: Path) -> RoleProcess:
    name = "-".join(args)[:40].replace("/", "_") + f"-{uuid.uuid4().hex[:6]}"  # args: paths too
    stdout_path, stderr_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(  # noqa: S603 - the project's own command
            [COMMAND, *args], env=dict(env), stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )
    return RoleProcess(process, stdout_path, stderr_path)


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` (``Z`` for a zombie), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def listening_ports(port: int) -> list[str]:
    """The local addresses (hex, as /proc/net/tcp writes them) listening on TCP ``port``."""
    found: list[str] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                address, _, hex_port = fields[1].rpartition(":")
                if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    found.append(address)
    return found


def gone(pid: int) -> bool:
    """True if ``pid`` has ended (a zombie waiting for a reaper counts as ended)."""
    return process_state(pid) in (None, "Z", "X")
