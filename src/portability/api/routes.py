"""The API's routes: apps (registration, review, secrets), consents (grant, revoke, status),
replays and one-time transfers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from portability.api.auth import Authenticator, Principal
from portability.api.delivery_status import DeliveryStatusBoard
from portability.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse
from portability.api.schemas import (
    ID_PATTERN,
    AppRegistrationRequest,
    AppRegistrationResponse,
    AppResponse,
    ConsentListResponse,
    ConsentResponse,
    ConsentStatusResponse,
    GrantRequest,
    ReplayRequest,
    ReplayResponse,
    ReviewRequest,
    SecretRotationResponse,
    TransferListResponse,
    TransferResponse,
    WebhookUpdate,
)
from portability.consent import AppView, ConsentService, ConsentView
from portability.consent.errors import ConflictError
from portability.consent.models import ConsentStatus
from portability.consent.transfers import TransferStore, TransferView, delete_archive
from portability.delivery.replay import Replayer, ReplayUnavailableError
from portability.settings import Settings
from portability.wire.records import RemovalReason

__all__ = ["ApiContext", "router"]


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What every request needs; kept in ``app.state.context``."""

    settings: Settings
    service: ConsentService
    authenticator: Authenticator
    status_board: DeliveryStatusBoard
    replayer: Replayer
    transfers: TransferStore


router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)
_bearer = HTTPBearer(auto_error=False, description="Platform, operator or app API key.")

AppId = Annotated[str, Path(pattern=ID_PATTERN, examples=["app_5c2a0e1f9b3d"])]
ConsentId = Annotated[str, Path(pattern=ID_PATTERN, examples=["cns_1f0e2d3c4b5a6978"])]


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = credentials.credentials if credentials is not None else None
    return _context(request).authenticator.authenticate(token)


Context = Annotated[ApiContext, Depends(_context)]
Caller = Annotated[Principal, Depends(_principal)]


def _not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"no {kind} {ident!r}: check the id")


def _visible_app(context: ApiContext, caller: Principal, app_id: str) -> AppView:
    """The app, if the caller may see it; another app's id is 404, as if it did not exist."""
    if caller.role == "app" and not caller.owns(app_id):
        raise _not_found("app", app_id)
    return context.service.get_app(app_id)


def _visible_consent(context: ApiContext, caller: Principal, consent_id: str) -> ConsentView:
    consent = context.service.get_consent(consent_id)
    if caller.role == "app" and not caller.owns(consent.app_id):
        raise _not_found("consent", consent_id)
    return consent


# --- apps -------------------------------------------------------------------------------------


@router.post("/apps", status_code=201, tags=["apps"])
def register_app(body: AppRegistrationRequest, context: Context) -> AppRegistrationResponse:
    """Register an app (no token needed). It stays pending until an operator approves it.

    The response holds the app's API key and webhook signing secret: they are shown once.
    """
    registration = context.service.apply_for_app(
        body.name, body.webhook_url, body.use_case, list(body.requested_scopes)
    )
    return AppRegistrationResponse(
        app=AppResponse.of(registration.app),
        api_key=registration.api_key,
        signing_secret=registration.app.signing_secret,
    )


@router.get("/apps/{app_id}", tags=["apps"])
def get_app(app_id: AppId, context: Context, caller: Caller) -> AppResponse:
    """An app: an app sees its own, the platform and operators any."""
    return AppResponse.of(_visible_app(context, caller, app_id))


@router.post("/apps/{app_id}/review", tags=["apps"])
def review_app(app_id: AppId, body: ReviewRequest, context: Context, caller: Caller) -> AppResponse:
    """Approve an app within its requested scopes, or reject it with a reason (operators)."""
    _visible_app(context, caller, app_id)
    caller.require("operator")
    scopes = list(body.approved_scopes) if body.approved_scopes is not None else None
    view = context.service.review_app(
        app_id, body.decision, approved_scopes=scopes, reason=body.reason
    )
    return AppResponse.of(view)


@router.put("/apps/{app_id}/webhook", tags=["apps"])
def set_webhook(
    app_id: AppId, body: WebhookUpdate, context: Context, caller: Caller
) -> AppResponse:
    """Point the app's deliveries at a new URL (the app itself, or an operator).

    This is how an app whose endpoint was disabled (410 Gone, or failing too long) gets its
    deliveries again: the parked ones are sent to the new URL, in order.
    """
    _visible_app(context, caller, app_id)
    caller.require("app", "operator")
    return AppResponse.of(context.service.set_webhook_url(app_id, body.webhook_url))


