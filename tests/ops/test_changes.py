"""``portability changes publish|tail|schema``, run in-process against the session's Tansu.

Each test has its own topics (the :class:`Scene`'s prefix, two partitions). What publish
wrote is checked by reading the topic with a plain consumer, not with ``tail``; ``tail`` is
then checked against what publish wrote.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from typer.testing import CliRunner, Result

from portability.broker import EmbeddedBroker
from portability.cli import app
from portability.ops.change_json import change_from_json
from portability.ops.changes_tail import TailOptions, TailRecord, tail_changes
from portability.runtime import open_codec
from portability.settings import Settings
from portability.wire.codec import AvroCodec
from portability.wire.records import with_record_type
from portability.wire.schemas import SchemaName, schema_text
from portability.wire.topics import partition_for_user
from waiting import wait_until

from .scene import PARTITIONS, Scene

pytestmark = pytest.mark.usefixtures("cli_environment")

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "account-changes"
USER = "u00000042"
_READ_BOUND_S = 15.0


def example_lines() -> list[str]:
    """Every example line, in a fixed order (the delete after the share it removes)."""
    order = ("profile", "post", "follow", "activity-on-others-post", "direct_message", "delete")
    return [(EXAMPLES / f"{name}.jsonl").read_text().strip() for name in order]


def change_line(user_id: str, record_id: str, **overrides: Any) -> str:
    """A valid post upsert of ``user_id`` as one JSON line."""
    document: dict[str, Any] = {
        "change_id": str(uuid.uuid4()),
        "user_id": user_id,
        "category": "post",
        "operation": "upsert",
        "record_id": record_id,
        "occurred_at": "2026-11-23T09:41:07.123Z",
        "record": {
            "caption": "hello",
            "media_url": "https://cdn.example/1.mp4",
            "created_at": 1795426867101,
        },
    }
    document.update(overrides)
    return json.dumps(document)


async def _invoke(*args: str, stdin: str | bytes | None = None) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, app, list(args), input=stdin, catch_exceptions=False
    )


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def configured(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The scene's settings in the environment; returns the global flags to pass."""
    monkeypatch.setenv("PORTABILITY_TOPIC_PREFIX", scene.settings.topic_prefix)
    monkeypatch.setenv("PORTABILITY_PARTITIONS", str(PARTITIONS))
    return ["--bootstrap", scene.bootstrap]


@pytest.fixture
async def codec(scene: Scene) -> AsyncIterator[AvroCodec]:
    opened = await open_codec(scene.settings)
    yield opened
    await opened.registry.close()


