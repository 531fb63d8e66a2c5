"""What ``portability topics list`` and ``describe`` show: the pipeline's topics as the
broker has them (partitions, configs, offsets), beside how the pipeline creates them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from rich.console import Group
from rich.table import Table
from rich.text import Text

from portability.broker import BrokerError
from portability.broker.inspector import Inspector, TopicLayout
from portability.ops.commands import create_topics
from portability.ops.errors import MissingTopicsError
from portability.settings import Settings
from portability.wire.topics import TopicNames, TopicSpec, pipeline_topics

__all__ = [
    "PartitionState",
    "TopicListing",
    "TopicState",
    "create_pipeline_topics",
    "describe_topic",
    "list_topics",
    "listing_table",
    "topic_detail",
]

_SHOWN_CONFIGS = ("cleanup.policy", "retention.ms")


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One partition: its offsets and where it lives."""

    partition: int
    earliest: int | None  # None: the broker did not say
    end: int
    leader: int | None
    replicas: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "earliest_offset": self.earliest,
            "end_offset": self.end,
            "records": None if self.earliest is None else max(0, self.end - self.earliest),
            "leader": self.leader,
            "replicas": list(self.replicas),
        }


@dataclass(frozen=True, slots=True)
class TopicState:
    """A topic as the broker has it, and as the pipeline would create it (``spec``)."""

    name: str
    spec: TopicSpec | None  # None: not one of the pipeline's topics
    exists: bool
    partitions: tuple[PartitionState, ...] = ()
    configs: Mapping[str, str] | None = None  # None: the broker did not describe configs

    @property
    def end_offset(self) -> int:
        return sum(p.end for p in self.partitions)

    def setting(self, key: str) -> tuple[str | None, bool]:
        """A config's value and whether the broker reported it (else: as configured here)."""
        if self.configs is not None and key in self.configs:
            return self.configs[key], True
        if self.spec is None:
            return None, False
        return self.spec.configs().get(key), False

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.name,
            "exists": self.exists,
            "partitions": len(self.partitions) if self.exists else None,
            "configured_partitions": self.spec.partitions if self.spec else None,
            "cleanup_policy": self.setting("cleanup.policy")[0],
            "retention_ms": _int_or_none(self.setting("retention.ms")[0]),
            "end_offset": self.end_offset if self.exists else None,
            "configs": None if self.configs is None else dict(sorted(self.configs.items())),
            "partition_offsets": [p.as_dict() for p in self.partitions],
        }


@dataclass(frozen=True, slots=True)
class TopicListing:
    """The pipeline's topics on one broker."""

    bootstrap: str
    topics: tuple[TopicState, ...]

    @property
    def missing(self) -> list[str]:
        return [t.name for t in self.topics if not t.exists]

    def as_dict(self) -> dict[str, Any]:
        return {"bootstrap": self.bootstrap, "topics": [t.as_dict() for t in self.topics]}


def _specs(settings: Settings) -> list[TopicSpec]:
    return pipeline_topics(
        TopicNames.with_prefix(settings.topic_prefix),
        settings.partitions,
        feed_retention_days=settings.feed_retention_days,
    )


async def list_topics(settings: Settings, bootstrap: str, timeout_s: float = 10.0) -> TopicListing:
    """Every pipeline topic as the broker has it; missing ones are listed, not created."""
    specs = _specs(settings)
    async with Inspector(bootstrap, timeout_s) as inspector:
        states = await _read_topics(inspector, {spec.name: spec for spec in specs})
    return TopicListing(bootstrap, tuple(states[spec.name] for spec in specs))


async def create_pipeline_topics(settings: Settings, timeout_s: float = 30.0) -> Table:
    """``portability topics create``: :func:`create_topics`, bounded in time, since a broker
    that accepts connections but never answers would otherwise hold the command for good."""
    try:
        return await asyncio.wait_for(create_topics(settings), timeout_s)
    except TimeoutError as error:
        raise BrokerError(
            f"Kafka at {settings.kafka_bootstrap} did not create the topics within {timeout_s:g} s"
        ) from error


async def describe_topic(
    settings: Settings, bootstrap: str, name: str, timeout_s: float = 10.0
) -> TopicState:
    """One topic, named in full or, for a pipeline topic, without the topic prefix.

    Raises :class:`MissingTopicsError` if it does not exist.
    """
    specs = {spec.name: spec for spec in _specs(settings)}
    full = f"{settings.topic_prefix}{name}"
    if name not in specs and full in specs:
        name = full
    async with Inspector(bootstrap, timeout_s) as inspector:
        state = (await _read_topics(inspector, {name: specs.get(name)}))[name]
    if not state.exists:
        raise MissingTopicsError([name], bootstrap, pipeline=name in specs)
    return state


