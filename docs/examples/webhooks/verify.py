"""Verifying a webhook request with the unmodified ``standardwebhooks`` package.

Shown in docs/webhooks.md; tests/delivery/test_contract.py runs it against real deliveries.
"""

from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def verified_event(secret: str, body: bytes, headers: dict[str, str]) -> Any | None:
    """The event if the request is authentic; None if not (answer 401)."""
    try:
        # The raw body as received: parsing and re-serialising the JSON would change the bytes.
        return Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return None  # forged, altered, or signed more than 5 minutes ago
