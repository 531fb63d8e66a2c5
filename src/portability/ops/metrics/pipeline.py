"""The pipeline roles' metrics: what the matcher, the current-state view, the delivery
worker and the snapshot builder count, and each endpoint's circuit, in a worker process.

The collector reads the roles' stats when Prometheus scrapes; nothing on the hot paths
touches prometheus_client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from portability.delivery.endpoints import CircuitState
from portability.matching.stats import DROP_REASONS
from portability.ops.metrics.families import Families, MetricSpec

if TYPE_CHECKING:
    from portability.delivery import DeliveryWorker
    from portability.matching import Matcher
    from portability.transfers.builder import TransferBuilder
    from portability.transfers.state import StateView

__all__ = ["ROLE_SPECS", "PipelineCollector"]

# The pipeline roles (matcher and delivery worker), in the worker processes.
ROLE_SPECS = (
    MetricSpec(
        "portability_matcher_changes",
        "counter",
        "Account changes read, by outcome and reason: matched (a delta for at least one "
        "consent); dropped (no_consent, not_granted, withheld, duplicate_change); "
        "dead_lettered here (a door fault: not_framed, unknown_schema_id, wrong_schema, "
        "no_key, bad_key, wrong_partition, no_value); refused (a body fault the state view "
        "dead-letters).",
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
        "portability_delivery_log_entries",
        "counter",
        "Attempts produced to the message log (delivery.log).",
    ),
    MetricSpec(
        "portability_delivery_log_entries_dropped",
        "counter",
        "Attempts never logged: too many waited for an unreachable broker.",
    ),
    MetricSpec(
        "portability_delivery_dropped_delivered",
        "counter",
        "Records read again after a takeover that the ledger says were delivered before it.",
    ),
    MetricSpec(
        "portability_delivery_ledger_heads_unreadable",
        "counter",
        "Recorded ledger heads that did not decode when a partition loaded (skipped).",
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
        families = Families(ROLE_SPECS)
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


def _matcher_samples(matcher: Matcher, families: Families) -> None:
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


def _state_samples(view: StateView, families: Families) -> None:
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


def _delivery_samples(worker: DeliveryWorker, families: Families) -> None:
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
    families.add("portability_delivery_log_entries", [], stats.log_entries)
    families.add("portability_delivery_log_entries_dropped", [], stats.log_entries_dropped)
    families.add("portability_delivery_dropped_delivered", [], stats.dropped_delivered)
    families.add("portability_delivery_ledger_heads_unreadable", [], stats.ledger_heads_unreadable)
    paused = worker.reading_paused
    for reason in ("in_hand", "parked"):
        families.add("portability_delivery_reading_paused", [reason], 1 if paused == reason else 0)
    families.add("portability_delivery_retrying_consents", [], worker.retrying)
    families.add("portability_endpoints_disabled", [], stats.endpoints_disabled)
    families.add("portability_delivery_snapshots_delivered", [], stats.snapshots_delivered)
    families.add("portability_delivery_dropped_in_snapshot", [], stats.dropped_in_snapshot)
    families.add("portability_delivery_consents_awaiting_snapshot", [], worker.awaiting_snapshot)


def _endpoint_samples(worker: DeliveryWorker, families: Families) -> None:
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
