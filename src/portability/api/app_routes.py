"""The API's app routes: registration, the review queue and review, webhook URL, secrets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Query, Response

from portability.api.dependencies import (
    AppId,
    Caller,
    Context,
    limit_client,
    visible_app,
)
from portability.api.errors import ApiError
from portability.api.requests import (
    AppRegistrationRequest,
    DeliveryModeUpdate,
    ReviewRequest,
    SecretRotationRequest,
    WebhookUpdate,
)
from portability.api.schemas import (
    AppListResponse,
    AppRegistrationResponse,
    AppResponse,
    SecretRotationResponse,
)
from portability.consent._time import utc_now
from portability.consent.models import ReviewStatus
from portability.consent.signing_secrets import RotationLimitError

__all__ = ["apps_router"]

apps_router = APIRouter(tags=["apps"])


@apps_router.post("/apps", status_code=201, dependencies=[Depends(limit_client)])
def register_app(body: AppRegistrationRequest, context: Context) -> AppRegistrationResponse:
    """Register an app (no token needed). It stays pending until an operator approves it.

    The response holds the app's API key and webhook signing secret: they are shown once.
    Registrations count towards the per-client limit of requests without a token (429).
    """
    registration = context.service.apply_for_app(
        body.name,
        body.webhook_url or "",
        body.use_case,
        list(body.requested_scopes),
        delivery_mode=body.delivery_mode,
    )
    return AppRegistrationResponse(
        app=AppResponse.of(registration.app),
        api_key=registration.api_key,
        signing_secret=registration.app.signing_secret,
    )


_REVIEW_FILTER = "Only apps in this review state: pending (waiting for review), approved, rejected."


@apps_router.get("/apps")
def list_apps(
    context: Context,
    caller: Caller,
    review_status: Annotated[ReviewStatus | None, Query(description=_REVIEW_FILTER)] = None,
    review_state: Annotated[
        ReviewStatus | None, Query(description="The same filter as review_status.")
    ] = None,
) -> AppListResponse:
    """Registered apps, oldest first (operators): ``?review_status=pending`` is the review queue.

    ``review_state`` is accepted as another name of the filter.
    """
    caller.require("operator")
    if review_status is not None and review_state is not None and review_status != review_state:
        raise ApiError(
            422,
            "invalid_request",
            f"review_status={review_status} and review_state={review_state} disagree: "
            "they are one filter, give one of them",
        )
    views = context.service.list_apps(review_status=review_status or review_state)
    return AppListResponse(apps=[AppResponse.of(view) for view in views])


@apps_router.get("/apps/{app_id}")
def get_app(app_id: AppId, context: Context, caller: Caller) -> AppResponse:
    """An app: an app sees its own, the platform and operators any."""
    return AppResponse.of(visible_app(context, caller, app_id))


@apps_router.post("/apps/{app_id}/review")
def review_app(app_id: AppId, body: ReviewRequest, context: Context, caller: Caller) -> AppResponse:
    """Approve an app within its requested scopes, or reject it with a reason (operators)."""
    visible_app(context, caller, app_id)
    caller.require("operator")
    scopes = list(body.approved_scopes) if body.approved_scopes is not None else None
    view = context.service.review_app(
        app_id, body.decision, approved_scopes=scopes, reason=body.reason
    )
    return AppResponse.of(view)


@apps_router.put("/apps/{app_id}/webhook")
def set_webhook(
    app_id: AppId, body: WebhookUpdate, context: Context, caller: Caller
) -> AppResponse:
    """Point the app's deliveries at a new URL (the app itself, or an operator).

    This is how an app whose endpoint was disabled (410 Gone, or failing too long) gets its
    deliveries again: the parked ones are sent to the new URL, in order.
    """
    visible_app(context, caller, app_id)
    caller.require("app", "operator")
    return AppResponse.of(context.service.set_webhook_url(app_id, body.webhook_url))


@apps_router.put("/apps/{app_id}/delivery-mode")
def set_delivery_mode(
    app_id: AppId, body: DeliveryModeUpdate, context: Context, caller: Caller
) -> AppResponse:
    """Switch how the app receives: ``webhook`` or ``poll`` (the app itself, or an operator).

    Events produced after the switch go the new way. Switching to ``webhook`` needs a URL
    (``webhook_url``, or the one the app kept); a poll app reads its events from
    ``GET /v1/apps/{app_id}/feed``. Read the feed to its end before switching back to
    webhooks: a webhook app's feed is not served (409).
    """
    visible_app(context, caller, app_id)
    caller.require("app", "operator")
    view = context.service.set_delivery_mode(app_id, body.delivery_mode, body.webhook_url)
    return AppResponse.of(view)


_IDEMPOTENCY_KEY = "Names the rotation: the same key again changes nothing (as the body's)."


@apps_router.post("/apps/{app_id}/secret/rotate")
def rotate_secret(
    app_id: AppId,
    context: Context,
    caller: Caller,
    response: Response,
    body: Annotated[SecretRotationRequest | None, Body()] = None,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=200, description=_IDEMPOTENCY_KEY)
    ] = None,
) -> SecretRotationResponse:
    """Give the app a new signing secret (the app itself, or an operator).

    The secret it replaces keeps signing every delivery for the overlap
    (``PORTABILITY_SECRET_ROTATION_OVERLAP_S``), and so does any earlier one still in its
    overlap: up to three secrets sign at once. A rotation beyond that is refused (409
    ``too_many_secrets``, with ``Retry-After``) until the oldest stops signing. An
    idempotency key (the ``Idempotency-Key`` header, or ``idempotency_key`` in the body)
    makes the call safe to repeat: the same key returns the same secret again, rotating
    nothing (``Idempotent-Replayed: true``).
    """
    visible_app(context, caller, app_id)
    caller.require("app", "operator")
    key = _one_idempotency_key(idempotency_key, body)
    try:
        view, rotation = context.service.rotate_secret(
            app_id, context.settings.secret_rotation_overlap_s, idempotency_key=key
        )
    except RotationLimitError as error:
        wait_s = max(1, int((error.retry_at - utc_now()).total_seconds()) + 1)
        raise ApiError(409, "too_many_secrets", str(error), {"Retry-After": str(wait_s)}) from error
    if rotation.repeated:
        response.headers["Idempotent-Replayed"] = "true"
    ends = view.secrets.previous_ends
    return SecretRotationResponse(
        app_id=view.app_id,
        signing_secret=rotation.secret,
        previous_secret_expires_at=ends[0] if ends else None,
        previous_secrets_expire_at=list(ends),
    )


def _one_idempotency_key(header: str | None, body: SecretRotationRequest | None) -> str | None:
    """The rotation's idempotency key, from the header or the body (the same if both)."""
    in_body = body.idempotency_key if body is not None else None
    if header is not None and in_body is not None and header != in_body:
        raise ApiError(
            422,
            "invalid_request",
            "the Idempotency-Key header and the body's idempotency_key differ: give one key",
        )
    return header if header is not None else in_body
