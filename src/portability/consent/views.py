"""What the consent store hands out: frozen snapshots, safe to keep after the session ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from portability.consent.models import App, Consent, ConsentMode, ConsentStatus, ReviewStatus
from portability.consent.signing_secrets import SigningSecrets
from portability.sealing import SecretsKeys
from portability.wire.records import (
    AppRecord,
    Category,
    ConsentRecord,
    DeliveryMode,
    RemovalReason,
)

__all__ = ["AppView", "ConsentView"]


@dataclass(frozen=True, slots=True)
class AppView:
    """A registered app.

    Attributes:
        app_id: ``app_`` and 12 hex digits, unless the registrant chose it.
        name: Display name.
        webhook_url: Where deliveries are POSTed.
        secrets: The secrets that sign deliveries now, sealed as the store keeps them and
            opened on demand (:attr:`signing_secret`, :attr:`signing_secrets`); kept out of
            ``repr``.
        created_at: When the app was registered (aware UTC).
        version: Outbox id of the app's latest state, as published on the apps topic.
        use_case: What the app does with the data, as the developer described it.
        requested_scopes: Categories the app asked for.
        approved_scopes: Categories an operator approved (empty until approved).
        review_status: ``pending``, ``approved`` or ``rejected``.
        review_reason: The operator's reason, if given.
        enabled: Whether deliveries to the app may flow at all.
        delivery_mode: ``webhook`` (POSTed to ``webhook_url``) or ``poll`` (read from the
            app's pull feed; ``webhook_url`` may then be ``""``).
    """

    app_id: str
    name: str
    webhook_url: str
    secrets: SigningSecrets = field(repr=False)
    created_at: datetime
    version: int
    use_case: str = ""
    requested_scopes: tuple[Category, ...] = ()
    approved_scopes: tuple[Category, ...] = ()
    review_status: ReviewStatus = "approved"
    review_reason: str | None = None
    enabled: bool = True
    delivery_mode: DeliveryMode = "webhook"

    @classmethod
    def of(cls, app: App, keys: SecretsKeys | None = None) -> AppView:
        """Snapshot an ``App`` row; ``keys`` open its secrets when they are asked for."""
        return cls(
            app_id=app.app_id,
            name=app.name,
            webhook_url=app.webhook_url,
            secrets=SigningSecrets.of(app, keys),
            created_at=app.created_at,
            version=app.version,
            use_case=app.use_case,
            requested_scopes=_categories(app.requested_scopes),
            approved_scopes=_categories(app.approved_scopes),
            review_status=cast("ReviewStatus", app.review_status),
            review_reason=app.review_reason,
            enabled=app.enabled,
            delivery_mode=cast("DeliveryMode", app.delivery_mode),
        )

    @property
    def signing_secret(self) -> str:
        """The current Standard Webhooks secret (``whsec_<base64>``), opened with the keys."""
        return self.secrets.current()

    @property
    def signing_secrets(self) -> list[str]:
        """Every secret that signs deliveries now, in the clear: the current one first."""
        return self.secrets.opened()

    @property
    def previous_secret_expires_at(self) -> datetime | None:
        """When the last previous secret stops signing; None when only the current one signs."""
        return max(self.secrets.previous_ends, default=None)

    @property
    def can_receive(self) -> bool:
        """Whether deliveries may flow: approved and enabled."""
        return self.enabled and self.review_status == "approved"

    def to_record(self) -> AppRecord:
        """The record the apps topic carries for this state: its secrets sealed.

        Only a store not sealed yet still publishes clear secrets, in ``signing_secrets``.
        """
        return AppRecord(
            app_id=self.app_id,
            name=self.name,
            webhook_url=self.webhook_url,
            signing_secrets=self.secrets.clear_values(),
            enabled=self.can_receive,
            version=self.version,
            sealed_signing_secrets=self.secrets.sealed_values(),
            delivery_mode=self.delivery_mode,
        )

    def to_sending_record(self) -> AppRecord:
        """This state as the sender needs it, its secrets opened: for memory only, never a topic."""
        return AppRecord(
            app_id=self.app_id,
            name=self.name,
            webhook_url=self.webhook_url,
            signing_secrets=self.signing_secrets,
            enabled=self.can_receive,
            version=self.version,
            sealed_signing_secrets=[],
            delivery_mode=self.delivery_mode,
        )


@dataclass(frozen=True, slots=True)
class ConsentView:
    """One consent's current state.

    Attributes:
        consent_id: ``cns_`` and 16 hex digits.
        user_id: The data subject.
        app_id: The recipient app.
        categories: Granted categories, deduplicated, in ``CATEGORIES`` order.
        mode: ``one_time`` or ``ongoing``.
        status: ``active``, ``revoked`` or ``expired``.
        granted_at: When it was granted (aware UTC, millisecond precision).
        expires_at: When it stops, if it does.
        revoked_at: When the user revoked it, if they did.
        updated_at: Time of the latest change.
        version: Outbox id of this state, as published on the consents topic.
        removal_reason: Why the consent stopped (set with revoked or expired).
        user_region: The user's ISO 3166-1 country when granted (None: not recorded).
        snapshot_epoch: 0: deltas only. n > 0: snapshot n (1 the initial one, more after
            resyncs) comes before the deltas matched while it is current.
        snapshot_position: Where snapshot ``snapshot_epoch`` hands over to the deltas (an
            offset of the user's ``account.changes`` partition); None until it is published.
        snapshot_last_page_offset: Offset of its last page on ``notifications``.
    """

    consent_id: str
    user_id: str
    app_id: str
    categories: tuple[Category, ...]
    mode: ConsentMode
    status: ConsentStatus
    granted_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    updated_at: datetime
    version: int
    removal_reason: RemovalReason | None = None
    user_region: str | None = None
    snapshot_epoch: int = 0
    snapshot_position: int | None = None
    snapshot_last_page_offset: int | None = None

    @classmethod
    def of(cls, consent: Consent) -> ConsentView:
        """Snapshot a ``Consent`` row."""
        return cls(
            consent_id=consent.consent_id,
            user_id=consent.user_id,
            app_id=consent.app_id,
            categories=tuple(consent.category_list),
            # The service writes only these values; the columns are plain strings.
            mode=cast("ConsentMode", consent.mode),
            status=cast("ConsentStatus", consent.status),
            granted_at=consent.granted_at,
            expires_at=consent.expires_at,
            revoked_at=consent.revoked_at,
            updated_at=consent.updated_at,
            version=consent.version,
            removal_reason=cast("RemovalReason | None", consent.removal_reason),
            user_region=consent.user_region,
            snapshot_epoch=consent.snapshot_epoch,
            snapshot_position=consent.snapshot_position,
            snapshot_last_page_offset=consent.snapshot_last_page_offset,
        )

    @property
    def is_active(self) -> bool:
        """Whether the consent is in force (status ``active``)."""
        return self.status == "active"

    def to_record(self) -> ConsentRecord:
        """The record the consents topic carries for this state."""
        return ConsentRecord(
            consent_id=self.consent_id,
            user_id=self.user_id,
            app_id=self.app_id,
            categories=list(self.categories),
            mode=self.mode,
            status=self.status,
            granted_at=self.granted_at,
            expires_at=self.expires_at,
            revoked_at=self.revoked_at,
            version=self.version,
            removal_reason=self.removal_reason,
            snapshot_epoch=self.snapshot_epoch,
            snapshot_position=self.snapshot_position,
            snapshot_last_page_offset=self.snapshot_last_page_offset,
        )


def _categories(stored: str) -> tuple[Category, ...]:
    return cast("tuple[Category, ...]", tuple(stored.split(","))) if stored else ()
