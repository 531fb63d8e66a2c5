"""The message log's routes: an app's messages and their attempts, resends and test events.

An app sees its own messages, operators any app's; another app's id, or a message of another
app, is 404 as if it did not exist. The platform has no use for them (403): what a user's
records disclosed is the disclosure report's.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime
from starlette.concurrency import run_in_threadpool

from portability.api.auth import Principal
from portability.api.dependencies import ApiContext, AppId, Caller, Context, visible_app
from portability.api.errors import ApiError, ErrorResponse
from portability.api.message_schemas import (
    AttemptOutcomeResponse,
    AttemptResponse,
    MessageDetailResponse,
    MessageListResponse,
    MessageResponse,
)
from portability.api.requests import ID_PATTERN
from portability.messages.errors import MessagesError
from portability.messages.queries import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    InvalidCursorError,
    MessageFilter,
    MessageNotFoundError,
    OutcomeFilter,
    get_message,
    list_messages,
)
from portability.messages.refusals import (
    ActionUnavailableError,
    MessageRefusedError,
    RecordsGoneError,
)

__all__ = ["messages_router"]

messages_router = APIRouter(tags=["messages"])

EventType = Literal[
    "portability.delta",
    "portability.snapshot",
    "authorization.removed",
    "portability.download.ready",
    "portability.ping",
]
MessageId = Annotated[
    str, Path(pattern=ID_PATTERN, examples=["msg_0123456789abcdef0123456789abcdef"])
]

_CURSOR: Final = "The next_cursor of the page before; leave it out for the newest messages."
_SINCE: Final = "Messages first attempted at or after this time (ISO 8601, with a time zone)."
_UNTIL: Final = "Messages first attempted before this time (ISO 8601, with a time zone)."
_OUTCOME: Final = "delivered (some attempt was answered 2xx) or failing (none yet)."


@messages_router.get("/apps/{app_id}/messages")
def list_app_messages(
    app_id: AppId,
    context: Context,
    caller: Caller,
    consent_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    event_type: Annotated[EventType | None, Query()] = None,
    outcome: Annotated[OutcomeFilter | None, Query(description=_OUTCOME)] = None,
    since: Annotated[AwareDatetime | None, Query(description=_SINCE)] = None,
    until: Annotated[AwareDatetime | None, Query(description=_UNTIL)] = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=200, description=_CURSOR)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> MessageListResponse:
    """The app's webhook messages and test events, newest first (the app, operators).

    Kept for ``PORTABILITY_MESSAGE_RETENTION_DAYS`` (default 30). Pages are cut by
    ``next_cursor``: pass it back, with the same filters, for the next page.
    """
    _visible(context, caller, app_id)
    if since is not None and until is not None and since >= until:
        raise ApiError(
            422,
            "invalid_request",
            f"since ({since.isoformat()}) must be before until ({until.isoformat()}): the "
            "window holds messages first attempted at or after since and before until",
        )
    filters = MessageFilter(consent_id, event_type, outcome, since, until)
    try:
        page = list_messages(context.messages.engine, app_id, filters, cursor=cursor, limit=limit)
    except InvalidCursorError as error:
        raise ApiError(400, "invalid_cursor", str(error)) from error
    return MessageListResponse(
        messages=[MessageResponse.of(view) for view in page.messages],
        next_cursor=page.next_cursor,
    )


@messages_router.get("/apps/{app_id}/messages/{message_id}")
def get_app_message(
    app_id: AppId, message_id: MessageId, context: Context, caller: Caller
) -> MessageDetailResponse:
    """One message and every attempt at it, oldest first (the app, operators)."""
    _visible(context, caller, app_id)
    try:
        view, attempts = get_message(context.messages.engine, app_id, message_id)
    except MessageNotFoundError as error:
        raise ApiError(404, "not_found", str(error)) from error
    return MessageDetailResponse(
        **MessageResponse.of(view).model_dump(),
        attempt_log=[AttemptResponse.of(attempt) for attempt in attempts],
    )


_GONE: Final[dict[int | str, dict[str, Any]]] = {
    410: {"model": ErrorResponse, "description": "The message's records are gone: replay."}
}


@messages_router.post("/apps/{app_id}/messages/{message_id}/resend", responses=_GONE)
async def resend_message(
    app_id: AppId, message_id: MessageId, context: Context, caller: Caller
) -> AttemptOutcomeResponse:
    """Send a message again, as it was: the same webhook-id and body (the app, operators).

    One attempt, answered with its outcome (``ok`` false, with the reason, when the endpoint
    refused it) and logged with origin ``resend``. Refused: a message of a consent that
    ended (409 ``consent_ended``; the removal notice itself may be resent), an app that
    cannot receive (409 ``app_disabled``, ``no_webhook_url``), a test event (409
    ``not_resendable``: send a new one), a message whose records no longer build the same
    body (409 ``body_mismatch``) or are gone from the topics (410 ``records_gone``: ask for
    a replay). 503 without Kafka.
    """
    await run_in_threadpool(_visible, context, caller, app_id)
    try:
        result = await context.messages.resend(app_id, message_id)
    except MessagesError as error:
        raise _answer(error) from error
    return AttemptOutcomeResponse.of(result)


@messages_router.post("/apps/{app_id}/test-event")
async def send_test_event(
    app_id: AppId, context: Context, caller: Caller
) -> AttemptOutcomeResponse:
    """Send a signed ``portability.ping`` to the app's webhook (the app, operators).

    For checking an endpoint before consents flow: one attempt, answered with its outcome
    (``ok``, ``status``, ``duration_ms``, ``reason``) and logged with origin ``test``. 409
    for an app that cannot receive (``app_disabled``, ``no_webhook_url``); 503 without Kafka.
    """
    await run_in_threadpool(_visible, context, caller, app_id)
    try:
        result = await context.messages.test_event(app_id)
    except MessagesError as error:
        raise _answer(error) from error
    return AttemptOutcomeResponse.of(result)


def _visible(context: ApiContext, caller: Principal, app_id: str) -> None:
    """The app's log is its own and the operators': another app's is 404, the platform's 403."""
    visible_app(context, caller, app_id)
    caller.require("app", "operator")


def _answer(error: MessagesError) -> ApiError:
    """The HTTP answer of a refused action."""
    if isinstance(error, MessageNotFoundError):
        return ApiError(404, "not_found", str(error))
    if isinstance(error, MessageRefusedError):
        return ApiError(409, error.code, str(error))
    if isinstance(error, RecordsGoneError):
        return ApiError(410, error.code, str(error))
    if isinstance(error, ActionUnavailableError):
        headers = {"Retry-After": "5"} if error.retriable else {}
        return ApiError(503, "unavailable", str(error), headers)
    return ApiError(409, "conflict", str(error))
