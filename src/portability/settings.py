"""One typed settings object, read from the environment (``PORTABILITY_*``) and CLI flags.

The defaults run the embedded mode with no configuration at all: an embedded broker, SQLite
in the data folder, the in-process schema registry.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from portability.settings_broker import BrokerSettings
from portability.settings_types import SecretUrl, check_database_url
from portability.wire.ingress import TimeWindow

__all__ = ["Settings"]


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "portability"


class Settings(BrokerSettings):
    """Everything a portability process can be told.

    Environment variables are the field names in upper case with the ``PORTABILITY_`` prefix,
    e.g. ``PORTABILITY_KAFKA_BOOTSTRAP=broker:9092``. Unknown ``PORTABILITY_*`` keys are an error
    so that a misspelled setting does not pass silently. The Kafka and embedded broker
    settings are declared in :class:`~portability.settings_broker.BrokerSettings`.
    """

    model_config = SettingsConfigDict(
        env_prefix="PORTABILITY_", extra="forbid", frozen=True, validate_default=True
    )

    database_url: SecretUrl | None = Field(
        default=None,
        description="SQLAlchemy URL of the consent store (its password is masked when printed). "
        "Unset: SQLite in data_dir.",
    )
    schema_registry_url: SecretUrl | None = Field(
        default=None,
        description="Confluent-compatible schema registry (credentials may be in the URL; masked "
        "when printed). Unset: the in-process registry.",
    )
    schema_subject_strategy: Literal["topic_name", "record_name", "topic_record_name"] = Field(
        default="topic_name",
        description=(
            "Registry subject of each schema, as Confluent's subject name strategies: "
            "topic_name '<topic>-value' (Confluent's default), record_name the record's full "
            "name (portability.v1.AccountChange), topic_record_name '<topic>-<full name>'."
        ),
    )
    data_dir: Path = Field(default_factory=_default_data_dir)
    topic_prefix: str = Field(default="", description="Prepended to every topic name.")
    partitions: PositiveInt = Field(
        default=6, description="Partitions of account.changes, consents and deliveries."
    )
    replication_factor: PositiveInt = 1
    matcher_group: str = "portability-matcher"
    delivery_group: str = "portability-delivery"
    state_group: str = Field(
        default="portability-state",
        description="Consumer group of the current-state view (its files: data_dir/state/).",
    )
    messages_group: str = Field(
        default="portability-messages",
        description="Consumer group of the message log's writer (delivery.log into the store).",
    )
    message_retention_days: PositiveInt = Field(
        default=30,
        description="Messages and their attempts older than this (by first attempt) are "
        "deleted from the message log.",
    )
    disclosure_retention_days: PositiveInt = Field(
        default=1095,
        description="Disclosed records (the disclosure report's rows) older than this (by "
        "delivery) are deleted.",
    )
    feed_retention_days: PositiveInt = Field(
        default=7,
        description="How long the pull feed (the feed topic's retention.ms) keeps poll-mode "
        "apps' events; an iterator older than this is stale (410).",
    )
    matcher_batch_max_records: PositiveInt = 5000
    delivery_concurrency: PositiveInt = Field(
        default=64, description="Webhook requests in flight at once, over all consents."
    )
    delivery_max_batch: PositiveInt = Field(
        default=100, description="Deltas of one consent coalesced into one request, at most."
    )
    delivery_timeout_s: float = Field(default=15.0, gt=0)
    delivery_connect_timeout_s: float = Field(default=5.0, gt=0)
    delivery_max_batch_bytes: PositiveInt = Field(
        default=1_048_576, description="Body size a coalesced request stays under, at most."
    )
    delivery_retry_schedule_s: list[float] = Field(
        default=[0, 5, 300, 1800, 7200, 18000, 36000, 36000],
        min_length=1,
        description=(
            "Wait before each attempt (the first is normally 0); after the last, the delivery "
            "is dead-lettered. As JSON in the environment, e.g. [0,5,300]."
        ),
    )
    delivery_retry_jitter: float = Field(
        default=0.2, ge=0, lt=1, description="Each wait varies by up to this fraction."
    )
    delivery_park_after_s: float = Field(
        default=30.0,
        ge=0,
        description=(
            "A wait at least this long parks the consent's deliveries on the retry topic "
            "instead of holding them (and the partition's offsets) in memory."
        ),
    )
    delivery_max_in_hand: PositiveInt = Field(
        default=20_000,
        description=(
            "Records the delivery worker holds in memory, read and neither finished nor "
            "parked, at most: beyond it, it reads no new deliveries until some finish."
        ),
    )
    delivery_max_parked: PositiveInt = Field(
        default=100_000,
        description=(
            "Parked records the delivery worker keeps in memory (about 2 KB each): beyond "
            "it, waiting parked consents are spilled (their records stay on the retry topic "
            "only, read back when due), down to half of it."
        ),
    )
    delivery_endpoint_concurrency: PositiveInt = Field(
        default=16, description="Requests in flight at once to one app's endpoint."
    )
    delivery_endpoint_rate_per_s: float = Field(
        default=0.0,
        ge=0,
        description="Requests a second started to one app's endpoint, at most (0: no limit).",
    )
    delivery_circuit_failures: PositiveInt = Field(
        default=10, description="Consecutive failures of an endpoint that open its circuit."
    )
    delivery_circuit_open_s: float = Field(
        default=30.0, gt=0, description="How long an open circuit waits before one probe."
    )
    delivery_disable_after_s: float = Field(
        default=3 * 86400.0,
        gt=0,
        description="An endpoint failing without a success for this long is disabled.",
    )
    delivery_retry_after_min_s: float = Field(
        default=1.0,
        ge=0,
        description="Shortest wait a 429/503 Retry-After is raised to (also negative values).",
    )
    delivery_retry_after_max_s: float = Field(
        default=3600.0,
        gt=0,
        description="Longest wait a 429/503 Retry-After is honoured for; longer is cut to this.",
    )
    development_mode: bool = Field(
        default=True,
        description=(
            "Development conveniences: webhook URLs may be plain http and loopback receivers "
            "are allowed. Set false in any shared deployment."
        ),
    )
    webhook_allow_loopback: bool = Field(
        default=True,
        description="Let webhooks go to loopback addresses. Unset: follows development_mode.",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description=(
            "Let webhooks go to private addresses (RFC 1918, CGNAT, IPv6 ULA), for on-premises "
            "receivers. Link-local, metadata, multicast and reserved addresses stay refused."
        ),
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535, description="0 picks a free port.")
    api_host: str = Field(default="127.0.0.1", description="Host the consent API listens on.")
    api_port: int = Field(
        default=8080, ge=0, le=65535, description="Port of the consent API (0: a free one)."
    )
    api_platform_token: SecretStr = Field(
        default=SecretStr("dev-platform-token"),
        min_length=16,
        description="Bearer token of the platform (acts for users). The default is for "
        "development only: set a long random value in any shared deployment.",
    )
    api_operator_token: SecretStr = Field(
        default=SecretStr("dev-operator-token"),
        min_length=16,
        description="Bearer token of operators (review apps, see everything). The default is "
        "for development only: set a long random value in any shared deployment.",
    )
    api_rate_limit_per_minute: PositiveInt = Field(
        default=1000, description="Requests a minute per app API key (token bucket)."
    )
    api_client_rate_limit_per_minute: PositiveInt = Field(
        default=30,
        description="Requests a minute per client address that carry no valid token "
        "(registration, refused tokens); token bucket, 429 with Retry-After.",
    )
    api_max_body_bytes: PositiveInt = Field(
        default=1_048_576,
        description="Largest request body the API reads; a larger one is refused (413) "
        "before it is read, or as soon as it passes the limit.",
    )
    api_forwarded_allow_ips: str = Field(
        default="127.0.0.1,::1",
        description="Reverse proxies whose X-Forwarded-For is trusted to name the client "
        "(comma-separated addresses or networks, '*' any): the per-client limit keys on it.",
    )
    api_sweep_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often the API server expires due consents and ends secret overlaps.",
    )
    secret_rotation_overlap_s: float = Field(
        default=86_400.0,
        ge=0,
        description="After a secret rotation, how long the previous secret keeps signing.",
    )
    secrets_key: SecretStr | None = Field(
        default=None,
        description=(
            "Keys sealing apps' signing secrets in the consent store and on the apps topic: "
            "'<id>:<base64url of 32 bytes>', comma-separated; the first seals, every one "
            "opens (portability secrets new-key). Unset: in development mode a key kept in "
            "data_dir/secrets.key (mode 0600); otherwise an error. Never printed."
        ),
    )
    snapshot_page_max_records: PositiveInt = Field(
        default=500,
        description="Records per portability.snapshot page, at most (and about "
        "DELIVERY_MAX_BATCH_BYTES).",
    )
    transfer_expiry_s: float = Field(
        default=4 * 86_400.0,
        gt=0,
        description="How long a one-time transfer's archive can be downloaded.",
    )
    api_public_url: str | None = Field(
        default=None,
        description="Base URL apps reach the API at (download links). Unset: api_host:api_port.",
    )
    lag_sample_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often the API process samples consumer lag (status page, metrics).",
    )
    lag_history_s: float = Field(
        default=900.0,
        gt=0,
        description="How far back the status page's lag chart reaches (kept in memory).",
    )
    lag_parked_overdue_s: float = Field(
        default=900.0,
        gt=0,
        description=(
            "A parked retry holding a deliveries.retry partition is PARKED until due, and a "
            "lag WARNING once due longer ago than this (status page, metrics)."
        ),
    )
    privacy_policy_path: Path | None = Field(
        default=None,
        description=(
            "The privacy policy file (YAML). Unset: the policy shipped with the package "
            "(policies/privacy-policy.yaml)."
        ),
    )
    privacy_policy_reload_s: float = Field(
        default=5.0,
        gt=0,
        description="How often a running matcher checks the policy file for a new version.",
    )
    ingress_earliest_occurred_at: datetime = Field(
        default=datetime(2000, 1, 1, tzinfo=UTC),
        description=(
            "A change whose occurred_at is earlier is dead-lettered (implausible_time): "
            "seconds written where milliseconds belong land in 1970."
        ),
    )
    ingress_max_ahead_s: float = Field(
        default=3600.0,
        gt=0,
        description=(
            "A change whose occurred_at is further ahead of its record's Kafka timestamp is "
            "dead-lettered (implausible_time): producer clock skew allowed, microseconds not."
        ),
    )
    log_level: str = "INFO"
    log_format: str = Field(default="text", pattern="^(text|json)$")

    @field_validator("database_url")
    @classmethod
    def _database_url_parses(cls, value: SecretUrl | None) -> SecretUrl | None:
        if value is None or not value.get_secret_value():
            return value  # empty is unset, as resolved_database_url() reads it
        return check_database_url(value)

    @field_validator("delivery_retry_schedule_s")
    @classmethod
    def _non_negative_waits(cls, schedule: list[float]) -> list[float]:
        if any(wait < 0 for wait in schedule):
            raise ValueError("waits of the retry schedule must not be negative")
        return schedule

    @field_validator("api_forwarded_allow_ips")
    @classmethod
    def _proxy_addresses(cls, proxies: str) -> str:
        # uvicorn would take a mistyped address as a literal name that never matches.
        for entry in (item.strip() for item in proxies.split(",")):
            try:
                if entry != "*":
                    ipaddress.ip_network(entry, strict=False)
            except ValueError as error:
                raise ValueError(
                    f"api_forwarded_allow_ips: {entry!r} is not an address or network; "
                    "give e.g. 10.0.0.5,10.1.0.0/16 or *"
                ) from error
        return proxies

    @model_validator(mode="before")
    @classmethod
    def _loopback_follows_development_mode(cls, data: Any) -> Any:
        """Unset ``webhook_allow_loopback`` takes ``development_mode``'s value (parsed alike)."""
        if isinstance(data, dict) and data.get("webhook_allow_loopback") is None:
            return {**data, "webhook_allow_loopback": data.get("development_mode", True)}
        return data

    @model_validator(mode="after")
    def _retry_after_bounds_ordered(self) -> Settings:
        if self.delivery_retry_after_min_s > self.delivery_retry_after_max_s:
            raise ValueError(
                f"delivery_retry_after_min_s ({self.delivery_retry_after_min_s}) is above "
                f"delivery_retry_after_max_s ({self.delivery_retry_after_max_s}): lower it"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_environment(cls, data: Any) -> Any:
        """pydantic-settings ignores unknown variables; a misspelled one must not pass silently."""
        known = {f"PORTABILITY_{name.upper()}" for name in cls.model_fields}
        unknown = sorted(k for k in os.environ if k.startswith("PORTABILITY_") and k not in known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; see docs/configuration.md")
        return data

    def ingress_window(self) -> TimeWindow:
        """Where a change's occurred_at may lie (:class:`~portability.wire.ingress.TimeWindow`)."""
        earliest = self.ingress_earliest_occurred_at
        if earliest.tzinfo is None:
            earliest = earliest.replace(tzinfo=UTC)
        return TimeWindow(earliest, timedelta(seconds=self.ingress_max_ahead_s))

    def public_api_url(self) -> str:
        """The API's base URL as apps see it, without a trailing slash."""
        if self.api_public_url:
            return self.api_public_url.rstrip("/")
        return f"http://{self.api_host}:{self.api_port}"

    def archive_dir(self) -> Path:
        """Where one-time transfer archives are written (shared by builders and the API)."""
        return self.data_dir / "archives"

    def resolved_database_url(self) -> str:
        """The consent store URL, defaulting to SQLite inside ``data_dir``."""
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.data_dir / 'consents.db'}"
