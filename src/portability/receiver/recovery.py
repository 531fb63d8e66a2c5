"""Recovering a gap: ask the API to replay a consent's deltas from the first one missing.

Deltas of one consent are posted in order, but a retry or a replay can bring one late, so a
gap is given a grace period to fill by itself first. If it is still open then, the receiver
calls ``POST /v1/consents/{id}/replay`` with ``{"from_sequence": first_missing}`` and the
app's API key, follows the replay until it ends or the gap closes, and logs the outcome.
One request per consent is outstanding at a time; each is retried a bounded number of times.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from portability.receiver.tracking import SequenceRange

__all__ = ["GapRecovery", "RecoveryOptions", "ReplayRequestRecord"]

_log = logging.getLogger(__name__)

# Answers after which asking again may help: rate limited, or the API is down for a moment.
_RETRIABLE: Final = frozenset({408, 429, 500, 502, 503, 504})
_FINISHED: Final = frozenset({"done", "failed"})


@dataclass(frozen=True, slots=True)
class RecoveryOptions:
    """How the receiver asks for replays.

    Attributes:
        api_url: Base URL of the consent API, e.g. ``https://portability.example``.
        grace_s: How long a gap may stay open before a replay is asked for.
        attempts: Requests per gap, the first included, before giving up (on 429, 5xx,
            a connection error, or a replay already in progress).
        retry_base_s: Wait before the second attempt; doubles, and ``Retry-After`` wins.
        retry_max_s: Longest wait between attempts.
        follow_timeout_s: How long to follow an accepted replay before letting it go.
        poll_interval_s: How often to read the replay's state meanwhile.
        timeout_s: Timeout of one HTTP request to the API.
    """

    api_url: str
    grace_s: float = 2.0
    attempts: int = 4
    retry_base_s: float = 1.0
    retry_max_s: float = 30.0
    follow_timeout_s: float = 300.0
    poll_interval_s: float = 0.5
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.api_url.startswith(("http://", "https://")):
            raise ValueError(f"api_url must be an http(s) URL, not {self.api_url!r}")
        if self.grace_s < 0 or self.attempts < 1 or self.poll_interval_s <= 0:
            raise ValueError("grace_s must be >= 0, attempts >= 1 and poll_interval_s > 0")


@dataclass(frozen=True, slots=True)
class ReplayRequestRecord:
    """One gap's recovery, once it ended.

    Attributes:
        app_id: The app whose key asked.
        consent_id: The consent with the gap.
        from_sequence: The first sequence missing when the replay was asked for (None if the
            gap filled during the grace period and nothing was asked).
        replay_id: The replay the API accepted, if it did.
        outcome: ``filled_in_grace``, ``filled`` (the gap closed after the request),
            ``unfilled`` (the replay ended but sequences are still missing: beyond the
            topic's retention?) or ``refused`` (the API said no, or never answered).
        detail: The API's last answer or error, for the log and for tests.
    """

    app_id: str
    consent_id: str
    from_sequence: int | None
    replay_id: str | None
    outcome: str
    detail: str = ""


class _GiveUp(Exception):
    """Ends a request loop: asking again cannot help."""


MissingRanges = Callable[[str], list[SequenceRange]]
Notify = Callable[[], Awaitable[None]]


class GapRecovery:
    """Asks for replays of gaps that do not fill by themselves, one at a time per consent.

    Args:
        options: Where the API is and how patient to be.
        missing: The sequence ranges a consent still misses (the receiver's own view).
        notify: Called after each recovery ends, so waiters re-check the receiver's stats.
    """

    def __init__(self, options: RecoveryOptions, missing: MissingRanges, notify: Notify) -> None:
        self._options = options
        self._missing = missing
        self._notify = notify
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._records: list[ReplayRequestRecord] = []
        self._counts: collections.Counter[str] = collections.Counter()
        self._session: aiohttp.ClientSession | None = None

    @property
    def outstanding(self) -> int:
        """Consents whose gap is being recovered now."""
        return len(self._tasks)

    @property
    def replays_requested(self) -> int:
        """Replays the API accepted (202)."""
        return self._counts["requested"]

    def outcomes(self) -> collections.Counter[str]:
        """How many recoveries ended with each outcome (see :class:`ReplayRequestRecord`)."""
        return collections.Counter(record.outcome for record in self._records)

    def records(self) -> list[ReplayRequestRecord]:
        """Every recovery that ended, oldest first."""
        return list(self._records)

    def gap_opened(self, app_id: str, api_key: str, consent_id: str) -> None:
        """Start recovering ``consent_id`` unless a recovery of it is under way."""
        if consent_id in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(
            self._recover(app_id, api_key, consent_id), name=f"recover-{consent_id}"
        )
        self._tasks[consent_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(consent_id, None))

    async def close(self) -> None:
        """Stop every recovery and close the HTTP session."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- one gap ------------------------------------------------------------------------------

    async def _recover(self, app_id: str, api_key: str, consent_id: str) -> None:
        await asyncio.sleep(self._options.grace_s)
        record = ReplayRequestRecord(app_id, consent_id, None, None, "filled_in_grace")
        first = self._first_missing(consent_id)
        if first is not None:
            record = await self._ask_and_follow(app_id, api_key, consent_id, first)
        self._records.append(record)
        level = logging.INFO if record.outcome.startswith("filled") else logging.WARNING
        _log.log(
            level,
            "gap in consent %s: %s%s",
            consent_id,
            record.outcome,
            f" ({record.detail})" if record.detail else "",
            extra={
                "consent_id": consent_id,
                "app_id": app_id,
                "from_sequence": record.from_sequence,
                "replay_id": record.replay_id,
            },
        )
        await self._notify()

    def _first_missing(self, consent_id: str) -> int | None:
        ranges = self._missing(consent_id)
        return ranges[0][0] if ranges else None

    async def _ask_and_follow(
        self, app_id: str, api_key: str, consent_id: str, first: int
    ) -> ReplayRequestRecord:
        try:
            replay_id = await self._ask(api_key, consent_id, first)
        except _GiveUp as refusal:
            return ReplayRequestRecord(app_id, consent_id, first, None, "refused", str(refusal))
        if replay_id is None:  # a replay already in progress filled the gap meanwhile
            return ReplayRequestRecord(app_id, consent_id, first, None, "filled")
        detail = await self._follow(api_key, consent_id, replay_id)
        outcome = "unfilled" if self._first_missing(consent_id) is not None else "filled"
        return ReplayRequestRecord(app_id, consent_id, first, replay_id, outcome, detail)

    async def _ask(self, api_key: str, consent_id: str, first: int) -> str | None:
        """The accepted replay's id; None if the gap closed while waiting to ask again.

        Raises:
            _GiveUp: A final refusal, or no success within the attempts.
        """
        url = f"{self._api_url}/v1/consents/{consent_id}/replay"
        detail = ""
        for attempt in range(1, self._options.attempts + 1):
            if attempt > 1:
                # Waiting may have let a late delta or a running replay close the gap.
                still = self._first_missing(consent_id)
                if still is None:
                    return None
                first = still
            status, body, retry_after = await self._call("POST", url, api_key, first)
            if status == 202 and isinstance(body.get("replay_id"), str):
                self._counts["requested"] += 1
                _log.info(
                    "asked for replay %s of consent %s from sequence %d",
                    body["replay_id"],
                    consent_id,
                    first,
                    extra={"consent_id": consent_id, "replay_id": body["replay_id"]},
                )
                return str(body["replay_id"])
            detail = _detail(status, body)
            busy = status == 409 and body.get("error") == "replay_in_progress"
            if not (busy or status is None or status in _RETRIABLE):
                raise _GiveUp(detail)
            if attempt < self._options.attempts:
                await asyncio.sleep(self._wait_s(attempt, retry_after))
        raise _GiveUp(f"gave up after {self._options.attempts} attempts: {detail}")

    async def _follow(self, api_key: str, consent_id: str, replay_id: str) -> str:
        """Poll the replay until it ends, the gap closes, or the follow timeout passes."""
        url = f"{self._api_url}/v1/consents/{consent_id}/replays/{replay_id}"
        deadline = time.monotonic() + self._options.follow_timeout_s
        detail = "not followed to its end"
        while time.monotonic() < deadline and self._first_missing(consent_id) is not None:
            status, body, _ = await self._call("GET", url, api_key)
            if status == 200 and body.get("state") in _FINISHED:
                error = body.get("last_error")
                return f"replay {body['state']}" + (f": {error}" if error else "")
            if status is not None and status != 200 and status not in _RETRIABLE:
                return f"cannot follow the replay: {_detail(status, body)}"
            await asyncio.sleep(self._options.poll_interval_s)
        return "" if self._first_missing(consent_id) is None else detail

    # --- HTTP ---------------------------------------------------------------------------------

    @property
    def _api_url(self) -> str:
        return self._options.api_url.rstrip("/")

    def _wait_s(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self._options.retry_max_s)
        backoff = self._options.retry_base_s * 2.0 ** (attempt - 1)
        return min(backoff, self._options.retry_max_s)

    async def _call(
        self, method: str, url: str, api_key: str, from_sequence: int | None = None
    ) -> tuple[int | None, dict[str, Any], float | None]:
        """One request: (status or None on a connection error, JSON body, Retry-After)."""
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._options.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        body = None if from_sequence is None else {"from_sequence": from_sequence}
        headers = {"Authorization": f"Bearer {api_key}"}
        try:
            async with self._session.request(method, url, json=body, headers=headers) as answer:
                document: Any = None
                with contextlib.suppress(aiohttp.ContentTypeError, ValueError):
                    document = await answer.json()
                return (
                    answer.status,
                    document if isinstance(document, dict) else {},
                    _retry_after(answer.headers.get("Retry-After")),
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            return None, {"message": f"{type(error).__name__}: {error}"}, None


def _detail(status: int | None, body: dict[str, Any]) -> str:
    message = body.get("message", "")
    return f"HTTP {status}: {message}" if status is not None else str(message)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
