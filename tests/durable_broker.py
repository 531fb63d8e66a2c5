"""An embedded broker on durable storage, to kill and restart: Tansu on a local S3 server.

This build of Tansu stores only in memory or in S3, so a broker that survives a crash stores in
a bucket of moto's S3 server (``moto_server``, a dev dependency), run as a child process on a
free 127.0.0.1 port so that its work does not compete with the test for the GIL. Everything
here is plain asyncio (no pytest), for the tests' fixture and for any suite that needs a broker
it can SIGKILL and start again on the same port and storage::

    async with durable_broker(tmp_path) as durable:
        durable.bootstrap                     # "127.0.0.1:PORT", the same across restarts
        durable.role_settings()               # PORTABILITY_* for `portability broker` & co
        await durable.kill()                  # SIGKILL Tansu (S3 keeps what it acknowledged)
        await durable.start()                 # Tansu again, same port, same bucket
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

from portability.broker import EmbeddedBroker, free_port

__all__ = ["DurableBroker", "S3Server", "durable_broker"]

MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")
# moto accepts any credentials; Tansu's S3 client needs some (else it asks an instance
# metadata service), and AWS_ALLOW_HTTP for a plain-http endpoint.
_KEY_ID = "portability-test"
_SECRET = "portability-test-secret"
_REGION = "us-east-1"


class S3Server:
    """moto's S3 server as a child process on a free 127.0.0.1 port."""

    def __init__(self, log_file: Path):
        self.port = free_port()
        self._log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self._log_file.open("ab") as output:
            return subprocess.Popen(  # noqa: S603 - the venv's moto_server
                [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    async def start(self, timeout_s: float = 20.0) -> None:
        self._process = self._spawn()
        deadline = time.monotonic() + timeout_s
        while not await asyncio.to_thread(self._answers):
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"moto_server exited with code {self._process.returncode} before answering "
                    f"on {self.endpoint} (its output: {self._log_file})"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not answer on {self.endpoint} in {timeout_s}s")
            await asyncio.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/", timeout=1):  # noqa: S310 - ours
                return True
        except (urllib.error.URLError, OSError):
            return False

    async def create_bucket(self, name: str) -> None:
        """Create bucket ``name`` (moto checks no signature: a plain PUT does)."""
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")  # noqa: S310
        with await asyncio.to_thread(urllib.request.urlopen, request, timeout=10):
            pass

    def settings(self) -> dict[str, str]:
        """The broker's S3 settings (field names of ``Settings``) for this server."""
        return {
            "broker_s3_endpoint": self.endpoint,
            "broker_s3_region": _REGION,
            "broker_s3_access_key_id": _KEY_ID,
            "broker_s3_secret_access_key": _SECRET,
        }

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 5)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


class DurableBroker:
    """An :class:`EmbeddedBroker` storing in a bucket of an :class:`S3Server`."""

    def __init__(self, s3: S3Server, log_file: Path, bucket: str = "tansu"):
        self.s3 = s3
        self.storage = f"s3://{bucket}/"
        environment = {
            "AWS_ENDPOINT": s3.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_DEFAULT_REGION": _REGION,
            "AWS_ACCESS_KEY_ID": _KEY_ID,
            "AWS_SECRET_ACCESS_KEY": _SECRET,
        }
        self.broker = EmbeddedBroker(
            log_file=log_file, storage=self.storage, environment=environment
        )

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def pid(self) -> int | None:
        return self.broker.pid

    def role_settings(self) -> dict[str, str]:
        """Settings (field names) that point a ``portability`` process at this broker."""
        return {"kafka_bootstrap": self.bootstrap}

    def broker_settings(self) -> dict[str, str]:
        """Settings (field names) for ``portability broker`` on this storage."""
        return {"broker_storage": self.storage, **self.s3.settings()}

    async def start(self) -> None:
        """Start Tansu (again) on the same port and bucket."""
        await self.broker.start()

    async def kill(self) -> None:
        """SIGKILL Tansu, as a crash would; what it acknowledged stays in the bucket."""
        await self.broker.kill()

    async def stop(self) -> None:
        await self.broker.stop()


@contextlib.asynccontextmanager
async def durable_broker(directory: Path, bucket: str = "tansu") -> AsyncIterator[DurableBroker]:
    """A started :class:`DurableBroker` (logs in ``directory``), stopped with its S3 server."""
    s3 = S3Server(directory / "moto.log")
    try:
        await s3.start()
        await s3.create_bucket(bucket)
        durable = DurableBroker(s3, directory / "tansu.log", bucket)
        try:
            await durable.start()
            yield durable
        finally:
            await durable.stop()
    finally:
        await s3.stop()
