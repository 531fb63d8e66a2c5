"""An app's credentials as the consent store makes them: API keys and first signing secrets.

An API key is shown once, at registration, and the store keeps only its hash; a signing
secret is sealed in the store (its rotation is :mod:`portability.consent.signing_secrets`).
"""

from __future__ import annotations

import hashlib
import secrets

from portability.webhooks.signing import generate_secret

__all__ = ["API_KEY_PREFIX", "hash_api_key", "new_api_key", "new_signing_secret"]

API_KEY_PREFIX = "pk_"


def new_signing_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` and base64 of 24 random bytes."""
    return generate_secret()


def new_api_key() -> str:
    """A fresh app API key: ``pk_`` and 43 URL-safe characters (32 random bytes)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    """What the store keeps of an API key: its SHA-256, hex (the key has 256 random bits)."""
    return hashlib.sha256(api_key.encode()).hexdigest()
