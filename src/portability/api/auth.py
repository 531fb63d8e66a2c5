"""Who is calling: the platform, an operator, or an app (by its API key)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from portability.api.errors import ApiError
from portability.api.ratelimit import RateLimiter, client_key
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
    """Maps a bearer token to a :class:`Principal`, and applies the rate limits.

    An app is limited per API key; a request without a valid token per client address (it
    has no key to be charged to, and refused tokens are how keys would be guessed).
    """

    def __init__(
        self,
        settings: Settings,
        service: ConsentService,
        limiter: RateLimiter,
        client_limiter: RateLimiter | None = None,
    ) -> None:
        """Know the platform and operator tokens of ``settings`` and the apps' keys.

        Args:
            settings: The platform and operator tokens.
            service: Looks up app API keys.
            limiter: The per-app limit.
            client_limiter: The per-client limit; default
                ``settings.api_client_rate_limit_per_minute``.
        """
        self._platform = settings.api_platform_token.get_secret_value().encode()
        self._operator = settings.api_operator_token.get_secret_value().encode()
        self._service = service
        self._limiter = limiter
        self._clients = client_limiter or RateLimiter(settings.api_client_rate_limit_per_minute)

    def limit_client(self, host: str | None) -> None:
        """Charge a request without a valid token to its client address.

        Raises:
            ApiError: 429, with ``Retry-After``, when the client is over its limit.
        """
        key = client_key(host)
        wait = self._clients.acquire(key)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                f"too many requests without a valid token from {key}: retry after the "
                "Retry-After seconds",
                {"Retry-After": RateLimiter.retry_after(wait)},
            )

    def authenticate(self, token: str | None, client: str | None = None) -> Principal:
        """The caller of ``token``, sent from the address ``client``.

        Raises:
            ApiError: 401 without a valid token, 429 when an app is over its rate limit or
                the client over its limit of requests without a valid token.
        """
        if not token:
            self.limit_client(client)
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
            self.limit_client(client)
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
