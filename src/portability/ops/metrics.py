"""Prometheus metrics of the pipeline's processes.

Every process serves ``/metrics`` (Prometheus text format; OpenMetrics when the scraper asks):

- a pipeline worker (``portability matcher``, ``worker``, ``relay``, ``pipeline``) on its Faust
  web port: what the matcher and the delivery worker count, each endpoint's circuit, the
  end-to-end latency (:func:`worker_registry`);
- the API process (``portability api``): consumer lag from its lag sampler, dead letters on
  the topic, consents and the outbox from the consent store (:func:`api_registry`);
- both: whether their outbox relay publishes or stands by (:class:`RelayCollector`).

Lag is exported by the API process only: every worker instance would otherwise sample the
same groups, multiplying the load on the brokers and the series in Prometheus.

Names and labels follow kafka_exporter where they overlap
(``kafka_consumergroup_lag{consumergroup,topic,partition}``), the rest is ``portability_*``.
The collectors read state that exists anyway (the matcher's and worker's stats, the endpoint
table, the lag sampler's latest report) when Prometheus scrapes; nothing on the hot paths
touches prometheus_client. Every collector yields all of its families on every scrape, with
no samples when it has nothing to say yet, so that the exported names are known up front
(:data:`SPECS`, checked against the dashboards and alert rules by the tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from portability.consent.outbox import running_relays
from portability.delivery.endpoints import CircuitState
from portability.matching.stats import DROP_REASONS
from portability.ops.lag_rules import Status
from portability.ops.store_counts import read_store_counts

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from portability.delivery import DeliveryWorker
    from portability.matching import Matcher
    from portability.ops.dead_letter_counts import DeadLetterCounter
    from portability.ops.lag import GroupLag, LagReport
    from portability.ops.lag_sampler import LagSampler
    from portability.transfers.builder import TransferBuilder
    from portability.transfers.state import StateView

__all__ = [
    "SPECS",
    "ApiStoreCollector",
    "DeadLetterCollector",
    "LagCollector",
    "MetricSpec",
    "PipelineCollector",
    "RelayCollector",
    "api_registry",
    "exported_names",
    "render",
    "worker_registry",
]

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric: its family name, type, labels and meaning (README's table)."""

    name: str  # the family name; a counter's samples add ``_total``
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()

    @property
    def sample_names(self) -> tuple[str, ...]:
        """The names PromQL sees."""
        if self.kind == "counter":
            return (f"{self.name}_total",)
        if self.kind == "histogram":
            return tuple(f"{self.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        return (self.name,)


_GROUP = ("consumergroup",)
_PARTITION = ("consumergroup", "topic", "partition")

# Consumer lag, from the API process's lag sampler.
_LAG_SPECS = (
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
_LETTER_SPECS = (
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
_STORE_SPECS = (
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

# The pipeline roles (matcher and delivery worker), in the worker processes.
_ROLE_SPECS = (
    MetricSpec(
        "portability_matcher_changes",
        "counter",
        "Account changes read, by outcome and reason: matched (a delta for at least one "
        "consent); dropped (no_consent, not_granted, withheld); dead_lettered here (a door "
        "fault: not_framed, unknown_schema_id, wrong_schema, no_key, bad_key, "
        "wrong_partition, no_value); refused (a body fault the state view dead-letters).",
        ("outcome", "reason"),
    ),
    MetricSpec(
        "portability_state_changes",
        "counter",
        "Account changes the current-state view read, by outcome and reason: applied; "
        "skipped (a door fault, the matcher's to letter; or an audience update); "
        "dead_lettered here (a body fault: undecodable, key_mismatch, implausible_time, "
        "reserved_field).",
        ("outcome", "reason"),
    ),
    MetricSpec(
        "portability_ingress_dead_letters",
        "counter",
        "Account changes dead-lettered for breaking the producer contract, by the stage "
        "that lettered them (matcher, state) and the fault.",
        ("stage", "reason"),
    ),
    MetricSpec(
        "portability_ingress_audience_hints_missing",
        "counter",
        "Activity on another user's post without the portability.audience header (or with "
        "a wrong one): the creator's figures miss it unless the actor holds a consent.",
    ),
    MetricSpec("portability_matcher_deltas", "counter", "Deltas written to deliveries."),
    MetricSpec("portability_matcher_consent_updates", "counter", "Consent records applied."),
    MetricSpec("portability_matcher_batches", "counter", "Batches matched and committed."),
    MetricSpec("portability_matcher_batch_seconds", "gauge", "Duration of the latest batch."),
    MetricSpec(
        "portability_matcher_consents",
        "gauge",
        "Active consents this matcher instance holds (its partitions' users).",
    ),
    MetricSpec(
        "portability_matcher_ready",
        "gauge",
        "1 once the instance holds partitions and has read their consents.",
    ),
    MetricSpec(
        "portability_privacy_policy_info",
        "gauge",
        "1, labelled with the version of the privacy policy this matcher applies now.",
        ("version",),
    ),
    MetricSpec(
        "portability_privacy_policy_refusals",
        "counter",
        "Edits of the privacy policy file refused (not valid, or new rules under the version "
        "in force): the version in force stays.",
    ),
    MetricSpec(
        "portability_deliveries",
        "counter",
        "Records finished, by app, kind (delta, notification) and outcome "
        "(delivered, dead_lettered).",
        ("app", "kind", "outcome"),
    ),
    MetricSpec(
        "portability_delivery_requests",
        "counter",
        "Webhook requests, by app and result (ok: a 2xx; failed: anything else).",
        ("app", "result"),
    ),
    MetricSpec(
        "portability_delivery_latency_seconds",
        "histogram",
        "End to end: from a change's occurred_at to its delta's 2xx from the app.",
    ),
    MetricSpec(
        "portability_delivery_retries",
        "counter",
        "Failed attempts scheduled for a retry.",
    ),
    MetricSpec(
        "portability_delivery_dropped",
        "counter",
        "Deltas dropped because their consent stopped (revoked, expired).",
    ),
    MetricSpec(
        "portability_delivery_parked",
        "counter",
        "Records copied to the retry topic (parked for a long wait).",
    ),
    MetricSpec(
        "portability_delivery_pending_records",
        "gauge",
        "Records read and not yet finished (delivered, dropped, dead-lettered).",
    ),
    MetricSpec(
        "portability_delivery_parked_records",
        "gauge",
        "Records waiting in parked lanes (their copies are on the retry topic).",
    ),
    MetricSpec(
        "portability_delivery_spilled_records",
        "gauge",
        "Parked records out of the worker's memory (spilled lanes: on the retry topic only).",
    ),
    MetricSpec(
        "portability_delivery_spilled",
        "counter",
        "Parked records let out of memory past PORTABILITY_DELIVERY_MAX_PARKED.",
    ),
    MetricSpec(
        "portability_delivery_reloaded",
        "counter",
        "Spilled records read back from the retry topic when their lane was due.",
    ),
    MetricSpec(
        "portability_delivery_reading_paused",
        "gauge",
        "1 while the worker reads no new deliveries because a bound is reached: reason "
        "in_hand (PORTABILITY_DELIVERY_MAX_IN_HAND, load) or parked "
        "(PORTABILITY_DELIVERY_MAX_PARKED, outages).",
        ("reason",),
    ),
    MetricSpec(
        "portability_delivery_retrying_consents",
        "gauge",
        "Consents whose next request is a retry (waiting in memory or parked).",
    ),
    MetricSpec(
        "portability_endpoint_circuit_state",
        "gauge",
        "1 for the circuit state of the app's endpoint (closed, open, half_open).",
        ("app", "state"),
    ),
    MetricSpec(
        "portability_endpoint_disabled",
        "gauge",
        "1 if the app's endpoint is disabled (410 Gone, or failing too long).",
        ("app",),
    ),
    MetricSpec(
        "portability_endpoint_consecutive_failures",
        "gauge",
        "Failures of the app's endpoint since its last success.",
        ("app",),
    ),
    MetricSpec(
        "portability_endpoints_disabled",
        "counter",
        "Endpoints this worker disabled.",
    ),
    MetricSpec(
        "portability_delivery_snapshots_delivered",
        "counter",
        "Snapshots whose last page this worker delivered (hand-overs to the deltas made).",
    ),
    MetricSpec(
        "portability_delivery_dropped_in_snapshot",
        "counter",
        "Deltas not sent because the consent's delivered snapshot already held their change.",
    ),
    MetricSpec(
        "portability_delivery_consents_awaiting_snapshot",
        "gauge",
        "Consents whose deltas wait for their snapshot's last page.",
    ),
    MetricSpec(
        "portability_snapshots",
        "counter",
        "Snapshot transfers this builder handled, by outcome: published (pages sent), "
        "retried (not takeable yet: the relay or the matcher behind; tried again).",
        ("outcome",),
    ),
    MetricSpec(
        "portability_dead_letters_written",
        "counter",
        "Records this process wrote to the dead-letter topic, by stage.",
        ("stage",),
    ),
)

# The outbox relays of the process (a pipeline role's, or the API's).
_RELAY_SPECS = (
    MetricSpec(
        "portability_outbox_relay_publishing",
        "gauge",
        "1 if the relay holds the consent store's publishing lock (it publishes), 0 while "
        "it stands by.",
        ("relay",),
    ),
)

SPECS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (*_LAG_SPECS, *_LETTER_SPECS, *_STORE_SPECS, *_ROLE_SPECS, *_RELAY_SPECS)
}
"""Every metric the processes export, by family name."""


class _Families:
    """The families of one scrape, filled by name; every one is exported, even empty."""

    def __init__(self, specs: Iterable[MetricSpec]) -> None:
        self._values: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        self._histograms: dict[str, HistogramMetricFamily] = {}
        for spec in specs:
            name, labels = spec.name, list(spec.labels)
            if spec.kind == "histogram":
                self._histograms[name] = HistogramMetricFamily(name, spec.help, labels=labels)
            elif spec.kind == "counter":
                self._values[name] = CounterMetricFamily(name, spec.help, labels=labels)
            else:
                self._values[name] = GaugeMetricFamily(name, spec.help, labels=labels)

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        self._values[name].add_metric(list(labels), value)

    def histogram(self, name: str, buckets: Iterable[tuple[float, int]], total: float) -> None:
        self._histograms[name].add_metric(
            [], [(_le(bound), count) for bound, count in buckets], total
        )

    def all(self) -> list[Metric]:
        return [*self._values.values(), *self._histograms.values()]


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``+Inf``, ``0.5``, ``300.0``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


# --- the pipeline roles ----------------------------------------------------------------------


class PipelineCollector(Collector):
    """The matcher's and the delivery worker's state, read when Prometheus scrapes.

    Takes getters because the roles are built when the worker starts, after the registry.
    """

    def __init__(
        self,
        matcher: Callable[[], Matcher | None],
        worker: Callable[[], DeliveryWorker | None],
        builder: Callable[[], TransferBuilder | None] = lambda: None,
        state_view: Callable[[], StateView | None] = lambda: None,
    ) -> None:
        self._matcher = matcher
        self._worker = worker
        self._builder = builder
        self._state_view = state_view

    def collect(self) -> Iterable[Metric]:
        families = _Families(_ROLE_SPECS)
        written = "portability_dead_letters_written"
        matcher = self._matcher()
        if matcher is not None:
            _matcher_samples(matcher, families)
            families.add(written, ["matcher"], matcher.stats.dead_lettered)
        worker = self._worker()
        if worker is not None:
            _delivery_samples(worker, families)
            _endpoint_samples(worker, families)
            families.add(written, ["delivery"], worker.stats.dead_lettered)
        view = self._state_view()
        if view is not None:
            _state_samples(view, families)
            families.add(written, ["state"], view.intake.stats.dead_lettered)
        builder = self._builder()
        if builder is not None:
            families.add("portability_snapshots", ["published"], builder.stats.snapshots_published)
            families.add("portability_snapshots", ["retried"], builder.stats.snapshots_retried)
        return families.all()


def _matcher_samples(matcher: Matcher, families: _Families) -> None:
    stats = matcher.stats
    changes = "portability_matcher_changes"
    families.add(changes, ["matched", ""], stats.changes_matched)
    for reason in DROP_REASONS:
        families.add(changes, ["dropped", reason], stats.dropped[reason])
    for fault, count in sorted(stats.dead_lettered_by_fault.items()):
        families.add(changes, ["dead_lettered", fault], count)
        families.add("portability_ingress_dead_letters", ["matcher", fault], count)
    for fault, count in sorted(stats.refused_by_fault.items()):
        families.add(changes, ["refused", fault], count)
    families.add("portability_matcher_deltas", [], stats.deltas_emitted)
    families.add("portability_matcher_consent_updates", [], stats.consent_updates)
    families.add("portability_matcher_batches", [], stats.batches)
    families.add("portability_matcher_batch_seconds", [], stats.last_batch_seconds)
    families.add("portability_matcher_consents", [], matcher.consents_held)
    families.add("portability_matcher_ready", [], 1 if matcher.ready else 0)
    families.add("portability_privacy_policy_info", [matcher.policy.version], 1)
    families.add("portability_privacy_policy_refusals", [], matcher.policy_source.refusals)


def _state_samples(view: StateView, families: _Families) -> None:
    intake = view.intake.stats
    changes = "portability_state_changes"
    families.add(changes, ["applied", ""], view.stats.changes_applied)
    families.add(changes, ["skipped", "audience_update"], intake.updates_skipped)
    for fault, count in sorted(intake.skipped_at_door.items()):
        families.add(changes, ["skipped", fault], count)
    for fault, count in sorted(intake.dead_lettered_by_fault.items()):
        families.add(changes, ["dead_lettered", fault], count)
        families.add("portability_ingress_dead_letters", ["state", fault], count)
    families.add("portability_ingress_audience_hints_missing", [], intake.audience_hints_missing)


def _delivery_samples(worker: DeliveryWorker, families: _Families) -> None:
    stats = worker.stats
    for (app_id, kind, outcome), count in sorted(stats.finished_by_app.items()):
        families.add("portability_deliveries", [app_id, kind, outcome], count)
    for (app_id, ok), count in sorted(stats.requests_by_app.items()):
        result = "ok" if ok else "failed"
        families.add("portability_delivery_requests", [app_id, result], count)
    latency = stats.latency
    families.histogram(
        "portability_delivery_latency_seconds", latency.cumulative(), latency.total_s
    )
    families.add("portability_delivery_retries", [], stats.retries)
    families.add("portability_delivery_dropped", [], stats.dropped_stopped_consent)
    families.add("portability_delivery_parked", [], stats.parked)
    families.add("portability_delivery_pending_records", [], worker.pending)
    families.add("portability_delivery_parked_records", [], worker.parked)
    families.add("portability_delivery_spilled_records", [], worker.spilled)
    families.add("portability_delivery_spilled", [], stats.spilled)
    families.add("portability_delivery_reloaded", [], stats.reloaded)
    paused = worker.reading_paused
    for reason in ("in_hand", "parked"):
        families.add("portability_delivery_reading_paused", [reason], 1 if paused == reason else 0)
    families.add("portability_delivery_retrying_consents", [], worker.retrying)
    families.add("portability_endpoints_disabled", [], stats.endpoints_disabled)
    families.add("portability_delivery_snapshots_delivered", [], stats.snapshots_delivered)
    families.add("portability_delivery_dropped_in_snapshot", [], stats.dropped_in_snapshot)
    families.add("portability_delivery_consents_awaiting_snapshot", [], worker.awaiting_snapshot)


def _endpoint_samples(worker: DeliveryWorker, families: _Families) -> None:
    circuit = "portability_endpoint_circuit_state"
    for endpoint in sorted(worker.endpoints.all(), key=lambda e: e.app_id):
        for state in CircuitState:
            current = 1 if endpoint.state is state else 0
            families.add(circuit, [endpoint.app_id, str(state)], current)
        families.add(
            "portability_endpoint_disabled", [endpoint.app_id], 1 if endpoint.disabled else 0
        )
        families.add(
            "portability_endpoint_consecutive_failures",
            [endpoint.app_id],
            endpoint.consecutive_failures,
        )


# --- the API process -------------------------------------------------------------------------


class LagCollector(Collector):
    """The lag sampler's latest report, in kafka_exporter's names."""

    def __init__(self, sampler: LagSampler | None) -> None:
        self._sampler = sampler

    def collect(self) -> Iterable[Metric]:
        families = _Families(_LAG_SPECS)
        if self._sampler is None:
            return families.all()
        view = self._sampler.view
        families.add("portability_lag_sample_ok", [], 0 if view.error else 1)
        if view.latest is not None:
            families.add("portability_lag_sample_timestamp_seconds", [], view.latest.at)
            _lag_samples(view.latest, families)
        return families.all()


def _lag_samples(report: LagReport, families: _Families) -> None:
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


def _group_samples(group: GroupLag, families: _Families) -> None:
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
        families = _Families(_LETTER_SPECS)
        summary = None if self._counter is None else self._counter.summary
        if summary is None or not summary.following:
            return families.all()
        for (stage, app), count in sorted(summary.by_stage_app.items()):
            families.add("portability_dead_letters", [stage, app], count)
        families.add("portability_dead_letter_replays", [], summary.replays)
        return families.all()


class ApiStoreCollector(Collector):
    """Consents and the outbox, counted in the consent store on each scrape."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterable[Metric]:
        families = _Families(_STORE_SPECS)
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


class RelayCollector(Collector):
    """Whether each outbox relay of this process publishes or stands by."""

    def collect(self) -> Iterable[Metric]:
        families = _Families(_RELAY_SPECS)
        for relay in running_relays():
            families.add(
                "portability_outbox_relay_publishing", [relay.relay_id], int(relay.publishing)
            )
        return families.all()


# --- registries and exposition ---------------------------------------------------------------


def _process_registry() -> CollectorRegistry:
    """A registry of this process's own: several apps may live in one process (tests)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def worker_registry(
    matcher: Callable[[], Matcher | None],
    worker: Callable[[], DeliveryWorker | None],
    builder: Callable[[], TransferBuilder | None] = lambda: None,
    state_view: Callable[[], StateView | None] = lambda: None,
) -> CollectorRegistry:
    """What a pipeline worker process serves on ``/metrics``."""
    registry = _process_registry()
    registry.register(PipelineCollector(matcher, worker, builder, state_view))
    registry.register(RelayCollector())
    return registry


def api_registry(
    engine: Engine,
    lag: LagSampler | None = None,
    dead_letters: DeadLetterCounter | None = None,
) -> CollectorRegistry:
    """What the API process serves on ``/metrics``; without Kafka, lag and letters are empty.

    Collecting runs the store's queries: serve it from a thread, not the event loop.
    """
    registry = _process_registry()
    registry.register(LagCollector(lag))
    registry.register(DeadLetterCollector(dead_letters))
    registry.register(ApiStoreCollector(engine))
    registry.register(RelayCollector())
    return registry


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition the scraper asked for (``Accept``), and its content type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def exported_names(registries: Iterable[CollectorRegistry]) -> set[str]:
    """Every sample name the registries' collectors export, as PromQL names them."""
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            names.update(_sample_names(family))
    return names


def _sample_names(family: Metric) -> Iterator[str]:
    if family.type == "counter":
        yield f"{family.name}_total"
    elif family.type == "histogram":
        yield from (f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    else:
        yield family.name
    yield from (sample.name for sample in family.samples)