@router.post("/apps/{app_id}/secret/rotate", tags=["apps"])
def rotate_secret(app_id: AppId, context: Context, caller: Caller) -> SecretRotationResponse:
    """Give the app a new signing secret (the app itself, or an operator).

    Both secrets sign every delivery until the overlap
    (``PORTABILITY_SECRET_ROTATION_OVERLAP_S``) ends.
    """
    _visible_app(context, caller, app_id)
    caller.require("app", "operator")
    view = context.service.rotate_secret(app_id, context.settings.secret_rotation_overlap_s)
    return SecretRotationResponse(
        app_id=view.app_id,
        signing_secret=view.signing_secret,
        previous_secret_expires_at=view.previous_secret_expires_at,
    )


# --- consents ---------------------------------------------------------------------------------


@router.post("/consents", status_code=201, tags=["consents"])
def grant_consent(body: GrantRequest, context: Context, caller: Caller) -> ConsentResponse:
    """Grant an app a consent, for a user in the EEA or the UK (platform only)."""
    caller.require("platform")
    categories = [body.categories] if isinstance(body.categories, str) else body.categories
    snapshot = body.initial_snapshot
    view = context.service.grant(
        body.user_id,
        body.app_id,
        list(categories),
        body.mode,
        body.expires_at,
        user_region=body.user_region,
        initial_snapshot=body.mode == "ongoing" if snapshot is None else snapshot,
    )
    return ConsentResponse.of(view)


@router.get("/consents", tags=["consents"])
def list_consents(
    context: Context,
    caller: Caller,
    user_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    app_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    status: Annotated[ConsentStatus | None, Query()] = None,
) -> ConsentListResponse:
    """Consents matching the filters: an app sees only its own."""
    if caller.role == "app":
        if app_id is not None and not caller.owns(app_id):
            return ConsentListResponse(consents=[])
        app_id = caller.app_id
    views = context.service.list_consents(user_id=user_id, app_id=app_id, status=status)
    return ConsentListResponse(consents=[ConsentResponse.of(view) for view in views])


@router.get("/consents/{consent_id}", tags=["consents"])
def get_consent(consent_id: ConsentId, context: Context, caller: Caller) -> ConsentResponse:
    """A consent: an app sees its own, the platform and operators any."""
    return ConsentResponse.of(_visible_consent(context, caller, consent_id))


_REVOKE_REASONS: dict[str, RemovalReason] = {
    "platform": "user_revoked",
    "app": "app_revoked",
    "operator": "policy",
}


@router.post("/consents/{consent_id}/revoke", tags=["consents"])
def revoke_consent(consent_id: ConsentId, context: Context, caller: Caller) -> ConsentResponse:
    """Revoke a consent; deliveries stop and the app is told why.

    The reason follows the caller: the platform (for the user) ``user_revoked``, the app
    ``app_revoked``, an operator ``policy``. Revoking a consent that already ended changes
    nothing.
    """
    _visible_consent(context, caller, consent_id)
    view = context.service.revoke(consent_id, reason=_REVOKE_REASONS[caller.role])
    return ConsentResponse.of(view)


UserId = Annotated[str, Path(min_length=1, max_length=200, examples=["u00000042"])]


@router.post("/users/{user_id}/account-deleted", tags=["consents"])
def account_deleted(user_id: UserId, context: Context, caller: Caller) -> ConsentListResponse:
    """The user's account was deleted: end all their consents (platform only).

    Each app is told with ``authorization.removed``, reason ``account_deleted``. Returns the
    consents ended; calling it again ends nothing more.
    """
    caller.require("platform")
    views = context.service.end_user_consents(user_id, "account_deleted")
    return ConsentListResponse(consents=[ConsentResponse.of(view) for view in views])


@router.get("/consents/{consent_id}/status", tags=["consents"])
def consent_status(
    consent_id: ConsentId, context: Context, caller: Caller
) -> ConsentStatusResponse:
    """State, granted categories, last delivery and its sequence, and failures with reasons."""
    consent = _visible_consent(context, caller, consent_id)
    return ConsentStatusResponse(
        consent_id=consent.consent_id,
        state=consent.status,
        removal_reason=consent.removal_reason,
        categories=list(consent.categories),
        mode=consent.mode,
        snapshot_epoch=consent.snapshot_epoch,
        **_delivery_fields(context.status_board, consent_id, consent.snapshot_epoch),
    )


