"""The API process's metrics: consumer lag (from its lag sampler), letters on the
dead-letter topic (from its dead-letter counter), consents and the outbox (from the consent
store, queried on each scrape).

Lag is exported by the API process only: every worker instance would otherwise sample the
same groups, multiplying the load on the brokers and the series in Prometheus. Names and
labels follow kafka_exporter where they overlap
(``kafka_consumergroup_lag{consumergroup,topic,partition}``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from portability.ops.lag_rules import Status
from portability.ops.metrics.families import Families, MetricSpec
from portability.ops.store_counts import read_store_counts

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from portability.ops.dead_letters.counts import DeadLetterCounter
    from portability.ops.lag import GroupLag, LagReport
    from portability.ops.lag_sampler import LagSampler

__all__ = [
    "LAG_SPECS",
    "LETTER_SPECS",
    "STORE_SPECS",
    "ApiStoreCollector",
    "DeadLetterCollector",
    "LagCollector",
]

log = logging.getLogger(__name__)

_GROUP = ("consumergroup",)
_PARTITION = ("consumergroup", "topic", "partition")

# Consumer lag, from the API process's lag sampler.
LAG_SPECS = (
    MetricSpec(
        "kafka_consumergroup_lag",
        "gauge",
        "Records the group has not consumed: end offset minus committed offset.",
        _PARTITION,
    ),
    MetricSpec(
        "kafka_consumergroup_lag_seconds",
        "gauge",
        "Age of the oldest record the group has not consumed (0 when caught up).",
        _PARTITION,
    ),
    MetricSpec(
        "kafka_consumergroup_lag_sum",
        "gauge",
        "Records the group has not consumed, over the topic's partitions.",
        ("consumergroup", "topic"),
    ),
    MetricSpec(
        "kafka_consumergroup_max_lag_seconds",
        "gauge",
        "Age of the oldest record the group has not consumed, over its partitions.",
        _GROUP,
    ),
    MetricSpec(
        "kafka_consumergroup_current_offset",
        "gauge",
        "The group's committed offset (absent when it has none).",
        _PARTITION,
    ),
    MetricSpec("kafka_consumergroup_members", "gauge", "Members of the group now.", _GROUP),
    MetricSpec(
        "kafka_topic_partition_current_offset",
        "gauge",
        "The partition's end offset (high watermark).",
        ("topic", "partition"),
    ),
    MetricSpec(
        "kafka_topic_partition_oldest_offset",
        "gauge",
        "The partition's log start offset.",
        ("topic", "partition"),
    ),
    MetricSpec(
        "portability_consumergroup_status",
        "gauge",
        "1 for the group's status (as `portability lag` judges it), 0 for the others.",
        ("consumergroup", "status"),
    ),
    MetricSpec(
        "portability_consumergroup_parked_records",
        "gauge",
        "Records on the group's PARKED partitions (parked retries waiting on purpose): in "
        "kafka_consumergroup_lag, left out of kafka_consumergroup_max_lag_seconds.",
        _GROUP,
    ),
    MetricSpec(
        "portability_consumergroup_parked_retry_due_timestamp_seconds",
        "gauge",
        "When the parked retry holding a PARKED partition is due (Unix seconds).",
        _PARTITION,
    ),
    MetricSpec(
        "portability_lag_sample_timestamp_seconds",
        "gauge",
        "When the lag was last sampled successfully (Unix seconds).",
    ),
    MetricSpec(
        "portability_lag_sample_ok",
        "gauge",
        "1 if the latest lag sample succeeded, 0 if Kafka could not be read.",
    ),
)

# Letters on the dead-letter topic, from the API process's dead-letter counter.
LETTER_SPECS = (
    MetricSpec(
        "portability_dead_letters",
        "gauge",
        "Letters on the dead-letter topic, by stage and app (app empty: unknown).",
        ("stage", "app"),
    ),
    MetricSpec(
        "portability_dead_letter_replays",
        "gauge",
        "Replay markers on the dead-letter topic (letters replayed).",
    ),
)

# The consent store, counted by the API process on each scrape.
STORE_SPECS = (
    MetricSpec(
        "portability_consents",
        "gauge",
        "Consents in the store by app, mode and status (status=active: active consents).",
        ("app", "mode", "status"),
    ),
    MetricSpec(
        "portability_outbox_pending",
        "gauge",
        "Consent-store changes not yet published by the outbox relay.",
    ),
    MetricSpec(
        "portability_consent_store_up",
        "gauge",
        "1 if the consent store answered this scrape's queries, else 0.",
    ),
)


class LagCollector(Collector):
    """The lag sampler's latest report, in kafka_exporter's names."""

    def __init__(self, sampler: LagSampler | None) -> None:
        self._sampler = sampler

    def collect(self) -> Iterable[Metric]:
        families = Families(LAG_SPECS)
        if self._sampler is None:
            return families.all()
        view = self._sampler.view
        families.add("portability_lag_sample_ok", [], 0 if view.error else 1)
        if view.latest is not None:
            families.add("portability_lag_sample_timestamp_seconds", [], view.latest.at)
            _lag_samples(view.latest, families)
        return families.all()


def _lag_samples(report: LagReport, families: Families) -> None:
    topics: dict[tuple[str, str], tuple[int, int]] = {}
    for group in report.groups:
        _group_samples(group, families)
        sums: dict[str, int] = {}
        for partition in group.partitions:
            sample, topic = partition.sample, partition.tp.topic
            labels = [group.group, topic, str(partition.tp.partition)]
            families.add("kafka_consumergroup_lag", labels, sample.lag)
            if sample.lag_seconds is not None:
                families.add("kafka_consumergroup_lag_seconds", labels, sample.lag_seconds)
            if sample.committed is not None:
                families.add("kafka_consumergroup_current_offset", labels, sample.committed)
            hold = sample.parked
            if partition.parked and hold is not None and hold.due_at is not None:
                due = "portability_consumergroup_parked_retry_due_timestamp_seconds"
                families.add(due, labels, hold.due_at)
            sums[topic] = sums.get(topic, 0) + sample.lag
            topics[(topic, str(partition.tp.partition))] = (sample.start, sample.end)
        for topic, lag in sorted(sums.items()):
            families.add("kafka_consumergroup_lag_sum", [group.group, topic], lag)
    for (topic, number), (start, end) in sorted(topics.items()):
        families.add("kafka_topic_partition_current_offset", [topic, number], end)
        families.add("kafka_topic_partition_oldest_offset", [topic, number], start)


def _group_samples(group: GroupLag, families: Families) -> None:
    for status in Status:
        families.add(
            "portability_consumergroup_status",
            [group.group, str(status)],
            1 if group.verdict.status is status else 0,
        )
    if group.members is not None:
        families.add("kafka_consumergroup_members", [group.group], group.members)
    if group.lag_seconds is not None:
        families.add("kafka_consumergroup_max_lag_seconds", [group.group], group.lag_seconds)
    families.add("portability_consumergroup_parked_records", [group.group], group.parked)


class DeadLetterCollector(Collector):
    """Letters on the dead-letter topic, as the API process's counter read them."""

    def __init__(self, counter: DeadLetterCounter | None) -> None:
        self._counter = counter

    def collect(self) -> Iterable[Metric]:
        families = Families(LETTER_SPECS)
        summary = None if self._counter is None else self._counter.summary
        if summary is None or not summary.following:
            return families.all()
        for (stage, app), count in sorted(summary.by_stage_app.items()):
            families.add("portability_dead_letters", [stage, app], count)
        families.add("portability_dead_letter_replays", [], summary.redeliveries)
        return families.all()


class ApiStoreCollector(Collector):
    """Consents and the outbox, counted in the consent store on each scrape."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterable[Metric]:
        families = Families(STORE_SPECS)
        try:
            counts = read_store_counts(self._engine)
        except SQLAlchemyError as error:
            log.warning("metrics: cannot count the consent store: %s", error)
            families.add("portability_consent_store_up", [], 0)
            return families.all()
        families.add("portability_consent_store_up", [], 1)
        for (app_id, mode, status), count in sorted(counts.consents.items()):
            families.add("portability_consents", [app_id, mode, status], count)
        families.add("portability_outbox_pending", [], counts.outbox_pending)
        return families.all()
