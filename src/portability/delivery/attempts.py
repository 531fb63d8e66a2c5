"""Attempts: one request to an app's endpoint, and what the worker knows of its endpoints.

An attempt posts a lane's head (a notification alone, or a batch of deltas) within two
bounds: the endpoint's own slots and pacing first, then the worker's ``delivery_concurrency``,
so lanes queueing for a slow endpoint hold no global slot. Each outcome feeds the endpoint's
circuit breaker. What follows from a failure (retry, park, dead-letter) is the lane driver's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from portability.delivery.delivery_log import DeliveryLog
from portability.delivery.directory import Directory
from portability.delivery.endpoints import Endpoint, Endpoints
from portability.delivery.feed import FeedWriter
from portability.delivery.lanes import Item, Lane
from portability.delivery.ledger_book import LedgerBook
from portability.delivery.sender import Outcome, WebhookSender
from portability.delivery.stats import DeliveryStats
from portability.delivery.status import StatusBoard
from portability.settings import Settings
from portability.webhooks.payload import DELTA_EVENT_TYPE, head_delta_event, notification_event
from portability.wire.records import AppRecord

__all__ = ["Attempts"]

# The role's logger, whichever part of the worker writes: operators filter its lines by one name.
log = logging.getLogger("portability.delivery.worker")

_SECRETS_UNOPENED = (
    "the delivery worker cannot open this app's signing secrets (its secrets key is not the "
    "one that sealed them): retried until an operator fixes the key"
)


class Attempts:
    """Posts lanes' heads to their apps' endpoints, bounded per endpoint and in all."""

    def __init__(
        self,
        settings: Settings,
        directory: Directory,
        lanes: Mapping[str, Lane],
        stats: DeliveryStats,
        status: StatusBoard,
        log: DeliveryLog,
        ledgers: LedgerBook,
        feed: FeedWriter,
    ) -> None:
        self.sender = WebhookSender(settings)
        self.log = log
        self.ledgers = ledgers
        self.feed = feed
        self.endpoints = Endpoints(settings)
        self._directory = directory
        self._lanes = lanes
        self._stats = stats
        self._status = status
        self._slots = asyncio.Semaphore(settings.delivery_concurrency)

    async def attempt(self, items: list[Item], fill: Callable[[], None]) -> Outcome:
        """One request of ``items``; ``fill`` is called once it holds its slots (and may add
        to ``items`` what came into the lane meanwhile)."""
        app = self._directory.app(items[0].app_id)
        notification = items[0].notification
        if app is None or (notification is None and not app["enabled"]):
            # A disabled app is still told that its consents ended (reason app_disabled).
            return Outcome(False, None, f"app {items[0].app_id} unknown or disabled", True)
        if app.get("delivery_mode") == "poll":
            # The last hop only differs: appended to the app's feed (no endpoint, no
            # signature: the API authenticates the app that reads it).
            return await self._append(app, items, fill)
        if self._directory.secrets_problem(app["app_id"]) is not None:
            # This worker's key, not the app's endpoint, is at fault: retried, never sent
            # unsigned, not held against the endpoint's circuit. The detail (key ids, where
            # the keys come from) is for operators: the directory logged it.
            return Outcome(False, None, _SECRETS_UNOPENED, True)
        endpoint = self.endpoints.get(app["app_id"], app["webhook_url"])
        # The endpoint's slot first: lanes queueing for a slow endpoint hold no global slot.
        async with endpoint.slots:
            if self.endpoints.paced:  # a coroutine per request saved when there is no limit
                await self.endpoints.pace(endpoint)
            async with self._slots:
                fill()
                outcome = await self._send(
                    app,
                    items,
                    lambda message_id, body: self.sender.post_event(app, message_id, body),
                )
        self.endpoints.record(endpoint, outcome)
        return outcome

    async def _append(self, app: AppRecord, items: list[Item], fill: Callable[[], None]) -> Outcome:
        notification = items[0].notification
        event_type = notification["event_type"] if notification is not None else DELTA_EVENT_TYPE
        consent_id = items[0].consent_id
        async with self._slots:
            fill()
            return await self._send(
                app,
                items,
                lambda message_id, body: self.feed.append(
                    app, message_id, body, consent_id=consent_id, event_type=event_type
                ),
            )

    async def _send(
        self,
        app: AppRecord,
        items: list[Item],
        last_hop: Callable[[str, bytes], Awaitable[Outcome]],
    ) -> Outcome:
        """One request by ``last_hop`` (a POST, or an append to the feed): its body with the
        consent's ledger values, logged; past a success, the consent's chain moves on."""
        self._stats.requests += 1
        extension = self.ledgers.extension(items[0].consent_id, items)
        message_id, body = self._body(items, extension.values)
        described = self.log.describe(items, body)
        started, clock = time.time(), time.monotonic()
        outcome = await last_hop(message_id, body)
        timing = (started, time.monotonic() - clock)
        self.log.attempted(app, message_id, described, timing, outcome, extension.logged)
        if outcome.ok:
            self.ledgers.delivered(items[0].consent_id, items, extension)
        self._stats.requested(app["app_id"], outcome.ok)
        return outcome

    @staticmethod
    def _body(items: list[Item], ledgers: list[str]) -> tuple[str, bytes]:
        notification = items[0].notification
        if notification is not None:
            return notification_event(notification, ledgers[0])
        heads = [item.delivery for item in items if item.delivery is not None]
        return head_delta_event(heads, ledgers)

    def log_failure(self, lane: Lane, items: list[Item], outcome: Outcome, attempt: int) -> None:
        self._stats.failures += 1
        app_id = items[0].app_id
        self._status.failed(lane.consent_id, app_id, outcome)
        app = self._directory.app(app_id)
        first, last = items[0], items[-1]
        what = (
            f"sequences {first.delivery['sequence']}-{last.delivery['sequence']}"
            if first.delivery is not None and last.delivery is not None
            else f"event {first.identity}"
        )
        log.warning(
            "delivery failed: consent %s app %s endpoint %s %s attempt %d: %s",
            lane.consent_id,
            app_id,
            app["webhook_url"] if app else "?",
            what,
            attempt,
            outcome.reason,
            extra={"consent_id": lane.consent_id, "app_id": app_id, "attempt": attempt},
        )

    def endpoint(self, app_id: str) -> Endpoint | None:
        """The app's endpoint at its current URL; None for an app not known (yet)."""
        app = self._directory.app(app_id)
        return None if app is None else self.endpoints.get(app_id, app["webhook_url"])

    def endpoint_is_disabled(self, app_id: str) -> bool:
        endpoint = self.endpoint(app_id)
        return endpoint is not None and endpoint.disabled

    def waiting(self, app_id: str, not_before: float) -> bool:
        """Whether a lane's head is not due: its retry time is ahead, or its endpoint is
        disabled or its circuit open (asked without becoming the circuit's probe)."""
        if not_before > time.time():
            return True
        endpoint = self.endpoint(app_id)
        return endpoint is not None and self.endpoints.refusing(endpoint)

    def app_changed(self, app: AppRecord) -> None:
        """A new URL replaces a disabled endpoint and wakes the lanes parked on it."""
        self.endpoints.get(app["app_id"], app["webhook_url"])

    def endpoint_disabled(self, endpoint: Endpoint) -> None:
        self._stats.endpoints_disabled += 1
        for lane in self._lanes.values():
            if lane.app_id == endpoint.app_id:
                self._status.endpoint_disabled(
                    lane.consent_id, endpoint.app_id, endpoint.disabled_reason or ""
                )
