"""``portability receiver``: the reference receiver as a process an app developer runs.

It serves ``POST /webhooks/{app_id}`` for one app, verifies and deduplicates every request,
logs each verified event as one structured line, asks the API to replay gaps that do not
fill by themselves (given ``--api-url`` and ``--api-key``), logs its counters every
``stats_interval_s`` and once more when it stops (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from portability.receiver.app import ReceivingApp
from portability.receiver.events import ReceivedEvent, ReceiverStats
from portability.receiver.recovery import RecoveryOptions
from portability.receiver.server import run_receiver
from portability.receiver.verification import MAX_TOLERANCE_S

__all__ = ["ReceiverOptions", "serve_receiver"]

_log = logging.getLogger("portability.receiver")
_events = logging.getLogger("portability.receiver.events")


@dataclass(frozen=True, slots=True)
class ReceiverOptions:
    """What ``portability receiver`` is told.

    Attributes:
        app_id: The app, as it appears in the webhook path.
        secret: Its ``whsec_`` signing secret.
        host: Interface to listen on.
        port: Port to listen on (0: a free one, logged at start).
        api_url: The consent API's base URL, for replays of gaps (with ``api_key``).
        api_key: The app's API key (``pk_...``).
        tolerance_s: Largest accepted distance of ``webhook-timestamp`` from now.
        gap_grace_s: How long a gap may stay open before a replay is asked for.
        print_events: Also print each verified body on stdout, one per line.
        stats_interval_s: How often the counters are logged.
    """

    app_id: str
    secret: str
    host: str = "127.0.0.1"
    port: int = 9000
    api_url: str | None = None
    api_key: str | None = None
    tolerance_s: float = MAX_TOLERANCE_S
    gap_grace_s: float = 2.0
    print_events: bool = False
    stats_interval_s: float = 30.0

    def __post_init__(self) -> None:
        if (self.api_url is None) != (self.api_key is None):
            raise ValueError(
                "give --api-url and --api-key together: replays of gaps are asked for at the "
                "API's URL with the app's pk_ key (or give neither to only count gaps)"
            )

    def recovery(self) -> RecoveryOptions | None:
        """Replay settings, when the API is known."""
        if self.api_url is None:
            return None
        return RecoveryOptions(self.api_url, grace_s=self.gap_grace_s)


async def serve_receiver(
    options: ReceiverOptions,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> ReceiverStats:
    """Receive webhooks until ``stop`` is set, SIGINT or SIGTERM; returns the final counters.

    Raises:
        SigningError: The secret is malformed.
        ValueError: A tolerance or API URL that cannot be used.
        OSError: The port cannot be bound.
    """
    app = ReceivingApp(
        tolerance_s=options.tolerance_s,
        recovery=options.recovery(),
        on_event=_EventLog(options.print_events),
        retain_deltas=False,  # it may run for days: bounded memory
    )
    app.add_app(options.app_id, options.secret, api_key=options.api_key)
    stop = stop or asyncio.Event()
    with _signals_set(stop):
        async with run_receiver(app, options.host, options.port) as base_url:
            url = f"{base_url}/webhooks/{options.app_id}"
            _log.info(
                "receiver listening on %s (or %s/webhooks; tolerance %g s, replays %s)",
                url,
                base_url,
                options.tolerance_s,
                f"via {options.api_url}" if options.api_url else "off",
                extra={"app_id": options.app_id, "url": url},
            )
            if on_ready is not None:
                on_ready(url)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=options.stats_interval_s)
                _log_stats(app.stats(), final=stop.is_set())
    return app.stats()


@contextlib.contextmanager
def _signals_set(stop: asyncio.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM set ``stop``: the receiver ends cleanly and logs its counters."""
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for number in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(number, stop.set)
            handled.append(number)
    try:
        yield
    finally:
        for number in handled:
            loop.remove_signal_handler(number)


def _log_stats(stats: ReceiverStats, *, final: bool) -> None:
    fields = {k: v for k, v in dataclasses.asdict(stats).items() if v is not None}
    _log.info(
        "receiver %s: %d requests, %d deltas, %d snapshot pages (%d complete), %d duplicates, "
        "%d gaps, %d missing, %d verification failures, %d replays requested, "
        "%d ledger mismatches",
        "final counters" if final else "counters",
        stats.requests,
        stats.deltas_received,
        stats.snapshot_pages,
        stats.snapshots_completed,
        stats.duplicates,
        stats.gaps_detected,
        stats.missing_sequences,
        stats.verification_failures,
        stats.replays_requested,
        stats.ledger_mismatches,
        extra=fields,
    )


class _EventLog:
    """Logs each verified event as one line; optionally prints its body on stdout."""

    def __init__(self, print_bodies: bool) -> None:
        self._print_bodies = print_bodies

    def __call__(self, event: ReceivedEvent) -> None:
        sequences = _span(event.sequences)
        _events.info(
            "%s for consent %s%s",
            event.event_type,
            event.consent_id,
            f": sequences {sequences}" if sequences else "",
            extra={
                "app_id": event.app_id,
                "webhook_id": event.webhook_id,
                "type": event.event_type,
                "consent_id": event.consent_id,
                "sequences": sequences,
                "deltas": len(event.sequences),
                "duplicates": event.duplicates,
            },
        )
        if self._print_bodies:
            sys.stdout.write(event.body.decode(errors="replace") + "\n")
            sys.stdout.flush()


def _span(sequences: tuple[int, ...]) -> str:
    """``3-5`` for a run, ``7`` for one, ``""`` for none."""
    if not sequences:
        return ""
    if len(sequences) == 1:
        return str(sequences[0])
    return f"{sequences[0]}-{sequences[-1]}"
