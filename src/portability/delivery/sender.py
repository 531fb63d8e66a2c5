"""One HTTP attempt of a signed webhook delivery, and what its answer means.

How an answer is classified. As with the best webhook services, every answer but a 2xx or a
410 is retried on the schedule: a 401 while the app is mixing up its secrets, a 404 while it
redeploys, must not lose data.

- 2xx: delivered.
- 410 Gone: final, and ``endpoint_gone``: the endpoint is disabled (deliveries wait for a new
  URL), the one answer by which an app stops deliveries.
- Any other status (3xx, 4xx, 5xx): retriable. 429 and 503 honour ``Retry-After``
  (delay-seconds or an HTTP-date), clamped to ``delivery_retry_after_min_s``..
  ``delivery_retry_after_max_s``. A 3xx is not followed (the app must register the final URL).
- No answer (connect timeout, timeout, connection refused or reset, DNS failure): retriable.
- A URL the egress rules refuse as written (scheme, a literal refused address, a metadata
  name) or that cannot be used at all: no request, and ``endpoint_refused``: the endpoint is
  disabled like a 410 until the app sets a URL the rules allow. It can never succeed, but the
  data is still owed, so it waits rather than being dead-lettered.
- A host that resolves only to refused addresses: retriable, checked again on every attempt
  (DNS answers change); an endpoint failing that long is disabled like any other.
- No secret to sign with: final (an unsigned delivery could never be verified).

Once the status line and headers have arrived, the status decides: the body only feeds the
excerpt (its first 4 KB), read within the request's total timeout and never beyond 4 KB.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
from aiohttp.abc import AbstractResolver

from portability.settings import Settings
from portability.webhooks.egress import CheckedResolver, EgressPolicy, EgressRefusedError
from portability.webhooks.payload import delta_event
from portability.webhooks.signing import SigningError, webhook_headers
from portability.wire.records import AppRecord, DeliveryRecord

__all__ = ["Outcome", "WebhookSender"]

log = logging.getLogger(__name__)

_BODY_EXCERPT = 4096
_ALLOWED_URLS_KEPT = 10_000  # distinct webhook URLs remembered as allowed
_HONOURS_RETRY_AFTER = frozenset({429, 503})
_DELAY_SECONDS = re.compile(r"-?\d+(\.\d+)?")


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt.

    Attributes:
        ok: The app accepted the delivery (2xx).
        status: The HTTP status, or None when no answer arrived.
        reason: Why it failed, for logs, dead letters and the status route.
        retriable: Trying again later can succeed.
        retry_after_s: The wait the app asked for (429/503 ``Retry-After``), within bounds.
        body_excerpt: The first 4 KB of the answer's body, decoded leniently.
        endpoint_gone: The endpoint answered 410 Gone: stop sending to it.
        endpoint_refused: The egress rules refuse the URL as written: stop sending to it.
    """

    ok: bool
    status: int | None
    reason: str
    retriable: bool
    retry_after_s: float | None = None
    body_excerpt: str = ""
    endpoint_gone: bool = False
    endpoint_refused: bool = False


