"""Durable storage for the embedded broker, so that killing and restarting it is a fault the
pipeline can survive: Tansu's S3 storage engine on a local S3-compatible server (moto's
``moto_server``), started here and stopped on the way out.

Available only where the broker has the setting (``PORTABILITY_BROKER_STORAGE``) and
``moto_server`` is installed; otherwise the broker keeps its log in memory, its restart is
left out of the schedule, and :attr:`Storage.reason` says why (the table prints it).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from chaos.processes import free_port
from portability.settings import Settings

__all__ = ["Storage", "durable_broker"]

_BUCKET = "chaos"
_KEYS = {"AWS_ACCESS_KEY_ID": "chaos", "AWS_SECRET_ACCESS_KEY": "chaos"}  # moto takes any
_REGION = "eu-west-1"


@dataclass
class Storage:
    available: bool
    reason: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def describe(self) -> str:
        return f"s3 ({self.env.get('PORTABILITY_BROKER_STORAGE')})" if self.available else "memory"


def _moto() -> str | None:
    return shutil.which("moto_server") or (
        str(Path(sys.executable).parent / "moto_server")
        if (Path(sys.executable).parent / "moto_server").exists()
        else None
    )


def _make_bucket(endpoint: str) -> None:
    import boto3  # type: ignore[import-untyped,import-not-found,unused-ignore]  # moto's dependency

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=_REGION,
        aws_access_key_id=_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=_KEYS["AWS_SECRET_ACCESS_KEY"],
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(
                Bucket=_BUCKET, CreateBucketConfiguration={"LocationConstraint": _REGION}
            )
        except Exception:  # not listening yet: botocore's errors vary
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        else:
            return


@contextlib.contextmanager
def durable_broker(folder: Path, enabled: bool = True) -> Iterator[Storage]:
    if not enabled:
        yield Storage(False, "left out (--no-broker-restart)")
        return
    if "broker_storage" not in Settings.model_fields:
        yield Storage(False, "the embedded broker has no durable storage setting in this tree")
        return
    moto = _moto()
    if moto is None:
        yield Storage(False, "moto_server (an S3-compatible server) is not installed")
        return
    port = free_port()
    with (folder / "moto.log").open("wb") as log:
        server = subprocess.Popen(  # noqa: S603  # moto's own command, our arguments
            [moto, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        _make_bucket(endpoint)
        yield Storage(
            True,
            env={
                "PORTABILITY_BROKER_STORAGE": f"s3://{_BUCKET}/",
                "PORTABILITY_BROKER_S3_ENDPOINT": endpoint,
                "PORTABILITY_BROKER_S3_REGION": _REGION,
                "PORTABILITY_BROKER_S3_ACCESS_KEY_ID": _KEYS["AWS_ACCESS_KEY_ID"],
                "PORTABILITY_BROKER_S3_SECRET_ACCESS_KEY": _KEYS["AWS_SECRET_ACCESS_KEY"],
            },
        )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
