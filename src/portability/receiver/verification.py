"""Verifying webhook requests: which app a request is for, its signature and its age.

Signatures are verified with the unmodified ``standardwebhooks`` package, as any app would.
Before that, a timestamp outside this receiver's tolerance is refused: the package enforces
5 minutes in any case, so a receiver can only tighten it. What does not verify is answered
401; a request for an app this receiver does not know, 404.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping
from typing import Final

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from portability.receiver.errors import RejectedRequestError
from portability.webhooks.signing import validate_secret

__all__ = ["MAX_TOLERANCE_S", "Verification"]

MAX_TOLERANCE_S: Final = 300.0
"""The Standard Webhooks tolerance (5 minutes): ``standardwebhooks`` enforces it in any case,
so a receiver can only tighten it."""


class Verification:
    """The apps' signing secrets, and the checks every request passes before it is read.

    Args:
        tolerance_s: How far ``webhook-timestamp`` may be from now, either way, in seconds;
            at most :data:`MAX_TOLERANCE_S`.
        counts: The receiver's counters: failures are counted in ``verification_failures``
            (and ``stale_timestamps``), unknown apps in ``unknown_app_requests``.

    Raises:
        ValueError: ``tolerance_s`` is not in (0, :data:`MAX_TOLERANCE_S`].
    """

    def __init__(self, tolerance_s: float, counts: collections.Counter[str]) -> None:
        if not 0 < tolerance_s <= MAX_TOLERANCE_S:
            raise ValueError(
                f"tolerance_s must be above 0 and at most {MAX_TOLERANCE_S:g} s (the Standard "
                f"Webhooks limit, which the verifier enforces anyway), not {tolerance_s}"
            )
        self._tolerance_s = tolerance_s
        self._counts = counts
        self._verifiers: dict[str, Webhook] = {}

    def add(self, app_id: str, secret: str) -> None:
        """Verify ``app_id``'s requests with ``secret``, replacing an earlier one.

        Raises:
            SigningError: ``secret`` is not ``whsec_`` followed by non-empty base64.
        """
        # Checked as the sender checks it, so a secret works on both sides or on neither.
        validate_secret(secret)
        self._verifiers[app_id] = Webhook(secret)

    def app_id(self, named: str | None) -> str:
        """The app named in the path; without one, the only app added (else "")."""
        if named is not None:
            return named
        return next(iter(self._verifiers)) if len(self._verifiers) == 1 else ""

    def verifier(self, app_id: str) -> Webhook:
        """The verifier of ``app_id``.

        Raises:
            RejectedRequestError: 404, the app is not known here.
        """
        verifier = self._verifiers.get(app_id)
        if verifier is None:
            self._counts["unknown_app_requests"] += 1
            raise RejectedRequestError(
                404,
                "unknown_app",
                "no app with this id is registered here"
                if app_id
                else "this receiver does not serve exactly one app: post to /webhooks/{app_id}",
            )
        return verifier

    def verify(self, verifier: Webhook, body: bytes, headers: Mapping[str, str]) -> None:
        """Check the request's timestamp, then its signature.

        Raises:
            RejectedRequestError: 401, the timestamp is out of tolerance or the signature
                does not verify.
        """
        self._check_timestamp(headers.get("webhook-timestamp"), time.time())
        try:
            verifier.verify(body, dict(headers), json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:
            # ValueError: the package does not wrap a malformed signature or a non-UTF-8 body.
            self._counts["verification_failures"] += 1
            raise RejectedRequestError(
                401, "verification_failed", str(exc) or type(exc).__name__
            ) from exc

    def _check_timestamp(self, header: str | None, now: float) -> None:
        """Refuse a request signed too long ago (a replayed capture) or in the future.

        A missing or unreadable header is left to the verifier, which refuses it too.
        """
        try:
            signed_at = float(header) if header is not None else None
        except ValueError:
            return
        if signed_at is None or abs(now - signed_at) <= self._tolerance_s:
            return
        self._counts["verification_failures"] += 1
        self._counts["stale_timestamps"] += 1
        direction = "too old" if signed_at < now else "too new"
        raise RejectedRequestError(
            401,
            "verification_failed",
            f"message timestamp {direction}: {abs(now - signed_at):.0f} s from now, beyond "
            f"the tolerance of {self._tolerance_s:g} s",
        )
