"""The disclosure report route: which apps received which of a user's records, and when.

For the platform's own privacy page (GDPR Art. 15: the recipients of a user's data) and for
operators; an app never sees it, not even for its own users, since the report spans every
app. The document is :class:`~portability.messages.disclosure_report.DisclosureReport`, the
same that ``portability disclosures USER --json`` exports.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from portability.api.dependencies import Caller
from portability.api.errors import ERROR_RESPONSES, ApiError
from portability.messages.disclosure_report import (
    DisclosureCursorError,
    DisclosureReport,
    DisclosureRequestError,
)
from portability.messages.disclosures import (
    DEFAULT_RECORD_LIMIT,
    MAX_RECORD_LIMIT,
    DisclosureReports,
)

__all__ = ["disclosures_router"]

disclosures_router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES, tags=["disclosures"])

UserId = Annotated[str, Path(min_length=1, max_length=200, examples=["u00000042"])]

_RECORDS = "Include a page of the records themselves (ids, apps, times), oldest first."
_CURSOR = "The previous page's records.next_cursor, unchanged; leave out for the first page."
_LIMIT = f"Records per page (1 to {MAX_RECORD_LIMIT})."


def _reports(request: Request) -> DisclosureReports:
    reports: DisclosureReports = request.app.state.disclosures
    return reports


@disclosures_router.get("/users/{user_id}/disclosures")
def user_disclosures(
    user_id: UserId,
    request: Request,
    caller: Caller,
    records: Annotated[bool, Query(description=_RECORDS)] = False,
    cursor: Annotated[str | None, Query(min_length=1, max_length=2000, description=_CURSOR)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_RECORD_LIMIT, description=_LIMIT)] = (
        DEFAULT_RECORD_LIMIT
    ),
) -> DisclosureReport:
    """What was disclosed of a user: per app, categories, record and delivery counts, first
    and last delivery, policy versions and consents (with how they ended); with
    ``records=true``, which record ids went when, a page at a time (platform, operators).

    Ids, times and policy versions only, never a record's contents. A user of whom nothing
    was disclosed gets a report without apps.
    """
    caller.require("platform", "operator")
    if cursor is not None and not records:
        raise ApiError(
            422,
            "invalid_request",
            "cursor pages the records: add records=true (or leave the cursor out)",
        )
    try:
        return _reports(request).report(user_id, records=records, cursor=cursor, limit=limit)
    except DisclosureCursorError as error:
        # As the message log's routes answer a cursor they did not hand out.
        raise ApiError(400, "invalid_cursor", str(error)) from error
    except DisclosureRequestError as error:
        raise ApiError(422, "invalid_request", str(error)) from error