def _delivery_fields(
    board: DeliveryStatusBoard, consent_id: str, snapshot_epoch: int
) -> dict[str, Any]:
    """The status's delivery fields: null when unknown, "nothing yet" when none published."""
    fields: dict[str, Any] = {
        "delivery_status_available": board.available,
        "last_delivered_at": None,
        "last_sequence": None,
        "failing": None,
        "failure_reason": None,
        "last_http_status": None,
        "last_response": None,
        "endpoint_disabled": None,
    }
    if not board.available:
        return fields
    delivery = board.get(consent_id)
    if delivery is None:
        return fields | {
            "last_sequence": 0,
            "failing": False,
            "endpoint_disabled": False,
            "snapshot_delivered": False if snapshot_epoch else None,
        }
    delivered_epoch = delivery.get("snapshot_epoch_delivered", 0)
    return fields | {
        "snapshot_delivered": delivered_epoch >= snapshot_epoch if snapshot_epoch else None,
        "last_delivered_at": delivery["last_delivered_at"],
        "last_sequence": delivery["last_sequence"],
        "failing": delivery["failing"],
        "failure_reason": delivery["last_error"],
        "last_http_status": delivery["last_status"],
        "last_response": delivery.get("last_response"),
        "endpoint_disabled": delivery.get("endpoint_disabled", False),
    }


# --- replay -----------------------------------------------------------------------------------

ReplayId = Annotated[str, Path(pattern=ID_PATTERN, examples=["rpl_0a1b2c3d4e5f6071"])]


@router.post("/consents/{consent_id}/replay", status_code=202, tags=["replay"])
async def replay_consent(
    consent_id: ConsentId,
    body: ReplayRequest,
    context: Context,
    caller: Caller,
    response: Response,
) -> ReplayResponse:
    """Deliver a consent's deltas again, from a sequence number or a time (the app, operators).

    The deltas come from the deliveries topic, so only those within its retention (7 days)
    can be replayed; they carry the same delta ids as before, so the app deduplicates what
    it already has. The replay runs in the background: follow it at the URL in ``Location``.
    Only an active consent is replayed (409 ``consent_not_active`` otherwise), one replay
    per consent at a time (409 ``replay_in_progress``); 503 when this server has no Kafka.
    """
    await run_in_threadpool(_visible_consent, context, caller, consent_id)
    caller.require("app", "operator")
    try:
        view = await context.replayer.submit(
            consent_id, caller.role, from_sequence=body.from_sequence, since=body.since
        )
    except ReplayUnavailableError as error:
        raise ApiError(503, "replay_unavailable", str(error)) from error
    except ConflictError as error:
        raise ApiError(409, _conflict_code(error), str(error)) from error
    response.headers["Location"] = f"/v1/consents/{consent_id}/replays/{view.replay_id}"
    return ReplayResponse.of(view)


def _conflict_code(error: ConflictError) -> str:
    """The stable code of a refused replay (``replay_in_progress``...): what callers branch on."""
    code: str = getattr(error, "code", "conflict")
    return code


@router.get("/consents/{consent_id}/replays/{replay_id}", tags=["replay"])
def get_replay(
    consent_id: ConsentId, replay_id: ReplayId, context: Context, caller: Caller
) -> ReplayResponse:
    """A replay's state and counters: an app sees its own consents' replays, others any."""
    _visible_consent(context, caller, consent_id)
    view = context.replayer.store.get(replay_id)
    if view.consent_id != consent_id:
        raise _not_found("replay", replay_id)
    return ReplayResponse.of(view)


# --- transfers: one-time archives and ongoing snapshots ------------------------------------

TransferId = Annotated[str, Path(pattern=ID_PATTERN, examples=["trf_0123456789abcdef"])]
_ARCHIVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {}}, "description": "The archive."},
    410: {"model": ErrorResponse, "description": "The archive expired or was cancelled."},
}


@router.post("/consents/{consent_id}/transfers", status_code=202, tags=["transfers"])
def request_transfer(
    consent_id: ConsentId, context: Context, caller: Caller, response: Response
) -> TransferResponse:
    """Ask for the archive of a one-time consent's data (the app itself, or an operator).

    The transfer starts ``pending``; when the archive is built the app receives a
    ``portability.download.ready`` event and downloads it from ``download_url`` with its API
    key, until ``expires_at`` (4 days by default). One transfer per consent at a time (409);
    an ongoing consent gets a snapshot and deltas instead (409).
    """
    _visible_consent(context, caller, consent_id)
    caller.require("app", "operator")
    view = context.transfers.request(consent_id)
    response.headers["Location"] = f"/v1/transfers/{view.transfer_id}"
    return TransferResponse.of(view, context.settings.public_api_url())


