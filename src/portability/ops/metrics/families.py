"""The shape of an exported metric, and the families one scrape fills.

:class:`MetricSpec` is one row of the exported names (the operations doc's table, checked by
the tests against the dashboards and alert rules); :class:`Families` builds every family of
a collector's specs up front, so that a collector with nothing to say yet still exports its
names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

__all__ = ["Families", "Kind", "MetricSpec"]

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric: its family name, type, labels and meaning (docs/operations.md)."""

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


class Families:
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
