"""Response bodies of the message log's routes (:mod:`.message_routes`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from portability.messages.attempt_entries import AttemptResult
from portability.messages.queries import AttemptView, MessageView

__all__ = [
    "AttemptOutcomeResponse",
    "AttemptResponse",
    "MessageDetailResponse",
    "MessageListResponse",
    "MessageResponse",
    "SourceResponse",
]


class SourceResponse(BaseModel):
    """Where one of the message's records was read: what a resend reads again."""

    topic: str
    partition: int
    offset: int


class MessageResponse(BaseModel):
    """One webhook message (or test event): what it carried, and how its attempts went.

    It holds ids, sizes and hashes, never a record's contents.
    """

    message_id: str = Field(description="The webhook-id header: the same on every attempt.")
    app_id: str
    consent_id: str = Field(description="Empty for a test event.")
    user_id: str = Field(description="Empty for a test event.")
    event_type: str
    endpoint_url: str = Field(description="Where its first attempt went.")
    first_sequence: int | None
    last_sequence: int | None
    snapshot_epoch: int | None
    removal_reason: str | None
    size: int = Field(description="Body bytes.")
    body_sha256: str = Field(description="SHA-256 of the body, hex: a resend sends the same.")
    record_count: int
    sources: list[SourceResponse]
    created_at: datetime = Field(description="Its first attempt.")
    last_attempt_at: datetime
    attempts: int
    outcome: str = Field(description="delivered once any attempt was answered 2xx, else failing.")
    delivered_at: datetime | None
    last_status: int | None
    last_reason: str

    @classmethod
    def of(cls, view: MessageView) -> MessageResponse:
        return cls(
            message_id=view.message_id,
            app_id=view.app_id,
            consent_id=view.consent_id,
            user_id=view.user_id,
            event_type=view.event_type,
            endpoint_url=view.endpoint_url,
            first_sequence=view.first_sequence,
            last_sequence=view.last_sequence,
            snapshot_epoch=view.snapshot_epoch,
            removal_reason=view.removal_reason,
            size=view.size,
            body_sha256=view.body_sha256,
            record_count=view.record_count,
            sources=[SourceResponse(**source) for source in view.sources],
            created_at=view.created_at,
            last_attempt_at=view.last_attempt_at,
            attempts=view.attempts,
            outcome=view.outcome,
            delivered_at=view.delivered_at,
            last_status=view.last_status,
            last_reason=view.last_reason,
        )


class MessageListResponse(BaseModel):
    """A page of an app's messages, newest first."""

    messages: list[MessageResponse]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page (with the same filters); null on the "
        "last page."
    )


class AttemptResponse(BaseModel):
    """One attempt at a message: by the delivery worker, a resend or a test event."""

    origin: str = Field(description="worker, resend or test.")
    attempt: int = Field(description="1, 2, ... among the attempts of its origin.")
    attempted_at: datetime
    duration_ms: int
    ok: bool = Field(description="The endpoint answered 2xx.")
    status: int | None = Field(description="HTTP status; null when no answer came.")
    reason: str = Field(description="Why it failed; empty on success.")
    response_excerpt: str = Field(description="The start of a failed answer's body (1 KB).")
    endpoint_url: str

    @classmethod
    def of(cls, view: AttemptView) -> AttemptResponse:
        return cls(
            origin=view.origin,
            attempt=view.attempt,
            attempted_at=view.attempted_at,
            duration_ms=view.duration_ms,
            ok=view.ok,
            status=view.status,
            reason=view.reason,
            response_excerpt=view.response_excerpt,
            endpoint_url=view.endpoint_url,
        )


class MessageDetailResponse(MessageResponse):
    """A message and every attempt at it, oldest first."""

    attempt_log: list[AttemptResponse] = Field(description="Its attempts, oldest first.")


class AttemptOutcomeResponse(BaseModel):
    """The outcome of the attempt a resend or a test event made."""

    message_id: str = Field(description="The webhook-id the endpoint received.")
    origin: str = Field(description="resend or test.")
    attempt: int
    attempted_at: datetime
    endpoint_url: str
    ok: bool = Field(description="The endpoint answered 2xx.")
    status: int | None = Field(description="HTTP status; null when no answer came.")
    duration_ms: int
    reason: str = Field(description="Why it failed, in words to act on; empty on success.")
    response_excerpt: str
    logged: bool = Field(
        description="The attempt is on its way to the message log (false: the broker refused "
        "its entry; the attempt was made all the same)."
    )

    @classmethod
    def of(cls, result: AttemptResult) -> AttemptOutcomeResponse:
        return cls(
            message_id=result.message_id,
            origin=result.origin,
            attempt=result.attempt,
            attempted_at=result.attempted_at,
            endpoint_url=result.endpoint_url,
            ok=result.ok,
            status=result.status,
            duration_ms=result.duration_ms,
            reason=result.reason,
            response_excerpt=result.response_excerpt,
            logged=result.logged,
        )
