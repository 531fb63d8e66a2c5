"""The suite's processes: each role, the broker and the receiving app as an OS process of its
own, started, killed, paused and resumed as an operator's machines would be.

Every process runs in a session of its own (a Ctrl-C at the terminal reaches the suite, which
then stops them in order) and its output goes to a log file. :class:`Fleet` keeps each one it
started and stops all of them on the way out, whatever ended the run: SIGTERM, then SIGKILL
of its whole process group after a bound, so nothing outlives the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

__all__ = ["Fleet", "Proc", "free_port"]

_STOP_S = 12.0  # a role's own stop watchdog is 8 s
_HEALTHY_S = 90.0  # a role's start (imports, group join) on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Proc:
    """One process: a role (``matcher``...), its command, environment and health URL."""

    name: str
    role: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    health_url: str | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    paused: bool = False

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(  # noqa: S603  # our own commands
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def signal_group(self, number: signal.Signals) -> None:
        """``number`` to the process and its children (the broker's Tansu)."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, number)

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye to any group."""
        self.signal_group(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=_STOP_S)
        self.paused = False

    def pause(self) -> None:
        self.signal_group(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal_group(signal.SIGCONT)
        self.paused = False

    def terminate(self) -> int | None:
        """SIGTERM (a graceful stop), SIGKILL if it is not over within the bound."""
        if self.popen is None:
            return None
        if self.running():
            if self.paused:
                self.resume()
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()
            try:
                self.popen.wait(timeout=_STOP_S)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait(timeout=_STOP_S)
        # Whatever it left in its group (a child) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        return self.popen.returncode

    async def wait_healthy(self, timeout_s: float = _HEALTHY_S) -> float:
        """Seconds until the health URL answers 200 (or, without one, the process runs)."""
        began = time.monotonic()
        deadline = began + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if not self.running():
                    raise RuntimeError(f"{self.name} exited: see {self.log}")
                if self.health_url is None:
                    return time.monotonic() - began
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    timeout = aiohttp.ClientTimeout(total=2)
                    async with session.get(self.health_url, timeout=timeout) as response:
                        if response.status == 200:
                            return time.monotonic() - began
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} not healthy within {timeout_s:g} s: see {self.log}")


class Fleet:
    """Every process the suite started, by role; stopped together at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._all: list[Proc] = []
        self._count: dict[str, int] = {}

    def new(
        self,
        role: str,
        argv: list[str],
        env: Mapping[str, str],
        health_url: str | None = None,
    ) -> Proc:
        """A process of ``role``, started (its log: ``logs/ROLE-N.log``)."""
        index = self._count.get(role, 0)
        self._count[role] = index + 1
        name = f"{role}-{index}"
        proc = Proc(name, role, argv, dict(env), self.logs / f"{name}.log", health_url)
        proc.start()
        self._all.append(proc)
        return proc

    def live(self, role: str) -> list[Proc]:
        return [proc for proc in self._all if proc.role == role and proc.running()]

    def exited(self) -> list[Proc]:
        """Processes that ended without the suite ending them (a crash of their own)."""
        return [proc for proc in self._all if proc.popen is not None and not proc.running()]

    def forget(self, proc: Proc) -> None:
        """A process the suite ended on purpose: no longer counted as crashed."""
        self._all.remove(proc)

    def stop_all(self, last: tuple[str, ...] = ("broker",)) -> dict[str, int | None]:
        """Stop every process, those of the ``last`` roles after the others."""
        codes: dict[str, int | None] = {}
        ordered = sorted(self._all, key=lambda proc: proc.role in last)
        for proc in ordered:
            codes[proc.name] = proc.terminate()
        return codes
