"""``portability topics list|describe`` and ``portability lag``, run in-process against the
session's Tansu.

The tests are async so that a :class:`Scene` can prepare offsets; the command itself runs in
a worker thread, where its own ``asyncio.run`` has a loop to itself.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from aiokafka import TopicPartition
from typer.testing import CliRunner, Result

from portability.broker import EmbeddedBroker, free_port
from portability.cli import app

from .scene import PARTITIONS, Scene, joined_member

pytestmark = pytest.mark.usefixtures("cli_environment")

# An unreachable broker must be reported well within this.
_BOUND_S = 15.0


async def _invoke(*args: str) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, app, list(args), catch_exceptions=False)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _json(result: Result, exit_code: int = 0) -> Any:
    assert result.exit_code == exit_code, result.output
    return json.loads(result.stdout)


@pytest.fixture
def configured(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The scene's settings in the environment; returns the global flags to pass."""
    settings = scene.settings
    monkeypatch.setenv("PORTABILITY_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("PORTABILITY_PARTITIONS", str(PARTITIONS))
    monkeypatch.setenv("PORTABILITY_MATCHER_GROUP", settings.matcher_group)
    monkeypatch.setenv("PORTABILITY_DELIVERY_GROUP", settings.delivery_group)
    monkeypatch.setenv("PORTABILITY_STATE_GROUP", settings.state_group)
    return ["--bootstrap", scene.bootstrap]


def _unknown_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTABILITY_TOPIC_PREFIX", f"none{uuid.uuid4().hex[:10]}.")


# --- topics list --------------------------------------------------------------------------------


async def test_topics_list_json_has_every_topic_with_offsets(
    scene: Scene, configured: list[str]
) -> None:
    await scene.produce(scene.names.deliveries, 0, 3)
    await scene.produce(scene.names.deliveries, 1, 4)

    document = _json(await _invoke(*configured, "topics", "list", "--json"))

    assert document["bootstrap"] == scene.bootstrap
    topics = {topic["topic"]: topic for topic in document["topics"]}
    assert scene.names.account_changes in topics
    deliveries = topics[scene.names.deliveries]
    assert deliveries["exists"] is True
    assert (deliveries["partitions"], deliveries["configured_partitions"]) == (2, 2)
    assert deliveries["cleanup_policy"] == "delete"
    assert deliveries["retention_ms"] == 7 * 24 * 3600 * 1000
    assert deliveries["end_offset"] == 7
    assert [(p["partition"], p["end_offset"]) for p in deliveries["partition_offsets"]] == [
        (0, 3),
        (1, 4),
    ]
    assert topics[scene.names.consents]["cleanup_policy"] == "compact"


async def test_topics_list_table_shows_partitions_on_request(
    scene: Scene, configured: list[str]
) -> None:
    await scene.produce(scene.names.deliveries, 1, 5)

    plain = await _invoke(*configured, "topics", "list")
    detailed = await _invoke(*configured, "topics", "list", "--partitions")

    assert plain.exit_code == 0, plain.output
    assert scene.names.deliveries in plain.stdout
    assert "exists" in plain.stdout
    assert "[1]" not in plain.stdout
    assert detailed.exit_code == 0, detailed.output
    assert "[0]" in detailed.stdout
    assert "[1]" in detailed.stdout


async def test_topics_list_with_missing_topics_exits_1(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unknown_prefix(monkeypatch)

    result = await _invoke("--bootstrap", broker.bootstrap, "topics", "list")

    assert result.exit_code == 1, result.output
    assert "missing" in result.stdout
    assert "portability topics create" in _flat(result.stderr)
    assert "Traceback" not in result.output


# --- topics describe ----------------------------------------------------------------------------


async def test_topics_describe_a_pipeline_topic_by_its_short_name(
    scene: Scene, configured: list[str]
) -> None:
    await scene.produce(scene.names.deliveries, 0, 2)

    by_short = _json(await _invoke(*configured, "topics", "describe", "deliveries", "--json"))
    by_full = _json(
        await _invoke(*configured, "topics", "describe", scene.names.deliveries, "--json")
    )

    assert by_short == by_full
    assert by_short["topic"] == scene.names.deliveries
    assert by_short["configs"]["cleanup.policy"] == "delete"
    assert [
        (p["partition"], p["earliest_offset"], p["end_offset"], p["records"])
        for p in by_short["partition_offsets"]
    ] == [(0, 0, 2, 2), (1, 0, 0, 0)]


async def test_topics_describe_table(scene: Scene, configured: list[str]) -> None:
    result = await _invoke(*configured, "topics", "describe", "consents")

    assert result.exit_code == 0, result.output
    assert scene.names.consents in result.stdout
    assert "earliest offset" in result.stdout
    assert "cleanup.policy" in result.stdout
    assert "compact" in result.stdout


async def test_topics_describe_a_missing_topic_exits_1(scene: Scene, configured: list[str]) -> None:
    name = f"nosuch-{uuid.uuid4().hex[:8]}"

    missing = await _invoke(*configured, "topics", "describe", name)

    assert missing.exit_code == 1, missing.output
    assert f"no topic {name}" in _flat(missing.stderr)
    assert "Traceback" not in missing.output
    assert missing.stdout == ""


# --- lag ----------------------------------------------------------------------------------------


async def test_lag_json_document(scene: Scene, configured: list[str]) -> None:
    settings = scene.settings
    await scene.produce(scene.names.deliveries, 0, 5, age_s=60)
    await scene.commit(settings.delivery_group, {TopicPartition(scene.names.deliveries, 0): 2})

    # The matcher and the state view never ran (UNKNOWN, the worst status: exit 7).
    document = _json(await _invoke(*configured, "lag", "--samples", "1", "--json"), exit_code=7)

    assert set(document) == {"at", "bootstrap", "status", "window", "missing_topics", "groups"}
    assert (document["status"], document["window"], document["missing_topics"]) == (
        "UNKNOWN",
        1,
        [],
    )
    groups = {group["group"]: group for group in document["groups"]}
    assert list(groups) == [settings.matcher_group, settings.delivery_group, settings.state_group]
    assert groups[settings.matcher_group]["status"] == "UNKNOWN"
    assert groups[settings.state_group]["status"] == "UNKNOWN"
    delivery = groups[settings.delivery_group]
    assert (delivery["status"], delivery["members"], delivery["lag"]) == ("STOPPED", 0, 3)
    assert (delivery["parked"], delivery["next_retry_at"]) == (0, None)
    assert 60 <= delivery["lag_seconds"] < 90
    first = delivery["partitions"][0]
    assert set(first) == {
        "topic", "partition", "committed", "start", "end", "lag", "lag_seconds", "status", "reason",
        "parked",
    }  # fmt: skip
    assert (first["topic"], first["partition"], first["committed"], first["end"]) == (
        scene.names.deliveries,
        0,
        2,
        5,
    )


async def test_lag_table_over_a_few_samples(scene: Scene, configured: list[str]) -> None:
    group = scene.settings.delivery_group
    await scene.produce(scene.names.deliveries, 1, 4)
    await scene.commit(group, {TopicPartition(scene.names.deliveries, 1): 4})

    result = await _invoke(*configured, "lag", "--samples", "2", "--interval", "0.1")

    assert result.exit_code == 7, result.output  # the matcher and the state view never ran
    assert "window: 2 sample(s)" in result.stdout
    assert group in result.stdout
    assert scene.settings.state_group in result.stdout
    assert scene.names.deliveries in result.stdout
    assert "OK" in result.stdout
    assert "UNKNOWN" in result.stdout


async def test_lag_watch_json_prints_a_document_per_sample(
    scene: Scene, configured: list[str]
) -> None:
    result = await _invoke(
        *configured, "lag", "--watch", "--samples", "3", "--interval", "0.1", "--json"
    )

    # A watch that ends after --samples exits by its last report: no group ever ran.
    assert result.exit_code == 7, result.output
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    assert [document["window"] for document in documents] == [1, 2, 3]


async def test_lag_watch_table(scene: Scene, configured: list[str]) -> None:
    result = await _invoke(*configured, "lag", "--watch", "--samples", "2", "--interval", "0.1")

    assert result.exit_code == 7, result.output
    assert scene.settings.delivery_group in result.stdout


async def test_lag_of_chosen_groups(scene: Scene, configured: list[str]) -> None:
    chosen = f"chosen-{uuid.uuid4().hex[:8]}"
    await scene.commit(chosen, {TopicPartition(scene.names.consents, 1): 0})

    document = _json(
        await _invoke(
            *configured, "lag", "--group", chosen, "--group", "nosuch", "--group", chosen,
            "--samples", "1", "--json",
        ),
        exit_code=7,  # nosuch is UNKNOWN
    )  # fmt: skip

    groups = {group["group"]: group for group in document["groups"]}
    assert list(groups) == [chosen, "nosuch"]
    assert groups[chosen]["status"] == "OK"
    assert [(p["topic"], p["partition"]) for p in groups[chosen]["partitions"]] == [
        (scene.names.consents, 0),
        (scene.names.consents, 1),
    ]
    assert groups["nosuch"]["status"] == "UNKNOWN"


@pytest.mark.parametrize(
    ("story", "status", "exit_code"),
    [("caught up", "OK", 0), ("behind, no members", "STOPPED", 6), ("never ran", "UNKNOWN", 7)],
)
async def test_lag_exits_by_the_worst_groups_status(
    scene: Scene, configured: list[str], story: str, status: str, exit_code: int
) -> None:
    group = f"story-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(scene.names.consents, 0)
    if story != "never ran":
        await scene.produce(tp.topic, 0, 3)
        await scene.commit(group, {tp: 3 if story == "caught up" else 1})

    result = await _invoke(*configured, "lag", "--group", group, "--samples", "1", "--json")

    assert result.exit_code == exit_code, result.output
    assert json.loads(result.stdout)["status"] == status


async def test_lag_exits_3_for_a_warning(scene: Scene, configured: list[str]) -> None:
    """A member that has not caught up, seen once: no trend yet, a WARNING."""
    group = f"member-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(scene.names.consents, 0)
    await scene.produce(tp.topic, 0, 3)
    async with joined_member(scene.bootstrap, group, tp.topic) as member:
        await member.commit({tp: 1})
        result = await _invoke(*configured, "lag", "--group", group, "--samples", "1")

    assert result.exit_code == 3, result.output
    assert "WARNING" in result.stdout


async def test_lag_without_topics_exits_1(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unknown_prefix(monkeypatch)

    result = await _invoke("--bootstrap", broker.bootstrap, "lag", "--samples", "1")

    assert result.exit_code == 1, result.output
    assert "portability topics create" in _flat(result.stderr)
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "command",
    [
        ["lag", "--samples", "1"],
        ["topics", "list"],
        ["topics", "describe", "x"],
        ["topics", "create"],
    ],
    ids=["lag", "topics list", "topics describe", "topics create"],
)
async def test_an_unreachable_broker_exits_1_quickly(command: list[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()

    result = await _invoke("--bootstrap", address, *command)

    assert result.exit_code == 1, result.output
    assert f"cannot reach Kafka at {address}" in _flat(result.stderr)
    assert "Traceback" not in result.output
    assert time.monotonic() - started < _BOUND_S
