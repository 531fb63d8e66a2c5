"""The disclosure report's document: what went to which app, as ids, never contents.

One document serves the platform's privacy page (``GET /v1/users/{user_id}/disclosures``)
and the operator's export (``portability disclosures USER --json``), so both say the same
thing in the same words. :mod:`portability.messages.disclosures` fills it; the cursor of its
record page is encoded here, opaque to callers but stable: it names the last row returned by
its sort key, which never changes once a row is written.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from portability.messages.errors import MessagesError

__all__ = [
    "AppDisclosure",
    "ConsentSummary",
    "DisclosedRecord",
    "DisclosureCursorError",
    "DisclosureReport",
    "DisclosureRequestError",
    "RecordCursor",
    "RecordPage",
]


class DisclosureRequestError(MessagesError):
    """A report asked for with a cursor it did not hand out, or a limit out of range."""


class DisclosureCursorError(DisclosureRequestError):
    """A record page's cursor that no report handed out (or one damaged on the way)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class ConsentSummary(_Frozen):
    """One consent of the user for the app: what it allowed, and when and why it ended."""

    consent_id: str
    status: str = Field(description="active, revoked or expired.")
    mode: str = Field(description="ongoing or one_time.")
    categories: list[str] = Field(description="The categories it allowed.")
    granted_at: datetime
    ended_at: datetime | None = Field(description="When it was revoked or expired; null if active.")
    removal_reason: str | None = Field(
        description="Why it ended (user_revoked, app_revoked, expired, ...); null if active."
    )


class AppDisclosure(_Frozen):
    """Everything one app received about the user, summed up."""

    app_id: str
    app_name: str | None = Field(description="Its display name; null if the app is gone.")
    categories: list[str] = Field(description="Categories of the records it received.")
    records_by_category: dict[str, int] = Field(
        description="Distinct records it received, per category."
    )
    record_count: int = Field(description="Distinct records (category and record id).")
    delivery_count: int = Field(
        description="Record deliveries: a record sent in several messages (each change of it, "
        "a snapshot) counts once per message."
    )
    message_count: int = Field(description="Delivered webhook messages that carried them.")
    first_delivered_at: datetime | None
    last_delivered_at: datetime | None
    policy_versions: list[str] = Field(
        description="Versions of the privacy policy the records were filtered under."
    )
    consents: list[ConsentSummary] = Field(description="The user's consents for the app.")


class DisclosedRecord(_Frozen):
    """One record delivered to one app in one message."""

    delivered_at: datetime
    app_id: str
    consent_id: str
    category: str
    record_id: str
    operation: str = Field(description="upsert, delete or snapshot.")
    delta_id: str = Field(description="The delta's id; \"\" for a snapshot page's record.")
    sequence: int | None = Field(description="The consent's delta sequence; null in a snapshot.")
    message_id: str = Field(description="The webhook message (its webhook-id).")
    event_type: str
    policy_version: str


class RecordPage(_Frozen):
    """A page of the records disclosed, oldest delivery first."""

    items: list[DisclosedRecord]
    limit: int
    next_cursor: str | None = Field(
        description="Pass as cursor for the next page; null on the last page."
    )


class DisclosureReport(_Frozen):
    """Which apps received which of the user's records, when, and under which consents."""

    user_id: str
    generated_at: datetime
    apps: list[AppDisclosure] = Field(
        description="Apps that received records or hold a consent, earliest delivery first."
    )
    records: RecordPage | None = Field(
        default=None, description="The records themselves (ids), when asked for (records=true)."
    )

    @property
    def is_empty(self) -> bool:
        """Whether nothing was disclosed and no app holds a consent of the user."""
        return not self.apps


@dataclass(frozen=True, slots=True)
class RecordCursor:
    """Where a record page ends: the sort key of its last row.

    Rows are sorted by delivery time, then by their primary key, so the order is total and a
    page never repeats or skips a row that was there when the first page was read.
    """

    delivered_at: datetime
    message_id: str
    category: str
    record_id: str
    delta_id: str

    _PREFIX = "d1."

    def encode(self) -> str:
        """The opaque form handed to callers."""
        key = [
            self.delivered_at.isoformat(),
            self.message_id,
            self.category,
            self.record_id,
            self.delta_id,
        ]
        packed = json.dumps(key, separators=(",", ":")).encode()
        return self._PREFIX + base64.urlsafe_b64encode(packed).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> RecordCursor:
        """Read a cursor :meth:`encode` made.

        Raises:
            DisclosureCursorError: ``text`` is not one.
        """
        refused = DisclosureCursorError(
            f"cursor {text[:40]!r} was not handed out by this report: pass the next_cursor "
            "of the previous page unchanged, or leave it out for the first page"
        )
        if not text.startswith(cls._PREFIX):
            raise refused
        body = text[len(cls._PREFIX) :]
        try:
            key = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            stamp, message_id, category, record_id, delta_id = key
            delivered_at = datetime.fromisoformat(stamp)
        except (binascii.Error, ValueError, TypeError) as error:
            raise refused from error
        parts = (message_id, category, record_id, delta_id)
        if delivered_at.tzinfo is None or not all(isinstance(part, str) for part in parts):
            raise refused
        return cls(delivered_at, message_id, category, record_id, delta_id)