async def read_changes(scene: Scene) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of account.changes, partition by partition, up to the high watermarks."""
    topic = scene.names.account_changes
    consumer = AIOKafkaConsumer(bootstrap_servers=scene.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + _READ_BOUND_S
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            for batch in batches.values():
                records += batch
            ends = [consumer.highwater(tp) for tp in tps]
            positions = [await consumer.position(tp) for tp in tps]
            if all(
                end is not None and pos >= end for pos, end in zip(positions, ends, strict=True)
            ):
                return sorted(records, key=lambda r: (r.partition, r.offset))
            assert time.monotonic() < deadline, f"{topic} not read to its end"
    finally:
        await consumer.stop()


# --- publish ------------------------------------------------------------------------------------


async def test_publish_sends_each_example_keyed_framed_and_partitioned(
    scene: Scene, configured: list[str], codec: AvroCodec, tmp_path: Path
) -> None:
    source = tmp_path / "examples.jsonl"
    source.write_text("\n".join(example_lines()) + "\n")
    before_ms = int(time.time() * 1000)

    result = await _invoke(*configured, "changes", "publish", str(source))

    assert result.exit_code == 0, result.output
    assert "sent 6, rejected 0" in _flat(result.stderr)
    records = await read_changes(scene)
    assert len(records) == 6
    expected_id = codec.schema_id(SchemaName.ACCOUNT_CHANGE)
    for record, line in zip(records, example_lines(), strict=True):
        change = change_from_json(json.loads(line))
        assert record.key == USER.encode()
        assert record.partition == partition_for_user(USER, PARTITIONS)
        assert record.value is not None
        assert record.value[0] == 0
        assert int.from_bytes(record.value[1:5], "big") == expected_id
        # Byte for byte what the platform's own publisher writes for the same change.
        assert record.value == codec.encode(
            SchemaName.ACCOUNT_CHANGE, dict(with_record_type(change))
        )
        assert codec.decode(SchemaName.ACCOUNT_CHANGE, record.value) == {
            **change,
            "audience": None,
        }
        assert record.timestamp >= before_ms
    headers = [dict(record.headers) for record in records]
    # The share of another user's post, and its removal, carry the audience hint; no other.
    assert [h.get("portability.audience") for h in headers] == [
        None, None, None, b"share", None, b"share",
    ]  # fmt: skip


async def test_publish_names_each_rejected_line_and_sends_the_others(
    scene: Scene, configured: list[str], codec: AvroCodec
) -> None:
    good_first = change_line("alice", "post_1")
    good_last = change_line("alice", "post_2")
    lines = [
        good_first,
        "{not json",
        change_line("alice", "post_3", occurred_at=True),  # wrong type
        json.dumps({k: v for k, v in json.loads(good_first).items() if k != "record_id"}),
        change_line("", "post_4"),  # no key possible
        change_line("alice", "post_5", record={"caption": "x" * 2000}),  # over-long
        "",  # blank lines are skipped, not rejected
        change_line("alice", "post_6", audience={"source_partition": 0, "entries": []}),
        good_last,
    ]

    result = await _invoke(
        *configured, "changes", "publish", "--max-line-bytes", "1024",
        stdin="\n".join(lines) + "\n",
    )  # fmt: skip

    assert result.exit_code == 1, result.output
    errors = result.stderr.splitlines()
    assert errors[:6] == [
        "line 2: not JSON: Expecting property name enclosed in double quotes: line 1 column 2 "
        "(char 1)",
        "line 3: occurred_at: expected an RFC 3339 time (like 2026-11-23T09:41:07.123Z) or "
        "epoch milliseconds, got a boolean true",
        "line 4: missing field 'record_id'",
        "line 5: no_key: user_id is empty; it is the record's key, which must name the user",
        f"line 6: longer than 1024 bytes ({len(lines[5]) + 1}); not read",
        "line 8: reserved_field: audience is written by the matcher only; leave it null",
    ]
    assert "sent 2, rejected 6" in _flat(result.stderr)
    records = await read_changes(scene)
    assert [record.key for record in records] == [b"alice", b"alice"]
    assert [
        codec.decode(SchemaName.ACCOUNT_CHANGE, record.value)["change_id"] for record in records
    ] == [json.loads(line)["change_id"] for line in (good_first, good_last)]


async def test_dry_run_checks_places_and_sends_nothing(
    scene: Scene, configured: list[str], codec: AvroCodec
) -> None:
    stdin = "\n".join([*example_lines(), "[]"]) + "\n"

    result = await _invoke(*configured, "changes", "publish", "--dry-run", "--json", stdin=stdin)

    assert result.exit_code == 1, result.output  # the last line is rejected
    placed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["line"] for p in placed] == [1, 2, 3, 4, 5, 6]
    assert {p["partition"] for p in placed} == {partition_for_user(USER, PARTITIONS)}
    assert {p["schema_id"] for p in placed} == {codec.schema_id(SchemaName.ACCOUNT_CHANGE)}
    assert placed[3]["headers"] == {"portability.audience": "share"}
    assert "line 7: expected an object, got an array" in result.stderr
    assert "dry run: 6 line(s) would be sent, 1 rejected; nothing was sent" in _flat(result.stderr)
    assert await read_changes(scene) == []


async def test_dry_run_needs_no_kafka(tmp_path: Path) -> None:
    result = await _invoke("changes", "publish", "--dry-run", stdin=example_lines()[0] + "\n")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("line 1: ok key='u00000042' partition=")
    assert "nothing was sent" in result.stderr


async def test_publish_without_kafka_or_input_or_topic(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    without_kafka = await _invoke("changes", "publish", stdin=example_lines()[0])
    missing_file = await _invoke("changes", "publish", "--dry-run", str(tmp_path / "none.jsonl"))
    monkeypatch.setenv("PORTABILITY_TOPIC_PREFIX", f"none{uuid.uuid4().hex[:10]}.")
    no_topic = await _invoke(
        "--bootstrap", broker.bootstrap, "changes", "publish", stdin=example_lines()[0]
    )

    assert without_kafka.exit_code == 2, without_kafka.output
    assert "PORTABILITY_KAFKA_BOOTSTRAP" in _flat(without_kafka.stderr)
    assert missing_file.exit_code == 2, missing_file.output
    assert "cannot read" in _flat(missing_file.stderr)
    assert no_topic.exit_code == 1, no_topic.output
    assert "portability topics create" in _flat(no_topic.stderr)
    assert "Traceback" not in no_topic.output


# --- tail ---------------------------------------------------------------------------------------


async def test_tail_prints_what_publish_wrote(scene: Scene, configured: list[str]) -> None:
    published = await _invoke(*configured, "changes", "publish", stdin="\n".join(example_lines()))
    assert published.exit_code == 0, published.output

    as_json = await _invoke(*configured, "changes", "tail", "--json")
    as_text = await _invoke(*configured, "changes", "tail")

    assert as_json.exit_code == 0, as_json.output
    shown = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [item["value"] for item in shown] == [
        {**json.loads(line), "audience": None} for line in example_lines()
    ]
    assert {(item["key"], item["partition"], item["fault"]) for item in shown} == {
        (USER, partition_for_user(USER, PARTITIONS), None)
    }
    assert [item["offset"] for item in shown] == list(range(6))
    assert shown[3]["headers"] == {"portability.audience": "share"}
    assert as_text.exit_code == 0, as_text.output
    text = as_text.stdout.splitlines()
    assert len(text) == 6
    assert all(f"key={USER}" in line and "FAULT" not in line for line in text)
    assert "portability.audience=share" in text[3]


async def test_tail_shows_records_the_pipeline_refuses_and_goes_on(
    scene: Scene, configured: list[str], codec: AvroCodec
) -> None:
    change = change_from_json(json.loads(example_lines()[1]))
    good = codec.encode(SchemaName.ACCOUNT_CHANGE, dict(with_record_type(change)))
    right = partition_for_user(USER, PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=scene.bootstrap, acks="all")
    await producer.start()
    try:
        topic = scene.names.account_changes
        for value, partition in (
            (b"not framed", right),
            (b"\x00\x00\x00\x00\x63garbage", right),  # schema id 99: no registry has it
            (good[:5] + b"\xff\xff", right),  # the right id, a corrupt body
            (good, 1 - right),  # the wrong partition for its key
            (good, right),
        ):
            await producer.send_and_wait(topic, value, key=USER.encode(), partition=partition)
    finally:
        await producer.stop()

    result = await _invoke(*configured, "changes", "tail", "--from-beginning", "--json")

    assert result.exit_code == 0, result.output
    shown = {
        (item["partition"], item["offset"]): item
        for item in map(json.loads, result.stdout.splitlines())
    }
    faults = [shown[(right, offset)]["fault"] for offset in range(4)]
    assert faults == ["not_framed", "unknown_schema_id", "undecodable", None]
    assert shown[(right, 0)]["value"] is None
    assert shown[(right, 0)]["value_hex"] == b"not framed".hex()
    misplaced = shown[(1 - right, 0)]
    assert misplaced["fault"] == "wrong_partition"
    assert misplaced["value"]["change_id"] == change["change_id"]
    assert f"belongs in partition {right}" in misplaced["reason"]


async def test_tail_of_one_user_and_limits(
    scene: Scene, configured: list[str], codec: AvroCodec
) -> None:
    partition = partition_for_user("alice", PARTITIONS)
    mate = next(
        f"bob{i}" for i in range(1000) if partition_for_user(f"bob{i}", PARTITIONS) == partition
    )
    lines = [change_line(user, f"post_{i}") for i, user in enumerate(["alice", mate] * 4)]
    published = await _invoke(*configured, "changes", "publish", stdin="\n".join(lines))
    assert published.exit_code == 0, published.output

    alice = await _invoke(*configured, "changes", "tail", "--user", "alice", "--json")
    newest = await _invoke(*configured, "changes", "tail", "--limit", "3", "--json")
    first = await _invoke(*configured, "changes", "tail", "--from-beginning", "-n", "2", "--json")
    nobody = await _invoke(*configured, "changes", "tail", "--user", "nobody")

    def record_ids(result: Result) -> list[str]:
        assert result.exit_code == 0, result.output
        return [json.loads(line)["value"]["record_id"] for line in result.stdout.splitlines()]

    assert record_ids(alice) == ["post_0", "post_2", "post_4", "post_6"]
    assert record_ids(newest) == ["post_5", "post_6", "post_7"]
    assert record_ids(first) == ["post_0", "post_1"]
    assert nobody.exit_code == 0, nobody.output
    assert nobody.stdout == ""
    assert "no records of user 'nobody'" in nobody.stderr


async def test_tail_follow_prints_new_records_until_stopped(
    scene: Scene, configured: list[str]
) -> None:
    first = await _invoke(*configured, "changes", "publish", stdin=change_line("alice", "post_0"))
    assert first.exit_code == 0, first.output
    settings = Settings()  # as the command reads it: the environment of ``configured``
    seen: list[TailRecord] = []
    stop = asyncio.Event()
    following = asyncio.create_task(
        tail_changes(settings, scene.bootstrap, TailOptions(follow=True), seen.append, stop)
    )
    try:
        await wait_until(lambda: len(seen) == 1, "the record already there", _READ_BOUND_S)
        later = await _invoke(
            *configured, "changes", "publish", stdin=change_line("alice", "post_1")
        )
        assert later.exit_code == 0, later.output
        await wait_until(lambda: len(seen) == 2, "the record published later", _READ_BOUND_S)
    finally:
        stop.set()
        printed = await asyncio.wait_for(following, _READ_BOUND_S)

    assert printed == 2
    assert [r.value["record_id"] for r in seen if r.value] == ["post_0", "post_1"]


async def test_tail_of_a_missing_topic_exits_1(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORTABILITY_TOPIC_PREFIX", f"none{uuid.uuid4().hex[:10]}.")

    result = await _invoke("--bootstrap", broker.bootstrap, "changes", "tail")

    assert result.exit_code == 1, result.output
    assert "portability topics create" in _flat(result.stderr)


# --- schema -------------------------------------------------------------------------------------


async def test_schema_prints_subject_id_and_schema(
    monkeypatch: pytest.MonkeyPatch, ops_settings: Settings
) -> None:
    monkeypatch.setenv("PORTABILITY_TOPIC_PREFIX", ops_settings.topic_prefix)
    codec = await open_codec(ops_settings)
    await codec.registry.close()

    as_json = await _invoke("changes", "schema", "--json")
    as_text = await _invoke("changes", "schema")
    avsc = await _invoke("changes", "schema", "--avsc")

    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert document["subject"] == codec.subject(SchemaName.ACCOUNT_CHANGE)
    assert document["subject"] == f"{ops_settings.topic_prefix}account.changes-value"
    assert document["schema_id"] == codec.schema_id(SchemaName.ACCOUNT_CHANGE)
    assert document["record"] == "portability.v1.AccountChange"
    assert document["registry"] == "in-process"
    assert document["schema"] == json.loads(schema_text(SchemaName.ACCOUNT_CHANGE))
    assert as_text.exit_code == 0, as_text.output
    assert f"subject:       {document['subject']}" in as_text.stdout
    assert f"schema id:     {document['schema_id']} (in-process registry)" in as_text.stdout
    assert json.loads(avsc.stdout) == document["schema"]
