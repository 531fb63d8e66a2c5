"""Request bodies of the consent API: strict, so a value is taken only as its JSON type.

Lax parsing would read ``"3"`` as the number 3, ``1`` or ``"true"`` as true and a number as
a Unix time: a client's type mistake would then be stored as a guess instead of refused.
Every body model validates in strict mode; a time is an ISO 8601 string with a time zone
(strict mode alone would refuse the strings too, since FastAPI validates parsed JSON, not
JSON text). The 422 messages of type mistakes are worded in :mod:`portability.api.errors`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from portability.api.errors import shown
from portability.consent.models import ConsentMode
from portability.wire.records import DeliveryMode

__all__ = [
    "ID_PATTERN",
    "AppRegistrationRequest",
    "DeliveryModeUpdate",
    "GrantRequest",
    "ReplayRequest",
    "ReviewRequest",
    "SecretRotationRequest",
    "WebhookUpdate",
]

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
_TEXT = r"^[^\x00-\x1f\x7f]*$"  # printable: no control characters (PostgreSQL refuses NUL)
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")

Scope = Literal["profile", "post", "follow", "activity", "direct_message", "all"]


def _iso_time(value: Any) -> Any:
    """Let through only ISO 8601 strings (and datetimes built in Python) to the parser."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_TIME.match(value)):
        return value
    raise ValueError(
        f"must be an ISO 8601 time with a time zone, as a string such as "
        f'"2026-11-23T09:00:00Z"; got {shown(value)}'
    )


Moment = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_iso_time)]
"""A time: an ISO 8601 string with a time zone (not a number, not a naive time)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AppRegistrationRequest(_Body):
    """A developer registers an app; an operator then reviews it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Archive Pal",
                    "use_case": "Keeps a private, searchable backup of the user's posts.",
                    "webhook_url": "https://archivepal.example/webhooks/portability",
                    "requested_scopes": ["post", "profile"],
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200, pattern=_TEXT)
    use_case: str = Field(
        min_length=1,
        max_length=2000,
        pattern=_TEXT,
        description="What the app does with each scope it requests (reviewed by an operator).",
    )
    webhook_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        pattern=_TEXT,
        description="An http(s) URL with a host; required for delivery_mode webhook, optional "
        "for poll.",
    )
    requested_scopes: list[Scope] = Field(min_length=1, max_length=6)
    delivery_mode: DeliveryMode = Field(
        default="webhook",
        description="webhook: events are POSTed to webhook_url; poll: the app reads them from "
        "GET /v1/apps/{app_id}/feed.",
    )


class WebhookUpdate(_Body):
    """A new webhook URL for an app; a disabled endpoint starts afresh with it."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"webhook_url": "https://archivepal.example/hooks/v2"}]},
    )

    webhook_url: str = Field(
        min_length=1, max_length=2048, pattern=_TEXT, description="An http(s) URL with a host."
    )


class DeliveryModeUpdate(_Body):
    """How the app receives from now on: webhooks (with a URL) or its pull feed."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"delivery_mode": "poll"},
                {"delivery_mode": "webhook", "webhook_url": "https://archivepal.example/hooks"},
            ]
        },
    )

    delivery_mode: DeliveryMode
    webhook_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        pattern=_TEXT,
        description="An http(s) URL with a host: switching to webhook needs one, this or the "
        "app's current one.",
    )


class SecretRotationRequest(_Body):
    """Optional: names the rotation, so that sending it again changes nothing."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"idempotency_key": "rotate-2026-11-23"}]},
    )

    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=_TEXT,
        description="The same key again returns the secret that rotation made (while it is "
        "current) and rotates nothing; the Idempotency-Key header is the same.",
    )


class ReviewRequest(_Body):
    """An operator's decision on an app."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"decision": "approve", "approved_scopes": ["post"]},
                {"decision": "reject", "reason": "The use case does not need direct messages."},
            ]
        },
    )

    decision: Literal["approve", "reject"]
    approved_scopes: list[Scope] | None = Field(
        default=None,
        min_length=1,
        max_length=6,
        description="On approval, a subset of the requested scopes; default all requested.",
    )
    reason: str | None = Field(
        default=None, max_length=2000, pattern=_TEXT, description="Required to reject."
    )


class GrantRequest(_Body):
    """The platform, acting for a user, grants an app a consent."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u00000042",
                    "user_region": "DE",
                    "app_id": "app_5c2a0e1f9b3d",
                    "categories": ["post", "profile"],
                    "mode": "ongoing",
                    "expires_at": "2027-01-01T00:00:00Z",
                }
            ]
        },
    )

    user_id: str = Field(min_length=1, max_length=200, pattern=_TEXT)
    user_region: str = Field(
        pattern=r"^[A-Za-z]{2}$",
        description="The user's ISO 3166-1 alpha-2 country; only the EEA and GB are served.",
    )
    app_id: str = Field(pattern=ID_PATTERN)
    categories: list[Scope] | Literal["all"] = Field(
        description='Categories, or "all" for the full archive.'
    )
    mode: ConsentMode = "ongoing"
    expires_at: Moment | None = None
    initial_snapshot: bool | None = Field(
        default=None,
        description="For an ongoing consent: send the user's current records of the "
        "categories first (portability.snapshot pages), then the deltas. Default: true for "
        "ongoing, false for one_time (whose data comes as an archive).",
    )

    @field_validator("categories", mode="wrap")
    @classmethod
    def _one_message(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # pydantic reports a union's refusal once per member ("should be a list", "should be
        # 'all'"); one sentence says what the field takes.
        try:
            return handler(value)
        except ValidationError as error:
            raise ValueError(
                "must be an array of categories (profile, post, follow, activity, "
                f'direct_message), e.g. ["post", "profile"], or "all"; got {shown(value)}'
            ) from error


class ReplayRequest(_Body):
    """Which of a consent's deltas to deliver again: exactly one of the two fields."""

    model_config = ConfigDict(
        json_schema_extra={
            "minProperties": 1,
            "maxProperties": 1,
            "examples": [{"from_sequence": 17}, {"since": "2026-11-23T09:00:00Z"}],
        },
    )

    from_sequence: int | None = Field(
        default=None,
        ge=1,
        le=2**62,
        description="Replay deltas with this sequence and above (e.g. the first one missing).",
    )
    since: Moment | None = Field(
        default=None,
        description="Replay deltas the pipeline produced at or after this time "
        "(ISO 8601 with a time zone).",
    )

    @field_validator("since")
    @classmethod
    def _utc(cls, since: datetime | None) -> datetime | None:
        if since is None:
            return None
        try:
            return since.astimezone(UTC)
        except OverflowError as error:
            raise ValueError("since is out of range: give a time within the last 7 days") from error

    @model_validator(mode="after")
    def _exactly_one(self) -> ReplayRequest:
        if (self.from_sequence is None) == (self.since is None):
            raise ValueError(
                'give exactly one of from_sequence (e.g. {"from_sequence": 17}) or since '
                '(e.g. {"since": "2026-11-23T09:00:00Z"})'
            )
        return self
