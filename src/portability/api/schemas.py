"""Response bodies of the consent API (the request bodies are in :mod:`.requests`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from portability.consent import AppView, ConsentView
from portability.consent.models import (
    ConsentMode,
    ConsentStatus,
    ReplayState,
    ReviewStatus,
    TransferKind,
    TransferState,
)
from portability.consent.replays import ReplayView
from portability.consent.transfer_requests import TransferView, download_url
from portability.wire.records import Category, DeliveryMode, RemovalReason

__all__ = [
    "AppListResponse",
    "AppRegistrationResponse",
    "AppResponse",
    "ConsentListResponse",
    "ConsentResponse",
    "ConsentStatusResponse",
    "ReplayResponse",
    "SecretRotationResponse",
    "TransferListResponse",
    "TransferResponse",
]


class AppResponse(BaseModel):
    """An app as the API shows it (never its secrets or key)."""

    app_id: str
    name: str
    use_case: str
    webhook_url: str = Field(
        description="Where webhooks are POSTed; empty for a poll app without one."
    )
    delivery_mode: DeliveryMode = Field(
        description="webhook: events are POSTed to webhook_url; poll: read from the app's feed."
    )
    requested_scopes: list[Category]
    approved_scopes: list[Category]
    review_status: ReviewStatus
    review_reason: str | None
    enabled: bool
    created_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        description="While set, an earlier signing secret still signs deliveries (the last "
        "one stops then)."
    )
    previous_secrets_expire_at: list[datetime] = Field(
        default_factory=list,
        description="When each earlier signing secret still signing stops, newest first "
        "(at most two: three secrets sign at once, at most).",
    )

    @classmethod
    def of(cls, view: AppView) -> AppResponse:
        """From a store view."""
        return cls(
            app_id=view.app_id,
            name=view.name,
            use_case=view.use_case,
            webhook_url=view.webhook_url,
            delivery_mode=view.delivery_mode,
            requested_scopes=list(view.requested_scopes),
            approved_scopes=list(view.approved_scopes),
            review_status=view.review_status,
            review_reason=view.review_reason,
            enabled=view.enabled,
            created_at=view.created_at,
            previous_secret_expires_at=view.previous_secret_expires_at,
            previous_secrets_expire_at=list(view.secrets.previous_ends),
        )


class AppListResponse(BaseModel):
    """Apps, oldest registration first."""

    apps: list[AppResponse]


class AppRegistrationResponse(BaseModel):
    """The new app, its API key and its webhook signing secret: shown this once only."""

    app: AppResponse
    api_key: str = Field(description="Bearer token of the app (`pk_...`); stored only hashed.")
    signing_secret: str = Field(description="Standard Webhooks secret (`whsec_...`).")


class SecretRotationResponse(BaseModel):
    """The app's new signing secret; the ones before it sign too until their overlaps end."""

    app_id: str
    signing_secret: str = Field(description="The new Standard Webhooks secret (`whsec_...`).")
    previous_secret_expires_at: datetime | None = Field(
        description="When the secret this rotation replaced stops signing (None: at once)."
    )
    previous_secrets_expire_at: list[datetime] = Field(
        default_factory=list,
        description="When each earlier secret still signing stops, newest first.",
    )


class ConsentResponse(BaseModel):
    """A consent's current state."""

    consent_id: str
    user_id: str
    app_id: str
    categories: list[Category]
    mode: ConsentMode
    status: ConsentStatus
    granted_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    removal_reason: RemovalReason | None
    user_region: str | None
    updated_at: datetime
    version: int
    snapshot_epoch: int = Field(
        description="0: deltas only. n > 0: the latest snapshot asked for (1 at the grant, "
        "one more per POST /v1/consents/{consent_id}/snapshots)."
    )

    @classmethod
    def of(cls, view: ConsentView) -> ConsentResponse:
        """From a store view."""
        return cls(
            consent_id=view.consent_id,
            user_id=view.user_id,
            app_id=view.app_id,
            categories=list(view.categories),
            mode=view.mode,
            status=view.status,
            granted_at=view.granted_at,
            expires_at=view.expires_at,
            revoked_at=view.revoked_at,
            removal_reason=view.removal_reason,
            user_region=view.user_region,
            updated_at=view.updated_at,
            version=view.version,
            snapshot_epoch=view.snapshot_epoch,
        )


class ConsentListResponse(BaseModel):
    """Consents, oldest grant first."""

    consents: list[ConsentResponse]


