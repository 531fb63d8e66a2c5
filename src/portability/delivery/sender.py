"""One HTTP attempt of a signed webhook delivery, and what its answer means."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from portability.delivery.payload import delta_event
from portability.delivery.signing import SigningError, webhook_headers
from portability.settings import Settings
from portability.wire.records import AppRecord, DeliveryRecord

__all__ = ["Outcome", "WebhookSender"]

_BODY_EXCERPT = 4096
_RETRIABLE_4XX = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt."""

    ok: bool
    status: int | None
    reason: str
    retriable: bool
    retry_after_s: float | None = None
    body_excerpt: str = ""


class WebhookSender:
    """Signs and posts batches of deltas with one shared aiohttp session."""

    def __init__(self, settings: Settings) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=settings.delivery_timeout_s, connect=settings.delivery_connect_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # The worker bounds concurrency itself; the connector must not queue behind it.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, raise_for_status=False
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, app: AppRecord, records: Sequence[DeliveryRecord]) -> Outcome:
        """Post ``records`` (one consent, ascending sequence) to the app's webhook."""
        msg_id, body = delta_event(records)
        return await self.post_event(app, msg_id, body)

    async def post_event(self, app: AppRecord, msg_id: str, body: bytes) -> Outcome:
        """Sign ``body`` as message ``msg_id`` with the app's secrets and post it once."""
        if self._session is None:
            raise RuntimeError("WebhookSender.start() was not called")
        try:
            headers = webhook_headers(app["signing_secrets"], msg_id, body)
        except SigningError as error:
            # Retrying cannot help: the app's secret must be fixed (or rotated) first.
            return Outcome(False, None, f"cannot sign for app {app['app_id']}: {error}", False)
        try:
            async with self._session.post(
                app["webhook_url"], data=body, headers=headers, allow_redirects=False
            ) as response:
                excerpt = (await response.content.read(_BODY_EXCERPT)).decode(errors="replace")
                return _classify(response.status, response.headers.get("Retry-After"), excerpt)
        except TimeoutError:
            return Outcome(False, None, "timeout", retriable=True)
        except aiohttp.ClientError as error:
            return Outcome(False, None, f"{type(error).__name__}: {error}", retriable=True)


def _classify(status: int, retry_after: str | None, excerpt: str) -> Outcome:
    if 200 <= status < 300:
        return Outcome(True, status, "delivered", retriable=False)
    if 300 <= status < 400:
        return Outcome(False, status, "redirects are not followed", False, body_excerpt=excerpt)
    retriable = status >= 500 or status in _RETRIABLE_4XX
    reason = "endpoint gone" if status == 410 else f"HTTP {status}"
    return Outcome(False, status, reason, retriable, _retry_after(retry_after), excerpt)


def _retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header; HTTP dates are ignored (treated as absent)."""
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
