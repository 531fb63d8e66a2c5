"""Who is calling: the platform, an operator, or an app (by its API key)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from portability.api.errors import ApiError
from portability.api.ratelimit import RateLimiter
from portability.consent import ConsentService
from portability.settings import Settings

__all__ = ["Authenticator", "Principal", "Role"]

Role = Literal["platform", "operator", "app"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller; ``app_id`` is set for role ``app`` only."""

    role: Role
    app_id: str | None = None

    def owns(self, app_id: str) -> bool:
        """Whether the caller is the app ``app_id``."""
        return self.role == "app" and self.app_id == app_id

    def require(self, *roles: Role) -> None:
        """Refuse (403) a caller whose role is not in ``roles``."""
        if self.role not in roles:
            raise ApiError(
                403,
                "forbidden",
                f"this action needs the {' or '.join(roles)} role; "
                f"the token given is a(n) {self.role} token",
            )


_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


class Authenticator:
    """Maps a bearer token to a :class:`Principal`, and applies the per-app rate limit."""

    def __init__(self, settings: Settings, service: ConsentService, limiter: RateLimiter) -> None:
        """Know the platform and operator tokens of ``settings`` and the apps' keys."""
        self._platform = settings.api_platform_token.get_secret_value().encode()
        self._operator = settings.api_operator_token.get_secret_value().encode()
        self._service = service
        self._limiter = limiter

    def authenticate(self, token: str | None) -> Principal:
        """The caller of ``token``.

        Raises:
            ApiError: 401 without a valid token, 429 when an app is over its rate limit.
        """
        if not token:
            raise ApiError(
                401,
                "unauthorized",
                "send 'Authorization: Bearer <token>' with a platform, operator or app API key",
                _UNAUTHORIZED_HEADERS,
            )
        given = token.encode(errors="replace")
        if hmac.compare_digest(given, self._platform):
            return Principal("platform")
        if hmac.compare_digest(given, self._operator):
            return Principal("operator")
        app = self._service.authenticate_app(token)
        if app is None:
            raise ApiError(
                401,
                "unauthorized",
                "the bearer token is not valid: use the api_key returned at registration",
                _UNAUTHORIZED_HEADERS,
            )
        self._limit(app.app_id)
        return Principal("app", app.app_id)

    def _limit(self, app_id: str) -> None:
        wait = self._limiter.acquire(app_id)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                f"app {app_id} is over its request rate limit: retry after the Retry-After seconds",
                {"Retry-After": RateLimiter.retry_after(wait)},
            )
