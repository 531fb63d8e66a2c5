"""Standard Webhooks signatures: what lets a recipient trust a delivery.

A delivery carries ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers; the
signature is ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed with the base64 part of a
``whsec_`` secret. During a secret rotation an app holds several secrets and every one of them
signs, space-separated, so the recipient verifies with whichever it has. Off-the-shelf verifiers
(the ``standardwebhooks`` and ``svix`` packages) accept these headers unchanged.

Signing runs once per delivery attempt, so each secret is decoded and keyed once and cached.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Sequence

from portability.webhooks.errors import WebhooksError

__all__ = [
    "SECRET_PREFIX",
    "SigningError",
    "generate_secret",
    "sign",
    "signature_header",
    "validate_secret",
    "webhook_headers",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
_SECRET_BYTES = 24
# Enough for every app's secrets (two each during a rotation) on one worker; old ones age out.
_KEY_CACHE_SIZE = 4096


class SigningError(WebhooksError, ValueError):
    """A signing secret that is not ``whsec_`` followed by non-empty standard base64."""


def generate_secret() -> str:
    """Make a new signing secret for an app.

    Returns:
        ``"whsec_"`` followed by the standard base64 of 24 random bytes (from :mod:`secrets`).
    """
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Sign one message with one secret.

    Args:
        secret: A ``whsec_`` secret.
        msg_id: The ``webhook-id`` header value.
        timestamp: The ``webhook-timestamp`` header value, in whole seconds since the epoch.
        body: The exact request body.

    Returns:
        ``"v1,"`` followed by the base64 HMAC-SHA256 of ``f"{msg_id}.{timestamp}."`` + body.

    Raises:
        SigningError: The secret is malformed.
    """
    mac = _keyed(secret).copy()
    mac.update(f"{msg_id}.{timestamp}.".encode())
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Build the ``webhook-signature`` value: one ``v1`` signature per secret.

    Args:
        secrets: The app's current secrets (two during a rotation); each one signs.
        msg_id: The ``webhook-id`` header value.
        timestamp: The ``webhook-timestamp`` header value, in whole seconds since the epoch.
        body: The exact request body.

    Returns:
        The signatures, space-separated, in the order of ``secrets``.

    Raises:
        SigningError: No secret was given, or one is malformed.
    """
    if not secrets:
        # An unsigned delivery could never be verified; refuse rather than send it.
        raise SigningError("no signing secret: an app needs at least one to receive deliveries")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def webhook_headers(
    secrets: Sequence[str], msg_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """Build every header of one signed delivery attempt.

    Args:
        secrets: The app's current secrets; each one signs.
        msg_id: The stable message id (the same deltas always give the same id).
        body: The exact request body.
        now: Seconds since the epoch to stamp; the current time if None.

    Returns:
        ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` and ``content-type``.

    Raises:
        SigningError: No secret was given, or one is malformed.
    """
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def validate_secret(secret: str) -> None:
    """Check that a secret can sign, e.g. before storing it for an app.

    Args:
        secret: The candidate secret.

    Raises:
        SigningError: It is not ``whsec_`` followed by non-empty standard base64.
    """
    _keyed(secret)


@functools.lru_cache(maxsize=_KEY_CACHE_SIZE)
def _keyed(secret: str) -> hmac.HMAC:
    """A keyed HMAC to copy per message: decoding and keying happen once per secret."""
    return hmac.new(_decode_secret(secret), digestmod=hashlib.sha256)


def _decode_secret(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise SigningError(f"a signing secret must start with {SECRET_PREFIX!r}")
    encoded = secret.removeprefix(SECRET_PREFIX)
    # Accept unpadded base64 as the reference verifiers do, so both sides derive the same key.
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except binascii.Error as exc:
        # Never echo the secret itself: it would end up in logs.
        raise SigningError(
            f"a signing secret must be {SECRET_PREFIX!r} followed by standard base64"
        ) from exc
    if not key:
        raise SigningError("a signing secret must not be empty after its prefix")
    return key
