"""How the long-running commands run: until SIGINT or SIGTERM, a bounded stop, one-line errors.

``portability broker``, ``api`` and the roles (``matcher``, ``worker``, ``relay``,
``transfers``, ``pipeline``) each run a coroutine that serves until its ``stop`` event is set.
The first SIGINT (Ctrl-C) or SIGTERM sets it: the command stops what it started (Kafka
clients, web servers, the broker's Tansu child) and exits 0. A stop that is not over within
``STOP_TIMEOUT_S``, or a second signal, ends the process at once with exit code 1: neither an
operator's second Ctrl-C nor an orchestrator's SIGTERM is ever ignored.

An expected failure is one line on stderr (see :func:`failure_of`) and an exit code:

- 1 (:data:`EXIT_FAILED`): something the command needs cannot be had (a broker that cannot be
  reached, a port that is taken, an unreachable consent store), or a role stopped on an error;
- 2 (:data:`EXIT_CONFIGURATION`): the configuration is wrong (a setting, a flag, the privacy
  policy file).

Anything else is a bug, and keeps its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Final

from aiokafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from portability.errors import ConfigurationError, PortabilityError
from portability.ops.errors import OpsError
from portability.privacy.errors import PolicyError

__all__ = [
    "EXIT_CONFIGURATION",
    "EXIT_FAILED",
    "EXIT_OK",
    "STOP_TIMEOUT_S",
    "RoleFailedError",
    "StartupError",
    "bind_failure",
    "failure_of",
    "listening_socket",
    "run_until_signalled",
]

log = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_CONFIGURATION: Final = 2
# Under the 10 s that Docker and Kubernetes wait between SIGTERM and SIGKILL by default.
STOP_TIMEOUT_S: Final = 8.0

Serve = Callable[[asyncio.Event], Awaitable[None]]


class StartupError(OpsError):
    """A long-running command cannot start; the message says what to change."""


class RoleFailedError(OpsError):
    """A role's loop ended on an error while the process was not stopping."""


def listening_socket(host: str, port: int, what: str, settings: tuple[str, str]) -> socket.socket:
    """A TCP socket bound to ``host:port`` for a server to listen on (port 0: a free one).

    Bound before the command connects to anything, so that a taken port stops it before it
    joins a consumer group or takes a lock.

    Args:
        host: The address to bind (a name resolves to its first address).
        port: The port.
        what: What listens there, for the message.
        settings: The variables of host and port, to name the one to change.

    Raises:
        StartupError: The address cannot be bound; says why and which setting to change.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
    except OSError as error:
        raise StartupError(bind_failure(error, host, port, what, settings)) from None
    try:
        # As uvicorn and aiohttp bind: a port in TIME_WAIT is free, one with a listener is not.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise StartupError(bind_failure(error, host, port, what, settings)) from None
    return listener


def bind_failure(error: OSError, host: str, port: int, what: str, settings: tuple[str, str]) -> str:
    """One line: ``what`` cannot listen on ``host:port``, why, and which setting to change."""
    host_setting, port_setting = settings
    where = f"cannot serve {what} on {host}:{port}"
    if isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL:
        reason = error.strerror if isinstance(error, socket.gaierror) else _reason(error)
        return f"{where}: {reason}; set {host_setting} to an address of this machine"
    return f"{where}: {_reason(error)}; set {port_setting} to a free port (0 picks one)"


def _reason(error: OSError) -> str:
    # asyncio's own message repeats the address; the system's reason is what is news.
    return os.strerror(error.errno).lower() if error.errno else str(error)


def failure_of(error: BaseException) -> tuple[int, str] | None:
    """The exit code and the one line of an expected failure; None for anything else (a bug).

    The line is the error's own message with its whitespace collapsed: a YAML error or a
    driver's message may span lines, and the operator gets one.
    """
    if isinstance(error, ConfigurationError | PolicyError):
        return EXIT_CONFIGURATION, _one_line(str(error))
    if isinstance(error, PortabilityError):
        return EXIT_FAILED, _one_line(str(error))
    if isinstance(error, KafkaError):
        return EXIT_FAILED, _one_line(f"Kafka: {error}")
    if isinstance(error, SQLAlchemyError):
        # The first line only: the rest is the SQL statement and a link to SQLAlchemy's docs.
        cause = getattr(error, "orig", None) or error
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return EXIT_FAILED, f"cannot use the consent store: {first}"
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run_until_signalled(
    serve: Serve, report: Callable[[str], None], stop_timeout_s: float = STOP_TIMEOUT_S
) -> int:
    """Run ``serve(stop)`` until it returns; SIGINT and SIGTERM set ``stop``.

    Args:
        serve: The command's body. It returns once it has stopped everything it started, and
            sets ``stop`` itself when it begins to stop for another reason (a failure), so that
            the watchdog bounds that stop too.
        report: Shows the one line of an expected failure (the CLI prints it on stderr).
        stop_timeout_s: How long a stop may take before the process exits at once.

    Returns:
        The exit code: 0 after a clean stop, else that of :func:`failure_of`.

    Raises:
        BaseException: Whatever ``serve`` raised that is not an expected failure.
    """
    watchdog = _Watchdog(stop_timeout_s)
    try:
        asyncio.run(_serve_until_signalled(serve, watchdog))
    except Exception as error:
        failure = failure_of(error)
        if failure is None:
            raise
        code, line = failure
        report(line)
        return code
    finally:
        watchdog.cancel()
    return EXIT_OK


async def _serve_until_signalled(serve: Serve, watchdog: _Watchdog) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(number: signal.Signals) -> None:
        if stop.is_set():
            log.error("%s while stopping: exiting now", number.name)
            _exit_now(EXIT_FAILED)
        log.info("%s received: stopping", number.name)
        stop.set()

    handled: list[signal.Signals] = []
    for number in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(number, on_signal, number)
            handled.append(number)
    arming = asyncio.create_task(_arm_when_set(stop, watchdog), name="stop watchdog")
    try:
        await serve(stop)
    finally:
        # What remains (asyncio.run's own shutdown waits for every thread of to_thread) is
        # bounded too.
        watchdog.arm()
        arming.cancel()
        for number in handled:
            loop.remove_signal_handler(number)


async def _arm_when_set(stop: asyncio.Event, watchdog: _Watchdog) -> None:
    await stop.wait()
    watchdog.arm()


class _Watchdog:
    """Exits the process if a stop is not over in time.

    A thread, not a task: a stop can hang where the event loop cannot run (a blocked thread
    that asyncio.run waits for at shutdown, a callback that never yields).
    """

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def arm(self) -> None:
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(self._timeout_s, self._expire)
                self._timer.daemon = True
                self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def _expire(self) -> None:
        log.error("the stop did not finish within %g s: exiting now", self._timeout_s)
        _exit_now(EXIT_FAILED)


def _exit_now(code: int) -> None:
    """End the process without waiting for anything (a hung stop would wait forever)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
