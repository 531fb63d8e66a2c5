"""The API's routes: consents (grant, revoke, status), replays and one-time transfers; the
app routes are in :mod:`.app_routes` and included here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from portability.api.app_routes import apps_router
from portability.api.auth import Principal
from portability.api.delivery_status import DeliveryStatusBoard
from portability.api.dependencies import (
    ApiContext,
    Caller,
    ConsentId,
    Context,
    not_found,
    visible_consent,
)
from portability.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse
from portability.api.requests import ID_PATTERN, GrantRequest, ReplayRequest
from portability.api.schemas import (
    ConsentListResponse,
    ConsentResponse,
    ConsentStatusResponse,
    ReplayResponse,
    TransferListResponse,
    TransferResponse,
)
from portability.consent.errors import ConflictError
from portability.consent.models import ConsentStatus
from portability.consent.transfer_requests import TransferView, delete_archive
from portability.wire.records import RemovalReason

__all__ = ["ApiContext", "router"]

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)
router.include_router(apps_router)


# --- consents ---------------------------------------------------------------------------------


@router.post("/consents", status_code=201, tags=["consents"])
def grant_consent(body: GrantRequest, context: Context, caller: Caller) -> ConsentResponse:
    """Grant an app a consent, for a user in the EEA or the UK (platform only).

    A user holds one active consent per app, mode and categories: an identical grant is 409
    ``consent_exists``, naming the active consent (also in ``Location``).
    """
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
    return ConsentResponse.of(visible_consent(context, caller, consent_id))


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
    visible_consent(context, caller, consent_id)
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
    consent = visible_consent(context, caller, consent_id)
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
    await run_in_threadpool(visible_consent, context, caller, consent_id)
    caller.require("app", "operator")
    try:
        view = await context.replayer.submit(
            consent_id, caller.role, from_sequence=body.from_sequence, since=body.since
        )
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
    visible_consent(context, caller, consent_id)
    view = context.replayer.store.get(replay_id)
    if view.consent_id != consent_id:
        raise not_found("replay", replay_id)
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
    visible_consent(context, caller, consent_id)
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
    sent. Asked again while that snapshot is still pending, the answer is the same snapshot.
    409 for a consent that is not active and ongoing.
    """
    visible_consent(context, caller, consent_id)
    caller.require("app", "operator")
    view = context.transfers.request_snapshot(consent_id)
    response.headers["Location"] = f"/v1/transfers/{view.transfer_id}"
    return TransferResponse.of(view, context.settings.public_api_url())


@router.get("/consents/{consent_id}/transfers", tags=["transfers"])
def list_transfers(consent_id: ConsentId, context: Context, caller: Caller) -> TransferListResponse:
    """A consent's transfers, oldest first: an app sees its own consents', others any."""
    visible_consent(context, caller, consent_id)
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
        raise not_found("transfer", transfer_id)
    return view