async def _read_topics(
    inspector: Inspector, specs: Mapping[str, TopicSpec | None]
) -> dict[str, TopicState]:
    layouts = await inspector.layouts(specs)
    tps = [TopicPartition(t, p) for t, layout in layouts.items() for p in layout.partitions]
    ends = await inspector.read(dict.fromkeys(tps))
    try:
        earliest: Mapping[TopicPartition, int] = await inspector.earliest(tps)
    except BrokerError:
        earliest = {}
    configs = await inspector.topic_configs(layouts)
    states = {}
    for name, spec in specs.items():
        layout = layouts.get(name)
        if layout is None:
            states[name] = TopicState(name, spec, exists=False)
            continue
        partitions = tuple(
            _partition(layout, p, ends[TopicPartition(name, p)].end, earliest)
            for p in layout.partitions
        )
        topic_configs = None if configs is None else configs.get(name, {})
        states[name] = TopicState(name, spec, True, partitions, topic_configs)
    return states


def _partition(
    layout: TopicLayout, partition: int, end: int, earliest: Mapping[TopicPartition, int]
) -> PartitionState:
    return PartitionState(
        partition=partition,
        earliest=earliest.get(TopicPartition(layout.name, partition)),
        end=end,
        leader=layout.leaders.get(partition),
        replicas=layout.replicas.get(partition, ()),
    )


# --- rendering --------------------------------------------------------------------------------


def listing_table(listing: TopicListing, per_partition: bool = False) -> Table:
    """The topics list; with ``per_partition``, each partition's end offset under its topic."""
    table = Table(title=f"topics on {listing.bootstrap}")
    for column in ("topic", "partitions", "cleanup.policy", "retention.ms", "end offset", "state"):
        table.add_column(column, justify="right" if column == "end offset" else "left")
    guessed = False
    for topic in listing.topics:
        cells = [_config_cell(topic, key) for key in _SHOWN_CONFIGS]
        guessed |= any(cell.plain.endswith("*") for cell in cells)
        table.add_row(
            topic.name,
            _partitions_cell(topic),
            *cells,
            str(topic.end_offset) if topic.exists else "-",
            Text("exists", style="green") if topic.exists else Text("missing", style="red"),
            end_section=per_partition and not topic.partitions,
        )
        if per_partition:
            for p in topic.partitions:
                last = p is topic.partitions[-1]
                table.add_row(f"  [{p.partition}]", "", "", "", str(p.end), "", end_section=last)
    if guessed:
        table.caption = "* as the pipeline configures it: the broker did not report this config"
    return table


def topic_detail(topic: TopicState) -> Group:
    """One topic in full: its partitions' offsets, then its configs."""
    partitions = Table(title=f"{topic.name}: {len(topic.partitions)} partition(s)")
    for column in ("partition", "earliest offset", "end offset", "records", "leader", "replicas"):
        partitions.add_column(column, justify="right")
    for p in topic.partitions:
        partitions.add_row(
            str(p.partition),
            _or_dash(p.earliest),
            str(p.end),
            _or_dash(None if p.earliest is None else max(0, p.end - p.earliest)),
            _or_dash(p.leader),
            ",".join(str(r) for r in p.replicas),
        )
    return Group(partitions, _configs_table(topic))


def _configs_table(topic: TopicState) -> Table | Text:
    if topic.configs is None:
        return Text(
            "configs: the broker did not answer DescribeConfigs; as the pipeline creates it: "
            + _spec_configs(topic),
            style="yellow",
        )
    table = Table(title="configs (as the broker reports them)")
    table.add_column("config")
    table.add_column("value")
    for key, value in sorted(topic.configs.items()):
        table.add_row(key, value)
    if not topic.configs:
        table.add_row("(none reported)", _spec_configs(topic))
    return table


def _spec_configs(topic: TopicState) -> str:
    if topic.spec is None:
        return "(not a pipeline topic)"
    return ", ".join(f"{k}={v}" for k, v in topic.spec.configs().items())


def _config_cell(topic: TopicState, key: str) -> Text:
    value, reported = topic.setting(key)
    if value is None:
        return Text("-")
    return Text(value if reported or not topic.exists else f"{value} *")


def _partitions_cell(topic: TopicState) -> Text:
    configured = topic.spec.partitions if topic.spec else None
    if not topic.exists:
        return Text(str(configured or "-"))
    actual = len(topic.partitions)
    if configured is not None and configured != actual:
        return Text(f"{actual} (configured {configured})", style="red")
    return Text(str(actual))


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _int_or_none(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
