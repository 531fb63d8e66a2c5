"""The pull feed's route: a poll-mode app reads its events instead of taking webhooks.

The same events as webhooks, in the same order per consent (the body of each, exactly as a
POST would carry it), after an opaque iterator; an app sees its own feed, operators any
app's; another app's id is 404 as if it did not exist. The reading is
:class:`~portability.messages.feed_reader.FeedReader`'s.

The answer is written with each body copied in as it was appended (``orjson.Fragment``), not
parsed and dumped again: the events an app reads are byte for byte those a webhook would
have carried.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from portability.api.dependencies import AppId, Caller, Context, visible_app
from portability.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse
from portability.messages.errors import MessagesError
from portability.messages.feed_iterators import (
    FeedUnavailableError,
    InvalidIteratorError,
    IteratorExpiredError,
)
from portability.messages.feed_reader import (
    DEFAULT_LIMIT,
    DEFAULT_WAIT_S,
    MAX_LIMIT,
    MAX_WAIT_S,
    FeedPage,
    FeedReader,
    FeedStart,
)

__all__ = ["FeedEventResponse", "FeedResponse", "feed_router"]

feed_router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES, tags=["feed"])

_ITERATOR: Final = "The iterator of the last answer, unchanged; leave it out to start anew."
_FROM: Final = (
    "Without an iterator: oldest (default) starts at the oldest event the feed keeps, latest "
    "with the events to come only."
)
_LIMIT: Final = f"Events at most (1 to {MAX_LIMIT})."
_WAIT: Final = (
    f"Seconds to wait for an event when none is new (0 to {MAX_WAIT_S:g}); the answer comes "
    "as soon as one arrives."
)
_GONE: Final[dict[int | str, dict[str, Any]]] = {
    410: {"model": ErrorResponse, "description": "The iterator expired: start again, resync."}
}


class FeedEventResponse(BaseModel):
    """One event, as a webhook would have carried it."""

    webhook_id: str = Field(description="The webhook-id a POST would carry: deduplicate on it.")
    type: str = Field(description="The event's type, as in the body.")
    consent_id: str = Field(description="The event's consent; empty for none.")
    body: dict[str, Any] = Field(description="The webhook body (the webhook contract's JSON).")


class FeedResponse(BaseModel):
    """A page of the app's feed."""

    events: list[FeedEventResponse] = Field(description="Oldest first; per consent in order.")
    iterator: str = Field(description="Pass it back as iterator= for what comes next.")
    more: bool = Field(description="More events are there already: ask again at once.")


def _reader(request: Request) -> FeedReader:
    reader: FeedReader = request.app.state.feed
    return reader


@feed_router.get("/apps/{app_id}/feed", response_model=FeedResponse, responses=_GONE)
async def read_feed(
    app_id: AppId,
    request: Request,
    context: Context,
    caller: Caller,
    iterator: Annotated[
        str | None, Query(min_length=1, max_length=400, description=_ITERATOR)
    ] = None,
    start: Annotated[FeedStart | None, Query(alias="from", description=_FROM)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description=_LIMIT)] = DEFAULT_LIMIT,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description=_WAIT)] = DEFAULT_WAIT_S,
) -> Response:
    """A poll-mode app's events after ``iterator`` (the app, operators).

    The same events, bodies and order as webhooks would bring, with an ``iterator`` to
    continue from; when nothing is new the answer waits up to ``wait`` seconds and comes as
    soon as an event arrives. At least once: deduplicate on ``webhook_id``. The feed keeps
    events for ``PORTABILITY_FEED_RETENTION_DAYS`` (default 7): an older iterator is 410
    ``iterator_expired``. A webhook-mode app has no feed (409 ``not_poll_mode``); an
    iterator this feed did not hand out is 400 ``invalid_iterator``; 503 without Kafka.
    """
    app = await run_in_threadpool(visible_app, context, caller, app_id)
    caller.require("app", "operator")
    if app.delivery_mode != "poll":
        raise ApiError(
            409,
            "not_poll_mode",
            f"app {app_id!r} takes webhooks (delivery_mode {app.delivery_mode}): its events "
            f"are POSTed to its webhook URL; to read them here instead, switch it to poll "
            f'(PUT /v1/apps/{app_id}/delivery-mode {{"delivery_mode": "poll"}})',
        )
    if iterator is not None and start is not None:
        raise ApiError(
            422,
            "invalid_request",
            "from= chooses where to start without an iterator: give an iterator or from=, not both",
        )
    try:
        page = await _reader(request).read(
            app_id, iterator, start=start or "oldest", limit=limit, wait_s=wait
        )
    except MessagesError as error:
        raise _answer(error) from error
    return Response(_page_json(page), media_type="application/json")


def _page_json(page: FeedPage) -> bytes:
    """The answer, each body copied in as it was appended."""
    return orjson.dumps(
        {
            "events": [
                {
                    "webhook_id": event.webhook_id,
                    "type": event.event_type,
                    "consent_id": event.consent_id,
                    "body": orjson.Fragment(event.body),
                }
                for event in page.events
            ],
            "iterator": page.iterator,
            "more": page.more,
        }
    )


def _answer(error: MessagesError) -> ApiError:
    """The HTTP answer of a refused read."""
    if isinstance(error, InvalidIteratorError):
        return ApiError(400, error.code, str(error))
    if isinstance(error, IteratorExpiredError):
        return ApiError(410, error.code, str(error))
    if isinstance(error, FeedUnavailableError):
        headers = {"Retry-After": "5"} if error.retriable else {}
        return ApiError(503, "unavailable", str(error), headers)
    return ApiError(409, "conflict", str(error))
