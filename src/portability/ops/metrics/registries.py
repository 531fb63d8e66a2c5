"""The registries each process serves on ``/metrics``, and their exposition.

:func:`worker_registry` for a pipeline worker process, :func:`api_registry` for the API
process; both carry the process's own collectors and :class:`RelayCollector` (whether the
process's outbox relays publish or stand by). :data:`SPECS` is every name any of them exports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from portability.consent.relay import running_relays
from portability.ops.metrics.api import (
    LAG_SPECS,
    LETTER_SPECS,
    STORE_SPECS,
    ApiStoreCollector,
    DeadLetterCollector,
    LagCollector,
)
from portability.ops.metrics.families import Families, MetricSpec
from portability.ops.metrics.pipeline import ROLE_SPECS, PipelineCollector

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from portability.delivery import DeliveryWorker
    from portability.matching import Matcher
    from portability.ops.dead_letters.counts import DeadLetterCounter
    from portability.ops.lag_sampler import LagSampler
    from portability.transfers.builder import TransferBuilder
    from portability.transfers.state import StateView

__all__ = [
    "SPECS",
    "RelayCollector",
    "api_registry",
    "exported_names",
    "render",
    "worker_registry",
]

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
    for spec in (*LAG_SPECS, *LETTER_SPECS, *STORE_SPECS, *ROLE_SPECS, *_RELAY_SPECS)
}
"""Every metric the processes export, by family name."""


class RelayCollector(Collector):
    """Whether each outbox relay of this process publishes or stands by."""

    def collect(self) -> Iterable[Metric]:
        families = Families(_RELAY_SPECS)
        for relay in running_relays():
            families.add(
                "portability_outbox_relay_publishing", [relay.relay_id], int(relay.publishing)
            )
        return families.all()


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