class WebhookSender:
    """Signs and posts batches of deltas with one shared aiohttp session.

    Every request goes through the egress rules (:mod:`portability.webhooks.egress`): the URL
    is checked before the request, and the connector's resolver checks the addresses it
    connects to. Redirects are never followed.
    """

    def __init__(self, settings: Settings, *, resolver: AbstractResolver | None = None) -> None:
        """Read timeouts, ``Retry-After`` bounds and egress rules from ``settings``.

        Args:
            settings: The process settings.
            resolver: The resolver whose answers are checked; default aiohttp's own. Tests
                inject one to craft DNS answers.
        """
        self._policy = EgressPolicy.from_settings(settings)
        # URLs that passed check_url: its answer depends on the URL and the (fixed) rules
        # only, and parsing a URL for every request costs more than building the body.
        self._allowed_urls: set[str] = set()
        self._base_resolver = resolver
        self._connect_timeout_s = settings.delivery_connect_timeout_s
        self._total_timeout_s = settings.delivery_timeout_s
        self._retry_after_bounds = (
            settings.delivery_retry_after_min_s,
            settings.delivery_retry_after_max_s,
        )
        self._resolver: CheckedResolver | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._resolver = CheckedResolver(self._policy, self._base_resolver)
        # The worker bounds concurrency itself; the connector must not queue behind it. The
        # DNS cache holds checked answers only, so reusing them keeps the rules.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, resolver=self._resolver)
        timeout = aiohttp.ClientTimeout(
            total=self._total_timeout_s, connect=self._connect_timeout_s
        )
        # trust_env stays off: a proxy from the environment would connect to addresses this
        # process never checked.
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, raise_for_status=False, trust_env=False
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None

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
            # Not retriable: the app's secret must be fixed (or rotated) first.
            reason = f"cannot sign for app {app['app_id']}: {error}"
            return Outcome(False, None, reason, error.retriable)
        url = app["webhook_url"]
        refused = self._refusal(app["app_id"], url)
        if refused is not None:
            return refused
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                excerpt = await _read_excerpt(response)
                return _classify(
                    response.status,
                    response.headers.get("Retry-After"),
                    excerpt,
                    self._retry_after_bounds,
                )
        except EgressRefusedError as error:
            # The name resolved to refused addresses only (AddressesRefusedError): retriable,
            # DNS may answer otherwise later.
            _log_refusal(app["app_id"], url, error)
            return Outcome(False, None, str(error), retriable=error.retriable)
        except aiohttp.ConnectionTimeoutError:
            reason = f"connect timeout: no connection within {self._connect_timeout_s:g} s"
            return Outcome(False, None, reason, retriable=True)
        except TimeoutError:
            reason = f"timeout: no complete answer within {self._total_timeout_s:g} s"
            return Outcome(False, None, reason, retriable=True)
        except aiohttp.ClientError as error:
            return _transport_failure(error)

    def _refusal(self, app_id: str, url: str) -> Outcome | None:
        """The outcome of a URL the rules refuse as written; None for one they allow.

        aiohttp skips the resolver for literal IP hosts: they are checked here.
        """
        if url in self._allowed_urls:
            return None
        try:
            self._policy.check_url(url)
        except EgressRefusedError as error:
            _log_refusal(app_id, url, error)
            # A URL refused as written: not retriable, it waits for a new URL.
            return Outcome(False, None, str(error), error.retriable, endpoint_refused=True)
        if len(self._allowed_urls) >= _ALLOWED_URLS_KEPT:
            self._allowed_urls.clear()  # bounded; checking again is only slower
        self._allowed_urls.add(url)
        return None


def _log_refusal(app_id: str, url: str, error: EgressRefusedError) -> None:
    log.warning(
        "webhook refused by the egress rules: app %s endpoint %s: %s",
        app_id,
        url,
        error,
        extra={"app_id": app_id, "endpoint": url},
    )


async def _read_excerpt(response: aiohttp.ClientResponse) -> str:
    """The first 4 KB of the body; what arrived when the body breaks off or times out.

    ``read(n)`` returns what is buffered, so it loops up to 4 KB and stops there: a huge or
    endless body costs 4 KB. A body that stalls is cut by the request's total timeout.
    """
    received = bytearray()
    try:
        while len(received) < _BODY_EXCERPT:
            chunk = await response.content.read(_BODY_EXCERPT - len(received))
            if not chunk:
                break
            received += chunk
    except (aiohttp.ClientError, OSError):  # OSError includes TimeoutError
        # The status line and headers already arrived: they decide, the excerpt is a bonus.
        pass
    return received.decode(errors="replace")


