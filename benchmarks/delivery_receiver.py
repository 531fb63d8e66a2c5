"""The delivery benchmark's webhook receiver: a fast app's endpoint, in a process of its own.

What it does per request is what a fast real app does before answering: read the body,
verify the Standard Webhooks signature (HMAC-SHA256 over ``id.timestamp.body`` with the
app's secret, timestamp within 5 minutes, written here from the spec rather than borrowed
from the sender's signing code), keep the body, answer 204. Parsing the deltas is left for
after the run, as an app that queues its webhooks does; the reference ``ReceivingApp``
parses, deduplicates and tracks latency inline, which would measure the receiver as much as
the sender. Both paths of the benchmark post to this same receiver.

It is started with multiprocessing's ``spawn``, which imports the parent's ``__main__``
again in the child: ``python -m benchmarks`` guards it, and so must any script that runs
the benchmark.

The parent sees live counters in shared memory (no polling requests that would compete
with the measured traffic), and asks for the full report over a pipe between runs: every
request's app, consent, sequences, delta ids and size, parsed with the contract's own
:func:`parse_delta_event`, so that a run that lost, duplicated or reordered a delta is seen.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import hashlib
import hmac
import multiprocessing
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Final

from aiohttp import web

from portability.webhooks.parsing import PayloadError, parse_delta_event

__all__ = ["Counters", "ReceivedRequest", "ReceiverProcess", "ReceiverReport"]

_SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the Standard Webhooks prefix
_TOLERANCE_S: Final = 300  # Standard Webhooks: reject a timestamp more than 5 minutes off
_MAX_BODY_BYTES: Final = 16 * 1024 * 1024
# The contract's key of a delta; no record field is named so, and a key's quotes are never
# escaped in JSON, so this counts the deltas of a body without parsing it (live count only:
# the report after the run parses every body).
_DELTA_MARK: Final = b'"sequence":'
_START_TIMEOUT_S: Final = 60.0
_CALL_TIMEOUT_S: Final = 120.0


class _Slot(IntEnum):
    """Indices of the live counters in shared memory."""

    REQUESTS = 0  # verified and kept
    DELTAS = 1
    BYTES = 2
    FIRST_NS = 3  # time.monotonic_ns() at the first request's arrival (system-wide clock)
    LAST_NS = 4  # ... when the latest verified request was answered
    REJECTED = 5  # failed verification: a benchmark run with any is invalid


@dataclass(frozen=True, slots=True)
class Counters:
    """A snapshot of the live counters."""

    requests: int
    deltas: int
    bytes: int
    first_ns: int
    last_ns: int
    rejected: int


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One verified request, as parsed after the run."""

    received_ns: int
    app_id: str
    consent_id: str
    sequences: tuple[int, ...]
    delta_ids: tuple[str, ...]
    size: int


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """Everything received since the last reset."""

    counters: Counters
    requests: list[ReceivedRequest]
    malformed: list[str]  # why bodies did not parse as delta events
    cpu_s: float  # the receiver process's CPU time since the reset


