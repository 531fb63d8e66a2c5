"""Prometheus metrics of the pipeline's processes.

Every process serves ``/metrics`` (Prometheus text format; OpenMetrics when the scraper asks):

- a pipeline worker (``portability matcher``, ``worker``, ``relay``, ``pipeline``) on its Faust
  web port: what the matcher and the delivery worker count, each endpoint's circuit, the
  end-to-end latency (:mod:`.pipeline`, served by :func:`worker_registry`);
- the API process (``portability api``): consumer lag from its lag sampler, dead letters on
  the topic, consents and the outbox from the consent store (:mod:`.api`, served by
  :func:`api_registry`);
- both: whether their outbox relay publishes or stands by (:class:`RelayCollector`).

Names and labels follow kafka_exporter where they overlap
(``kafka_consumergroup_lag{consumergroup,topic,partition}``), the rest is ``portability_*``.
The collectors read state that exists anyway (the matcher's and worker's stats, the endpoint
table, the lag sampler's latest report) when Prometheus scrapes; nothing on the hot paths
touches prometheus_client. Every collector yields all of its families on every scrape, with
no samples when it has nothing to say yet (:mod:`.families`), so that the exported names are
known up front (:data:`SPECS`, checked against the dashboards and alert rules by the tests).
"""

from portability.ops.metrics.api import ApiStoreCollector, DeadLetterCollector, LagCollector
from portability.ops.metrics.families import MetricSpec
from portability.ops.metrics.pipeline import PipelineCollector
from portability.ops.metrics.registries import (
    SPECS,
    RelayCollector,
    api_registry,
    exported_names,
    render,
    worker_registry,
)

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
