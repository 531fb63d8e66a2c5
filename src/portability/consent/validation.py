"""Input validation of the consent store: every argument a caller gives, checked once.

Each check raises :class:`~portability.consent.errors.InvalidRequestError` with what to change;
none reads the database, so a request is refused before any transaction starts. Apps
(:mod:`portability.consent.apps`) and consents (:mod:`portability.consent.consents`) share them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlsplit

from portability.consent._time import normalize
from portability.consent.errors import InvalidRequestError
from portability.webhooks.egress import EgressPolicy, EgressRefusedError
from portability.wire.records import CATEGORIES, DELIVERY_MODES, DeliveryMode

__all__ = [
    "ALL_CATEGORIES",
    "MAX_REASON",
    "MAX_USE_CASE",
    "MODES",
    "STATUSES",
    "check_app_fields",
    "check_choice",
    "check_delivery",
    "check_expiry",
    "check_text",
    "check_user_id",
    "check_webhook_url",
    "parse_categories",
]

ALL_CATEGORIES = "all"
"""The category name that stands for every category (the "full archive" scope)."""

MODES = ("one_time", "ongoing")
STATUSES = ("active", "revoked", "expired")
MAX_USE_CASE = 2000
MAX_REASON = 2000
_APP_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_MAX_USER_ID = 200
_MAX_NAME = 200
_MAX_URL = 2048


def parse_categories(categories: Sequence[str], name: str = "categories") -> str:
    """The stored form: deduplicated, in ``CATEGORIES`` order, comma-separated."""
    allowed = f"any of {', '.join(CATEGORIES)}, or {ALL_CATEGORIES!r} for every one"
    if isinstance(categories, str):
        # A str is a Sequence[str] of letters: a classic slip worth a clear message.
        raise InvalidRequestError(f"{name} must be a list such as [{categories!r}]")
    wanted: set[str] = set()
    for category in categories:
        if category == ALL_CATEGORIES:
            wanted.update(CATEGORIES)
        elif category in CATEGORIES:
            wanted.add(category)
        else:
            raise InvalidRequestError(f"unknown category {category!r}: use {allowed} ({name})")
    if not wanted:
        raise InvalidRequestError(f"{name} is empty: grant at least one, {allowed}")
    return ",".join(category for category in CATEGORIES if category in wanted)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise InvalidRequestError(f"unknown {name} {value!r}: use one of {', '.join(choices)}")
    return value


def check_user_id(user_id: str) -> str:
    """``user_id`` if it is 1 to 200 characters."""
    if not user_id or len(user_id) > _MAX_USER_ID:
        raise InvalidRequestError(f"user_id must be 1 to {_MAX_USER_ID} characters")
    return user_id


def check_text(name: str, value: str, limit: int) -> None:
    """Refuse free text longer than ``limit`` characters."""
    if len(value) > limit:
        raise InvalidRequestError(f"{name} must be at most {limit} characters")


def check_expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    """``expires_at`` normalized to UTC if it is after ``now`` (None: no expiry)."""
    if expires_at is None:
        return None
    expires = normalize(expires_at, "expires_at")
    if expires <= now:
        raise InvalidRequestError(
            f"expires_at {expires.isoformat()} is not after now ({now.isoformat()}): "
            "give a future time, or None for no expiry"
        )
    return expires


def check_app_fields(
    name: str,
    webhook_url: str,
    app_id: str | None,
    policy: EgressPolicy,
    delivery_mode: str = "webhook",
) -> DeliveryMode:
    """Refuse a blank or long name, a delivery :func:`check_delivery` refuses, or a malformed
    id; the delivery mode, checked."""
    if not name.strip() or len(name) > _MAX_NAME:
        raise InvalidRequestError(f"name must be 1 to {_MAX_NAME} characters, not blank")
    mode = check_delivery(delivery_mode, webhook_url, policy)
    if app_id is not None and not _APP_ID.fullmatch(app_id):
        raise InvalidRequestError(
            f"app_id {app_id!r} must be 1 to 64 letters, digits or _ . : -, or omitted"
        )
    return mode


def check_delivery(delivery_mode: str, webhook_url: str, policy: EgressPolicy) -> DeliveryMode:
    """``delivery_mode`` if the app can receive that way with ``webhook_url``.

    A webhook app needs a URL the rules allow. A poll app needs none (``""``), since its
    events wait in its feed; a URL it keeps (for switching back) must still be allowed.
    """
    if delivery_mode not in DELIVERY_MODES:
        raise InvalidRequestError(
            f"unknown delivery_mode {delivery_mode!r}: use webhook (events POSTed to your "
            "webhook_url) or poll (read them from GET /v1/apps/{app_id}/feed)"
        )
    mode: DeliveryMode = "poll" if delivery_mode == "poll" else "webhook"
    if mode == "webhook" and not webhook_url:
        raise InvalidRequestError(
            "webhook_url is required for delivery_mode webhook: give the URL deliveries are "
            "POSTed to, or choose delivery_mode poll to read events from the app's feed"
        )
    if webhook_url:
        check_webhook_url(webhook_url, policy)
    return mode


def check_webhook_url(webhook_url: str, policy: EgressPolicy) -> None:
    """Refuse at registration what the worker would refuse anyway, with what to fix.

    Only what needs no DNS is checked here (scheme, metadata names, literal IP addresses): a
    name's addresses can change, so the worker checks them again on every connection.
    """
    try:
        parts = urlsplit(webhook_url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed "[" in the host
        usable = False
    if not usable or len(webhook_url) > _MAX_URL:
        raise InvalidRequestError(
            f"webhook_url {webhook_url!r} must be an http(s) URL with a host, "
            f"at most {_MAX_URL} characters"
        )
    try:
        policy.check_url(webhook_url)
    except EgressRefusedError as error:
        raise InvalidRequestError(f"{error}; register a public https endpoint") from error