class ReceiverProcess:
    """The parent's handle on the receiver process: ``async with ReceiverProcess(secrets)``.

    Args:
        secrets: The ``whsec_`` secret of each app the receiver accepts, by app id.
    """

    def __init__(self, secrets: Mapping[str, str]) -> None:
        context = multiprocessing.get_context("spawn")
        self._shared: Any = context.RawArray(ctypes.c_int64, len(_Slot))
        self._control, child = context.Pipe()
        self._process = context.Process(
            target=serve,
            args=(dict(secrets), self._shared, child),
            name="bench-delivery-receiver",
            daemon=True,
        )
        self._child = child
        self.port = 0

    async def __aenter__(self) -> ReceiverProcess:
        self._process.start()
        self._child.close()  # the child holds its own end; closing ours lets EOF be seen
        try:
            reply = await self._receive(_START_TIMEOUT_S)
        except EOFError:
            await asyncio.to_thread(self._process.join, 5)
            raise RuntimeError(
                f"the receiver process exited during start-up (code {self._process.exitcode}; "
                "its traceback is above). A script that runs this benchmark needs an "
                "`if __name__ == '__main__':` guard: the receiver is spawned by multiprocessing"
            ) from None
        if not (isinstance(reply, tuple) and reply[0] == "ready"):
            raise RuntimeError(f"the receiver process did not start: {reply!r}")
        self.port = int(reply[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            self._control.send(("stop",))
        await asyncio.to_thread(self._process.join, 10)
        if self._process.is_alive():
            self._process.terminate()
            await asyncio.to_thread(self._process.join, 5)
        self._control.close()

    def webhook_url(self, app_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/{app_id}"

    def counters(self) -> Counters:
        """The live counters; cheap enough to poll while a run is on."""
        return _snapshot(self._shared)

    def check_alive(self) -> None:
        if not self._process.is_alive():
            raise RuntimeError(f"the receiver process died (exit code {self._process.exitcode})")

    async def reset(self) -> None:
        """Forget everything received: call between runs, while nothing is posting."""
        await self._call(("reset",))

    async def report(self) -> ReceiverReport:
        reply = await self._call(("report",))
        if not isinstance(reply, ReceiverReport):
            raise TypeError(f"the receiver answered {reply!r} to a report request")
        return reply

    async def _call(self, command: tuple[str]) -> object:
        self.check_alive()
        self._control.send(command)
        return await self._receive(_CALL_TIMEOUT_S)

    async def _receive(self, timeout_s: float) -> object:
        if not await asyncio.to_thread(self._control.poll, timeout_s):
            raise RuntimeError(f"the receiver process did not answer within {timeout_s:.0f} s")
        return self._control.recv()


def _snapshot(shared: Any) -> Counters:
    values = list(shared)
    return Counters(*(values[slot] for slot in _Slot))


# --- the child process --------------------------------------------------------------------


def serve(secrets: dict[str, str], shared: Any, control: Connection) -> None:
    """The receiver process's entry point: serve until the parent says stop."""
    asyncio.run(_Receiver(secrets, shared, control).serve())


@dataclass(slots=True)
class _Kept:
    received_ns: int
    app_id: str
    body: bytes


@dataclass(slots=True)
class _Receiver:
    secrets: dict[str, str]
    shared: Any
    control: Connection
    keys: dict[str, hmac.HMAC] = field(default_factory=dict)
    kept: list[_Kept] = field(default_factory=list)
    cpu_at_reset: float = 0.0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self) -> None:
        self.keys = {app_id: _keyed(secret) for app_id, secret in self.secrets.items()}
        application = web.Application(client_max_size=_MAX_BODY_BYTES)
        application.router.add_post("/webhooks/{app_id}", self.handle)
        runner = web.AppRunner(application, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            asyncio.get_running_loop().add_reader(self.control.fileno(), self.on_command)
            self.cpu_at_reset = time.process_time()
            self.control.send(("ready", runner.addresses[0][1]))
            await self.stopping.wait()
        finally:
            await runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        received = time.monotonic_ns()
        shared = self.shared
        if not shared[_Slot.FIRST_NS]:
            shared[_Slot.FIRST_NS] = received
        app_id = request.match_info["app_id"]
        body = await request.read()
        key = self.keys.get(app_id)
        if key is None or not _verified(key, body, request.headers):
            shared[_Slot.REJECTED] += 1
            return web.Response(status=401)
        self.kept.append(_Kept(received, app_id, body))
        shared[_Slot.REQUESTS] += 1
        shared[_Slot.BYTES] += len(body)
        # LAST before DELTAS: the parent reads LAST once DELTAS reached the total.
        shared[_Slot.LAST_NS] = time.monotonic_ns()
        shared[_Slot.DELTAS] += body.count(_DELTA_MARK)
        return web.Response(status=204)

    def on_command(self) -> None:
        try:
            command = self.control.recv()
        except EOFError:  # the parent is gone
            self.stopping.set()
            return
        if command[0] == "stop":
            self.stopping.set()
        elif command[0] == "reset":
            self.kept = []
            for slot in _Slot:
                self.shared[slot] = 0
            self.cpu_at_reset = time.process_time()
            self.control.send(("reset",))
        elif command[0] == "report":
            self.control.send(self.report())

    def report(self) -> ReceiverReport:
        cpu_s = time.process_time() - self.cpu_at_reset
        requests, malformed = _parse(self.kept)
        return ReceiverReport(_snapshot(self.shared), requests, malformed, cpu_s)


def _keyed(secret: str) -> hmac.HMAC:
    encoded = secret.removeprefix(_SECRET_PREFIX)
    key = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    return hmac.new(key, digestmod=hashlib.sha256)


def _verified(key: hmac.HMAC, body: bytes, headers: Mapping[str, str]) -> bool:
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures and timestamp.isdigit()):
        return False
    if abs(time.time() - int(timestamp)) > _TOLERANCE_S:
        return False
    mac = key.copy()
    mac.update(f"{msg_id}.{timestamp}.".encode())
    mac.update(body)
    expected = base64.b64encode(mac.digest())
    for signature in signatures.split(" "):
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return True
    return False


def _parse(kept: list[_Kept]) -> tuple[list[ReceivedRequest], list[str]]:
    requests: list[ReceivedRequest] = []
    malformed: list[str] = []
    for item in kept:
        try:
            event = parse_delta_event(item.body)
        except PayloadError as error:
            malformed.append(f"request for app {item.app_id}: {error}")
            continue
        requests.append(
            ReceivedRequest(
                received_ns=item.received_ns,
                app_id=item.app_id,
                consent_id=event.consent_id,
                sequences=tuple(delta.sequence for delta in event.deltas),
                delta_ids=tuple(delta.id for delta in event.deltas),
                size=len(item.body),
            )
        )
    return requests, malformed
