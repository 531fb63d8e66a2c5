"""API errors: every 4xx is JSON ``{"error": code, "message": what to fix}``."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from portability.consent.errors import (
    ConflictError,
    DuplicateConsentError,
    InvalidRequestError,
    NotFoundError,
    RegionNotServedError,
)
from portability.delivery.errors import ReplayRefusedError, ReplayUnavailableError
from portability.errors import PortabilityError

__all__ = ["ERROR_RESPONSES", "ApiError", "ErrorResponse", "install_error_handlers", "shown"]

_log = logging.getLogger(__name__)


class ErrorResponse(BaseModel):
    """What every error response carries."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"error": "not_found", "message": "no consent 'cns_0123456789abcdef'"}]
        }
    )

    error: str = Field(description="A stable, machine-readable code.")
    message: str = Field(description="What went wrong and what to change.")


class ApiError(PortabilityError):
    """An error response: HTTP status, code and message (and optional headers).

    The error of the ``api`` package: every error it raises on purpose is one.
    """

    def __init__(
        self, status: int, error: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        """Build the error; ``message`` must say what to fix."""
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        # Typed as ``HTTPException.headers`` is, for an error that is both (BodyTooLargeError).
        self.headers: Mapping[str, str] | None = dict(headers or {})


# An outage of the consent store (a restart, a fail-over) lasts seconds: a client that waits
# this long finds it back, or asks again.
_STORE_RETRY_AFTER_S = 5
_ERROR_CODES = (400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 503)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": "An error; `message` says what to fix."}
    for code in _ERROR_CODES
}
"""Every route's documented error responses."""

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}


def _json(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> Any:
    body = ErrorResponse(error=error, message=message).model_dump()
    return JSONResponse(status_code=status, content=body, headers=headers)


# What to send instead, for the type mistakes strict bodies refuse (pydantic's own words,
# "Input should be a valid integer", say what is wrong but not what to write).
_TYPE_HINTS = {
    "int_type": "must be a JSON number without quotes, e.g. 17",
    "bool_type": "must be true or false, without quotes",
    "string_type": "must be a JSON string, in double quotes",
    "list_type": 'must be a JSON array, e.g. ["post", "profile"]',
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "extra_forbidden": "is not a field of this request: remove it (or check its spelling)",
}


def shown(value: Any) -> str:
    """The offending value as JSON would show it, cut short (bodies may be long)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _explain(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    loc = tuple(error.get("loc", ()))
    if kind == "missing" and loc == ("body",):
        return 'body: send a JSON object (with "Content-Type: application/json")'
    where = ".".join(str(part) for part in loc if part != "body") or "body"
    if kind == "missing":
        return f"{where}: is required"
    hint = _TYPE_HINTS.get(kind)
    if hint is None:
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        return f"{where}: {message}"
    if kind == "extra_forbidden":
        return f"{where}: {hint}"
    return f"{where}: {hint}, not {shown(error.get('input'))}"


def _describe(errors: Sequence[Any]) -> str:
    # A value refused by a union (``[...] | "all"``) is reported once per member: say it once.
    parts = list(dict.fromkeys(_explain(error) for error in errors))
    return "; ".join(parts[:5]) or "the request is malformed"


async def _api_error(_request: Request, error: Exception) -> Any:
    assert isinstance(error, ApiError)  # noqa: S101 - registered for ApiError only
    return _json(error.status, error.error, error.message, dict(error.headers or {}))


async def _validation_error(_request: Request, error: Exception) -> Any:
    assert isinstance(error, RequestValidationError)  # noqa: S101
    return _json(422, "invalid_request", _describe(error.errors()))


async def _http_error(_request: Request, error: Exception) -> Any:
    assert isinstance(error, StarletteHTTPException)  # noqa: S101
    code = _STATUS_CODES.get(error.status_code, "error")
    return _json(error.status_code, code, str(error.detail), dict(error.headers or {}))


async def _store_error(_request: Request, error: Exception) -> Any:
    if isinstance(error, NotFoundError):
        return _json(404, "not_found", str(error))
    if isinstance(error, RegionNotServedError):
        return _json(403, "region_not_served", str(error))
    if isinstance(error, DuplicateConsentError):
        # The consent in force, where a client that retried a grant finds what it asked for.
        location = {"Location": f"/v1/consents/{error.consent_id}"}
        return _json(409, "consent_exists", str(error), location)
    if isinstance(error, ConflictError):
        return _json(409, "conflict", str(error))
    if isinstance(error, InvalidRequestError):
        return _json(422, "invalid_request", str(error))
    if isinstance(error, IntegrityError):
        return _json(409, "conflict", "the change conflicts with existing data: retry it")
    if isinstance(error, DataError):
        return _json(422, "invalid_request", "a value is out of range or malformed")
    _log.exception("store error", exc_info=error)
    return _json(
        503,
        "unavailable",
        f"the consent store is unavailable: retry in {_STORE_RETRY_AFTER_S} seconds",
        {"Retry-After": str(_STORE_RETRY_AFTER_S)},
    )


async def _replay_error(_request: Request, error: Exception) -> Any:
    # A replay the consent's state refuses conflicts with it, as consent's ConflictError
    # does: 409, with the refusal's code (``consent_not_active``...) for callers to branch on.
    if isinstance(error, ReplayRefusedError):
        return _json(409, error.code, str(error))
    assert isinstance(error, ReplayUnavailableError)  # noqa: S101 - registered for these two
    return _json(503, "replay_unavailable", str(error))


def install_error_handlers(app: FastAPI) -> None:
    """Route every known exception to a JSON error response."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ReplayRefusedError, _replay_error)
    app.add_exception_handler(ReplayUnavailableError, _replay_error)
    for kind in (
        NotFoundError,
        RegionNotServedError,
        ConflictError,
        InvalidRequestError,
        SQLAlchemyError,
    ):
        app.add_exception_handler(kind, _store_error)
