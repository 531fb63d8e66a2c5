"""What the routes share: the request context, who is calling, and who may see what."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from portability.api.auth import Authenticator, Principal
from portability.api.delivery_status import DeliveryStatusBoard
from portability.api.errors import ApiError
from portability.api.requests import ID_PATTERN
from portability.consent import AppView, ConsentService, ConsentView
from portability.consent.transfer_requests import TransferStore
from portability.delivery.replay import Replayer
from portability.messages.actions import MessageActions
from portability.settings import Settings

__all__ = [
    "ApiContext",
    "AppId",
    "Caller",
    "ConsentId",
    "Context",
    "limit_client",
    "not_found",
    "visible_app",
    "visible_consent",
]


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What every request needs; kept in ``app.state.context``."""

    settings: Settings
    service: ConsentService
    authenticator: Authenticator
    status_board: DeliveryStatusBoard
    replayer: Replayer
    transfers: TransferStore
    messages: MessageActions


_bearer = HTTPBearer(auto_error=False, description="Platform, operator or app API key.")

AppId = Annotated[str, Path(pattern=ID_PATTERN, examples=["app_5c2a0e1f9b3d"])]
ConsentId = Annotated[str, Path(pattern=ID_PATTERN, examples=["cns_1f0e2d3c4b5a6978"])]


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


def _client(request: Request) -> str | None:
    """The client's address (uvicorn takes it from X-Forwarded-For of trusted proxies)."""
    return request.client.host if request.client is not None else None


def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = credentials.credentials if credentials is not None else None
    return _context(request).authenticator.authenticate(token, _client(request))


def limit_client(request: Request) -> None:
    """The per-client limit of a route open to anyone (429 with ``Retry-After``)."""
    _context(request).authenticator.limit_client(_client(request))


Context = Annotated[ApiContext, Depends(_context)]
Caller = Annotated[Principal, Depends(_principal)]


def not_found(kind: str, ident: str) -> ApiError:
    """The 404 of a resource that does not exist, or that the caller may not see."""
    return ApiError(404, "not_found", f"no {kind} {ident!r}: check the id")


def visible_app(context: ApiContext, caller: Principal, app_id: str) -> AppView:
    """The app, if the caller may see it; another app's id is 404, as if it did not exist."""
    if caller.role == "app" and not caller.owns(app_id):
        raise not_found("app", app_id)
    return context.service.get_app(app_id)


def visible_consent(context: ApiContext, caller: Principal, consent_id: str) -> ConsentView:
    """The consent, if the caller may see it; another app's consent is 404."""
    consent = context.service.get_consent(consent_id)
    if caller.role == "app" and not caller.owns(consent.app_id):
        raise not_found("consent", consent_id)
    return consent
