"""The Kafka side of :class:`~portability.settings.Settings`: where the brokers are, how the
clients wait on them, and where the embedded broker keeps its log.

A group of its own so that ``settings.py`` stays one readable page. The embedded broker (Tansu)
stores in memory (lost when it stops) or in an S3 bucket (survives a crash and a restart); its
S3 endpoint and credentials come from the ``PORTABILITY_BROKER_S3_*`` settings or, where those
are unset, from the standard ``AWS_*`` environment, and reach the Tansu process through its
environment only, never its command line or a log.
"""

from __future__ import annotations

from typing import Final

from pydantic import Field, PositiveInt, SecretStr, field_validator
from pydantic_settings import BaseSettings

from portability.settings_types import check_bootstrap, check_broker_storage, check_s3_endpoint

__all__ = ["MEMORY_STORAGE", "BrokerSettings"]

MEMORY_STORAGE: Final = "memory://tansu/"


class BrokerSettings(BaseSettings):
    """Kafka bootstrap, client group timeouts and the embedded broker's storage."""

    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (host:port,...). Unset: start the embedded broker.",
    )
    kafka_fetch_max_wait_ms: PositiveInt = Field(
        default=100,
        description="Longest a fetch waits for data; bounds the idle latency of every hop.",
    )
    # A crash's partitions resume a few seconds after the session (bench failover); 6000 is
    # the least Apache Kafka accepts by default (group.min.session.timeout.ms).
    kafka_session_timeout_ms: PositiveInt = 6_000
    kafka_heartbeat_interval_ms: PositiveInt = 1_000
    kafka_rebalance_timeout_ms: PositiveInt = 5_000
    broker_storage: str = Field(
        default=MEMORY_STORAGE,
        description=(
            "Where the embedded broker keeps topics and group offsets: memory://tansu/ (lost "
            "when it stops) or s3://BUCKET/ (an existing bucket of an S3-compatible store; "
            "survives a crash)."
        ),
    )
    broker_s3_endpoint: str | None = Field(
        default=None,
        description="URL of the S3-compatible store (http:// allowed). Unset: AWS_ENDPOINT, "
        "else Amazon S3.",
    )
    broker_s3_region: str | None = Field(
        default=None, description="S3 region. Unset: AWS_DEFAULT_REGION."
    )
    broker_s3_access_key_id: str | None = Field(
        default=None, description="S3 access key id. Unset: AWS_ACCESS_KEY_ID."
    )
    broker_s3_secret_access_key: SecretStr | None = Field(
        default=None, description="S3 secret access key. Unset: AWS_SECRET_ACCESS_KEY."
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_is_host_ports(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # empty is unset (the API then runs without Kafka)
        return check_bootstrap(value)

    @field_validator("broker_storage")
    @classmethod
    def _storage_is_memory_or_s3(cls, value: str) -> str:
        return check_broker_storage(value)

    @field_validator("broker_s3_endpoint")
    @classmethod
    def _endpoint_is_http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return check_s3_endpoint(value)

    def broker_environment(self) -> dict[str, str]:
        """What the embedded broker's process adds to its environment for its storage.

        Only the settings given: the ``AWS_*`` variables of this process pass through as
        they are. Tansu's S3 client (Rust ``object_store``) refuses a plain-http endpoint
        unless ``AWS_ALLOW_HTTP`` is set, so a local store (moto, MinIO) needs it.
        """
        given = {
            "AWS_ENDPOINT": self.broker_s3_endpoint,
            "AWS_DEFAULT_REGION": self.broker_s3_region,
            "AWS_ACCESS_KEY_ID": self.broker_s3_access_key_id,
            "AWS_SECRET_ACCESS_KEY": (
                None
                if self.broker_s3_secret_access_key is None
                else self.broker_s3_secret_access_key.get_secret_value()
            ),
        }
        environment = {name: value for name, value in given.items() if value}
        if self.broker_s3_endpoint is not None and self.broker_s3_endpoint.startswith("http:"):
            environment["AWS_ALLOW_HTTP"] = "true"
        return environment