class ConsentStatusResponse(BaseModel):
    """What a user or app asks about a consent: is it on, and is data arriving."""

    consent_id: str
    state: ConsentStatus
    removal_reason: RemovalReason | None
    categories: list[Category]
    mode: ConsentMode
    delivery_status_available: bool = Field(
        description="False when this server does not follow the delivery.status topic "
        "(no Kafka configured): the delivery fields are then null."
    )
    last_delivered_at: datetime | None
    last_sequence: int | None = Field(description="Sequence of the last delivered delta.")
    failing: bool | None = Field(description="Whether the latest delivery attempt failed.")
    failure_reason: str | None
    last_http_status: int | None
    last_response: str | None = Field(
        default=None, description="First 4 KB of the latest failed response's body."
    )
    endpoint_disabled: bool | None = Field(
        default=None,
        description="The app's endpoint was disabled (410 Gone, or failing too long); "
        "deliveries resume when the app sets a new webhook URL.",
    )
    snapshot_epoch: int = Field(
        default=0,
        description="The consent's latest snapshot (0: none; 1 at the grant, one more per resync).",
    )
    snapshot_delivered: bool | None = Field(
        default=None,
        description="Whether that snapshot's last page was delivered (its deltas then flow); "
        "null without a snapshot or without delivery status.",
    )


class ReplayResponse(BaseModel):
    """A replay request and how far it got."""

    replay_id: str
    consent_id: str
    app_id: str
    state: ReplayState = Field(description="pending, running, done or failed.")
    from_sequence: int | None
    since: datetime | None
    deltas_found: int = Field(description="Deltas of the consent in range found on the topic.")
    deltas_sent: int = Field(description="Of those, delivered (answered 2xx) so far.")
    requests: int = Field(description="Webhook requests made, retries included.")
    first_sequence: int | None = Field(
        description="Lowest sequence found: above from_sequence when older deltas are beyond "
        "the topic's retention (7 days)."
    )
    last_sequence: int | None = Field(description="Highest sequence found.")
    last_error: str | None = Field(
        description="Why the replay failed, or the last failure it retried past."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, view: ReplayView) -> ReplayResponse:
        """From a store view."""
        return cls(
            replay_id=view.replay_id,
            consent_id=view.consent_id,
            app_id=view.app_id,
            state=view.state,
            from_sequence=view.from_sequence,
            since=view.since,
            deltas_found=view.deltas_found,
            deltas_sent=view.deltas_sent,
            requests=view.requests,
            first_sequence=view.first_sequence,
            last_sequence=view.last_sequence,
            last_error=view.last_error,
            created_at=view.created_at,
            started_at=view.started_at,
            finished_at=view.finished_at,
        )


class TransferResponse(BaseModel):
    """A transfer: a one-time consent's archive, or an ongoing consent's snapshot."""

    transfer_id: str
    consent_id: str
    app_id: str
    kind: TransferKind = Field(
        description="archive (a zip to download) or snapshot (portability.snapshot pages, "
        "then the deltas; ready once its pages are on their way)."
    )
    snapshot_epoch: int | None = Field(description="The consent's snapshot epoch (snapshots).")
    categories: list[Category]
    state: TransferState = Field(
        description="pending, in_progress, ready (download until expires_at), expired, "
        "cancelled or failed."
    )
    failure_reason: str | None
    download_url: str | None = Field(description="Where to download the archive when ready.")
    size_bytes: int | None
    sha256: str | None = Field(description="SHA-256 of the archive, to check the download.")
    record_count: int | None
    policy_version: str | None
    created_at: datetime
    started_at: datetime | None
    ready_at: datetime | None
    expires_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, view: TransferView, base_url: str) -> TransferResponse:
        """From a store view; ``base_url`` is the API's public URL."""
        return cls(
            transfer_id=view.transfer_id,
            consent_id=view.consent_id,
            app_id=view.app_id,
            kind=view.kind,
            snapshot_epoch=view.snapshot_epoch,
            categories=list(view.categories),
            state=view.state,
            failure_reason=view.failure_reason,
            download_url=(
                download_url(base_url, view.transfer_id) if view.state == "ready" else None
            ),
            size_bytes=view.size_bytes,
            sha256=view.sha256,
            record_count=view.record_count,
            policy_version=view.policy_version,
            created_at=view.created_at,
            started_at=view.started_at,
            ready_at=view.ready_at,
            expires_at=view.expires_at,
            finished_at=view.finished_at,
        )


class TransferListResponse(BaseModel):
    """A consent's transfers, oldest first."""

    transfers: list[TransferResponse]