def _classify(
    status: int, retry_after: str | None, excerpt: str, bounds: tuple[float, float]
) -> Outcome:
    if 200 <= status < 300:
        return Outcome(True, status, "delivered", retriable=False, body_excerpt=excerpt)
    if status == 410:
        reason = "HTTP 410: endpoint gone"
        return Outcome(False, status, reason, False, body_excerpt=excerpt, endpoint_gone=True)
    reason = f"HTTP {status}"
    if 300 <= status < 400:
        reason += ": redirects are not followed (register the final URL)"
    wait = _retry_after(retry_after, bounds) if status in _HONOURS_RETRY_AFTER else None
    # Every other answer is retried on the schedule: the app may be fixing it right now.
    return Outcome(False, status, reason, True, wait, excerpt)


def _retry_after(value: str | None, bounds: tuple[float, float]) -> float | None:
    """Seconds a ``Retry-After`` header asks for, clamped to ``bounds``; None if malformed.

    Both forms count: delay-seconds (``120``) and an HTTP-date (a past date means now).
    Numbers out of bounds (negative, huge) are clamped; anything else is ignored.
    """
    if value is None:
        return None
    text = value.strip()
    seconds = float(text) if _DELAY_SECONDS.fullmatch(text) else _seconds_until(text)
    if seconds is None:
        return None
    low, high = bounds
    return min(max(seconds, low), high)


def _seconds_until(http_date: str) -> float | None:
    try:
        moment = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC by RFC 5322
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime.now(UTC)).total_seconds()


def _transport_failure(error: aiohttp.ClientError) -> Outcome:
    """No usable answer: say what broke, in words an app developer can act on."""
    cause = error.os_error if isinstance(error, aiohttp.ClientConnectorError) else error.__cause__
    for kind, retriable, describe in _TRANSPORT_FAILURES:
        if isinstance(error, kind) or isinstance(cause, kind):
            # Not retriable means an unusable URL: like a refused one, it waits for a new URL.
            return Outcome(False, None, describe(error), retriable, endpoint_refused=not retriable)
    return Outcome(False, None, f"{type(error).__name__}: {error}", retriable=True)


def _os_reason(error: aiohttp.ClientError) -> str:
    os_error = error.os_error if isinstance(error, aiohttp.ClientConnectorError) else error
    return getattr(os_error, "strerror", None) or str(os_error) or type(os_error).__name__


def _where(error: aiohttp.ClientError) -> str:
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"{error.host}:{error.port}"
    return "the endpoint"


# First match wins: subclasses before their bases.
_TRANSPORT_FAILURES: tuple[
    tuple[type[BaseException], bool, Callable[[aiohttp.ClientError], str]], ...
] = (
    (aiohttp.InvalidURL, False, lambda e: f"webhook URL is not usable: {e}"),
    (aiohttp.NonHttpUrlClientError, False, lambda e: f"webhook URL is not http(s): {e}"),
    (
        aiohttp.ClientConnectorDNSError,
        True,
        lambda e: f"DNS lookup of {_where(e)} failed: {_os_reason(e)}",
    ),
    (
        aiohttp.ClientConnectorCertificateError,
        True,
        lambda e: f"TLS certificate of {_where(e)} not accepted: {e}",
    ),
    (aiohttp.ClientSSLError, True, lambda e: f"TLS handshake with {_where(e)} failed: {e}"),
    (ConnectionRefusedError, True, lambda e: f"connection refused by {_where(e)}"),
    (ConnectionResetError, True, lambda e: f"connection reset by {_where(e)}"),
    (
        aiohttp.ClientConnectorError,
        True,
        lambda e: f"cannot connect to {_where(e)}: {_os_reason(e)}",
    ),
    (
        aiohttp.ServerDisconnectedError,
        True,
        lambda e: "the endpoint closed the connection before answering",
    ),
    (aiohttp.ClientPayloadError, True, lambda e: f"the answer broke off: {e}"),
    (aiohttp.ClientOSError, True, lambda e: f"connection error: {_os_reason(e)}"),
)