@router.post("/consents/{consent_id}/snapshots", status_code=202, tags=["transfers"])
def request_snapshot(
    consent_id: ConsentId, context: Context, caller: Caller, response: Response
) -> TransferResponse:
    """Resync: send an ongoing consent's app a fresh snapshot (the app itself, or an operator).

    For an app that lost its copy. Its deltas matched from now on wait until the snapshot's
    last ``portability.snapshot`` page is delivered; those the snapshot already holds are not
    sent. 409 for a consent that is not active and ongoing.
    """
    _visible_consent(context, caller, consent_id)
    caller.require("app", "operator")
    view = context.transfers.request_snapshot(consent_id)
    response.headers["Location"] = f"/v1/transfers/{view.transfer_id}"
    return TransferResponse.of(view, context.settings.public_api_url())


@router.get("/consents/{consent_id}/transfers", tags=["transfers"])
def list_transfers(consent_id: ConsentId, context: Context, caller: Caller) -> TransferListResponse:
    """A consent's transfers, oldest first: an app sees its own consents', others any."""
    _visible_consent(context, caller, consent_id)
    base = context.settings.public_api_url()
    views = context.transfers.list_for_consent(consent_id)
    return TransferListResponse(transfers=[TransferResponse.of(v, base) for v in views])


@router.get("/transfers/{transfer_id}", tags=["transfers"])
def get_transfer(transfer_id: TransferId, context: Context, caller: Caller) -> TransferResponse:
    """A transfer's state: an app sees its own, the platform and operators any."""
    view = _visible_transfer(context, caller, transfer_id)
    return TransferResponse.of(view, context.settings.public_api_url())


@router.post("/transfers/{transfer_id}/cancel", tags=["transfers"])
def cancel_transfer(transfer_id: TransferId, context: Context, caller: Caller) -> TransferResponse:
    """Cancel a pending, in-progress or ready transfer (the app itself, or an operator).

    A ready archive is deleted at once.
    """
    found = _visible_transfer(context, caller, transfer_id)
    caller.require("app", "operator")
    if found.kind == "snapshot":
        raise ApiError(
            409,
            "snapshot",
            f"transfer {transfer_id!r} is a snapshot: the consent's deltas wait for it, so it "
            "cannot be cancelled (revoke the consent to stop the flow)",
        )
    view = context.transfers.cancel(transfer_id)
    delete_archive(context.settings, view)
    return TransferResponse.of(view, context.settings.public_api_url())


@router.get(
    "/transfers/{transfer_id}/archive",
    tags=["transfers"],
    response_class=FileResponse,
    responses=_ARCHIVE_RESPONSES,
)
def download_archive(transfer_id: TransferId, context: Context, caller: Caller) -> FileResponse:
    """Download a ready archive: only the app the transfer is for, with its API key.

    Another app gets 404, as if the transfer did not exist; the platform and operators get
    403 (the archive is the user's data, for the app the user chose). 409 while it is being
    built, 410 once it expired or was cancelled.
    """
    view = _visible_transfer(context, caller, transfer_id)
    caller.require("app")
    if view.kind == "snapshot":
        raise ApiError(
            409,
            "snapshot",
            f"transfer {transfer_id!r} is a snapshot: its records come as "
            "portability.snapshot webhook events, there is no archive to download",
        )
    if view.state in ("expired", "cancelled"):
        raise ApiError(410, "gone", f"transfer {transfer_id!r} is {view.state}: request a new one")
    if view.state != "ready" or view.archive_file is None:
        raise ApiError(
            409,
            "not_ready",
            f"transfer {transfer_id!r} is {view.state}: wait for portability.download.ready "
            f"(or poll GET /v1/transfers/{transfer_id})",
        )
    path = context.settings.archive_dir() / view.archive_file
    if not path.is_file():
        raise ApiError(410, "gone", f"the archive of {transfer_id!r} is no longer stored")
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"portability-{transfer_id}.zip",
        headers={"Digest": f"sha-256={view.sha256}", "Cache-Control": "no-store"},
    )


def _visible_transfer(context: ApiContext, caller: Principal, transfer_id: str) -> TransferView:
    view = context.transfers.get(transfer_id)
    if caller.role == "app" and not caller.owns(view.app_id):
        raise _not_found("transfer", transfer_id)
    return view
