"""``portability dlq list|show|replay`` against the session's Tansu.

Letters are written the way the matcher and the delivery worker write them (``DeadLetter``
headers, with and without the delivery history), then listed, shown, and replayed into their
source topics, where they are read back. The CLI tests drive Typer's CliRunner in a worker
thread, where the command's own ``asyncio.run`` has a loop to itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from rich.cells import cell_len
from typer.testing import CliRunner, Result

from pipeline_harness import pipeline_settings
from portability.broker import EmbeddedBroker
from portability.broker.inspector import Inspector
from portability.cli import app
from portability.ops.dead_letters import (
    LetterFilter,
    Selection,
    execute_redelivery,
    list_letters,
    parse_since,
    plan_redelivery,
    reason_class,
    show_letter,
)
from portability.ops.errors import MissingTopicsError, OpsError
from portability.runtime import Runtime
from portability.settings import Settings
from portability.simulation import ChangeFactory
from portability.wire.dead_letters import DeadLetter
from portability.wire.records import DeliveryRecord
from portability.wire.schemas import SchemaName

from .scene import PARTITIONS

_READ_DEADLINE_S = 20.0
_HISTORY = [
    {"at": "2026-11-23T09:00:00+00:00", "status": 503, "reason": "HTTP 503"},
    {"at": "2026-11-23T09:00:05+00:00", "status": None, "reason": "timeout"},
    {"at": "2026-11-23T09:05:05+00:00", "status": 503, "reason": "HTTP 503"},
]


class Letters:
    """Writes dead letters as the pipeline does, and reads topics back."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.topics = runtime.topics
        self.bootstrap = runtime.kafka.bootstrap
        self.settings = runtime.settings
        self.factory = ChangeFactory(["nobody"], seed=5)
        self._producer = runtime.kafka.producer("test-dlq")

    async def start(self) -> None:
        await self._producer.start()

    async def close(self) -> None:
        await self._producer.stop()

    def delivery(self, consent_id: str, app_id: str, sequence: int) -> bytes:
        change = self.factory.random_change(f"user-{consent_id}", "post")
        record: DeliveryRecord = {
            "delta_id": f"dlt_{consent_id}_{sequence}",
            "consent_id": consent_id,
            "app_id": app_id,
            "user_id": change["user_id"],
            "sequence": sequence,
            "change": change,
            "matched_at": datetime.now(UTC),
        }
        return self.runtime.codec.encode(SchemaName.DELIVERY, dict(record))

    async def write(self, letter: DeadLetter) -> int:
        metadata = await self._producer.send_and_wait(
            self.topics.dead_letters, letter.value, key=letter.key, headers=letter.headers()
        )
        return int(metadata.offset)

    async def seed(self) -> dict[str, int]:
        """Four letters: a bad change (matcher); an exhausted delivery with its history; a
        delivery refused for good, written without history; an undecodable notification."""
        t = self.topics
        return {
            "bad_change": await self.write(
                DeadLetter(
                    topic=t.account_changes, partition=1, offset=7, key=b"u1",
                    value=b"not avro at all", stage="matcher",
                    reason="bad magic byte 110 (expected 0: Confluent framing)",
                )
            ),
            "exhausted": await self.write(
                DeadLetter(
                    topic=t.deliveries, partition=0, offset=3, key=b"cns_a",
                    value=self.delivery("cns_a", "app_a", 1), stage="delivery",
                    reason="HTTP 503 after 3 attempt(s): down for maintenance",
                    extra={
                        "attempts": "3",
                        "history": json.dumps(_HISTORY),
                        "consent_id": "cns_a",
                        "app_id": "app_a",
                    },
                )
            ),
            "refused": await self.write(
                DeadLetter(
                    topic=t.deliveries, partition=1, offset=4, key=b"cns_b",
                    value=self.delivery("cns_b", "app_b", 1), stage="delivery",
                    reason="HTTP 400 after 1 attempt(s): bad request",
                )
            ),
            "bad_notification": await self.write(
                DeadLetter(
                    topic=t.notifications, partition=1, offset=2, key=b"cns_b",
                    value=b"\x00\x00\x00\x03\xe7zz", stage="delivery",
                    reason="unknown schema id 999",
                )
            ),
        }  # fmt: skip

    async def read(self, topic: str, partition: int) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record of one partition, up to its high watermark."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            records: list[ConsumerRecord[bytes, bytes]] = []
            deadline = time.monotonic() + _READ_DEADLINE_S
            while time.monotonic() < deadline:
                batch = await consumer.getmany(tp, timeout_ms=100)
                records += batch.get(tp, [])
                end = consumer.highwater(tp)
                if end is not None and await consumer.position(tp) >= end:
                    return records
            raise AssertionError(f"{topic}[{partition}] not read to its end in time")
        finally:
            await consumer.stop()


@pytest.fixture
async def letters(broker: EmbeddedBroker, ops_settings: Settings) -> AsyncIterator[Letters]:
    runtime = await Runtime.open(ops_settings, broker.bootstrap)
    opened = Letters(runtime)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()
        await runtime.close()


async def _list(letters: Letters, **filters: Any) -> Any:
    limit = filters.pop("limit", None)
    return await list_letters(letters.settings, letters.bootstrap, LetterFilter(**filters), limit)


def _replayed_from(record: ConsumerRecord[bytes, bytes]) -> str | None:
    headers = {name: bytes(value).decode() for name, value in record.headers}
    return headers.get("dlq.replayed_from")


# --- list -------------------------------------------------------------------------------------


async def test_list_shows_each_letter_with_what_it_is_about(letters: Letters) -> None:
    offsets = await letters.seed()

    listing = await _list(letters)

    by_offset = {letter.offset: letter for letter in listing.letters}
    assert list(by_offset) == sorted(offsets.values())
    exhausted = by_offset[offsets["exhausted"]]
    assert (exhausted.consent_id, exhausted.app_id, exhausted.attempts) == ("cns_a", "app_a", 3)
    assert [(a.status, a.reason) for a in exhausted.history] == [
        (503, "HTTP 503"),
        (None, "timeout"),
        (503, "HTTP 503"),
    ]
    assert exhausted.source == f"{letters.topics.deliveries}[0]@3"
    # Without the worker's headers, the decoded value names consent and app...
    refused = by_offset[offsets["refused"]]
    assert (refused.consent_id, refused.app_id, refused.attempts) == ("cns_b", "app_b", None)
    assert refused.history == ()
    # ...and an undecodable notification its key (deliveries are keyed by consent).
    notification = by_offset[offsets["bad_notification"]]
    assert (notification.consent_id, notification.app_id) == ("cns_b", None)
    assert by_offset[offsets["bad_change"]].consent_id is None
    assert listing.summary.by_stage == {"matcher": 1, "delivery": 3}
    assert listing.summary.by_reason == {
        "bad magic byte 110 (expected 0: Confluent framing)": 1,
        "HTTP 503 after 3 attempt(s)": 1,
        "HTTP 400 after 1 attempt(s)": 1,
        "unknown schema id 999": 1,
    }
    assert (listing.start, listing.end, listing.matched) == (0, 4, 4)


async def test_list_filters_client_side(letters: Letters) -> None:
    offsets = await letters.seed()

    async def offsets_of(**filters: Any) -> list[int]:
        return [letter.offset for letter in (await _list(letters, **filters)).letters]

    assert await offsets_of(stage="matcher") == [offsets["bad_change"]]
    deliveries = letters.topics.deliveries
    assert await offsets_of(source_topic=deliveries) == [offsets["exhausted"], offsets["refused"]]
    assert await offsets_of(consent_id="cns_b") == [
        offsets["refused"],
        offsets["bad_notification"],
    ]
    assert await offsets_of(app_id="app_a") == [offsets["exhausted"]]
    assert await offsets_of(since=parse_since("1h")) == sorted(offsets.values())
    assert await offsets_of(since=datetime.now(UTC) + timedelta(hours=1)) == []
    newest = await _list(letters, stage="delivery", limit=2)
    assert [letter.offset for letter in newest.letters] == [
        offsets["refused"],
        offsets["bad_notification"],
    ]
    assert (newest.matched, newest.summary.total) == (3, 3)


async def test_list_of_an_empty_topic(letters: Letters) -> None:
    listing = await _list(letters)

    assert (listing.start, listing.end, listing.matched, listing.letters) == (0, 0, 0, ())


async def test_a_missing_topic_is_reported_and_not_created(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = pipeline_settings(tmp_path)
    dead_letters = f"{settings.topic_prefix}dead-letters"

    with pytest.raises(MissingTopicsError, match="portability topics create"):
        await list_letters(settings, broker.bootstrap, LetterFilter())

    async with Inspector(broker.bootstrap) as inspector:
        assert dead_letters not in await inspector.topic_names()


def test_since_accepts_durations_and_iso_times() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    assert parse_since("2h", now) == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert parse_since("30m", now) == datetime(2026, 11, 23, 11, 30, tzinfo=UTC)
    assert parse_since("1d", now) == datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert parse_since("2026-11-23T09:00:00") == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert parse_since("2026-11-23T09:00:00+01:00") == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="duration"):
        parse_since("yesterday")


def test_reason_class_drops_the_details() -> None:
    assert reason_class("HTTP 503 after 8 attempt(s): <html>busy</html>") == (
        "HTTP 503 after 8 attempt(s)"
    )
    assert reason_class("undecodable account_change body: ValueError('x: y')") == (
        "undecodable account_change body"
    )
    assert reason_class("bad magic byte 1 (expected 0: Confluent framing)") == (
        "bad magic byte 1 (expected 0: Confluent framing)"
    )
    assert reason_class("") == "(no reason)"


# --- show -------------------------------------------------------------------------------------


async def test_show_decodes_the_value_with_the_source_topics_schema(letters: Letters) -> None:
    offsets = await letters.seed()

    detail = (await show_letter(letters.settings, letters.bootstrap, offsets["exhausted"])).detail()

    assert detail["value"]["schema"] == "delivery"
    decoded = detail["value"]["decoded"]
    assert (decoded["consent_id"], decoded["app_id"], decoded["sequence"]) == ("cns_a", "app_a", 1)
    assert decoded["change"]["category"] == "post"
    assert detail["key"] == "cns_a"
    assert detail["headers"]["dlq.reason"].startswith("HTTP 503")
    assert json.loads(detail["headers"]["dlq.history"]) == _HISTORY
    assert [attempt["status"] for attempt in detail["history"]] == [503, None, 503]
    json.dumps(detail)  # everything in it is JSON


async def test_show_previews_an_undecodable_value(letters: Letters) -> None:
    offsets = await letters.seed()

    detail = (
        await show_letter(letters.settings, letters.bootstrap, offsets["bad_change"])
    ).detail()

    value = detail["value"]
    assert value["schema"] == "account_change"
    assert "bad magic byte" in value["error"]
    assert value["hex"] == b"not avro at all".hex()
    assert value["utf8"] == "not avro at all"
    assert value["length"] == len(b"not avro at all")
    assert detail["decodable"] is False


async def test_show_of_an_offset_without_a_letter(letters: Letters) -> None:
    await letters.seed()

    with pytest.raises(OpsError, match="offsets run from 0 to 3"):
        await show_letter(letters.settings, letters.bootstrap, 9)


# --- replay -----------------------------------------------------------------------------------


async def test_replay_reproduces_key_value_and_partition(letters: Letters) -> None:
    offsets = await letters.seed()
    named = (offsets["exhausted"], offsets["refused"])

    plan = await plan_redelivery(letters.settings, letters.bootstrap, Selection(named))
    results = await execute_redelivery(letters.settings, letters.bootstrap, plan.ready)

    assert not plan.blocked
    assert [(r.letter.offset, r.error, r.marked) for r in results] == [
        (offsets["exhausted"], None, True),
        (offsets["refused"], None, True),
    ]
    letters_by_offset = {r.letter.offset: r.letter for r in results}
    for partition, offset in ((0, offsets["exhausted"]), (1, offsets["refused"])):
        replayed = await letters.read(letters.topics.deliveries, partition)
        assert len(replayed) == 1
        original = letters_by_offset[offset]
        assert (replayed[0].key, replayed[0].value) == (original.key, original.value)
        assert _replayed_from(replayed[0]) == str(offset)
    listing = await _list(letters)
    assert listing.markers == 2
    assert listing.matched == 4  # markers are not letters
    marks = {letter.offset: letter.redeliveries for letter in listing.letters}
    assert [(m.topic, m.partition, m.target) for m in marks[offsets["exhausted"]]] == [
        (letters.topics.deliveries, 0, 0)
    ]


async def test_show_of_a_replay_marker_says_what_it_records(letters: Letters) -> None:
    offsets = await letters.seed()
    plan = await plan_redelivery(
        letters.settings, letters.bootstrap, Selection((offsets["refused"],))
    )
    await execute_redelivery(letters.settings, letters.bootstrap, plan.ready)
    marker = len(offsets)  # the first record after the letters

    with pytest.raises(OpsError, match=f"letter {offsets['refused']} was replayed to"):
        await show_letter(letters.settings, letters.bootstrap, marker)


async def test_a_replayed_letter_is_refused_unless_again(letters: Letters) -> None:
    offsets = await letters.seed()
    selection = Selection((offsets["refused"],))
    first = await plan_redelivery(letters.settings, letters.bootstrap, selection)
    await execute_redelivery(letters.settings, letters.bootstrap, first.ready)

    second = await plan_redelivery(letters.settings, letters.bootstrap, selection)
    again = await plan_redelivery(letters.settings, letters.bootstrap, selection, again=True)

    assert second.blocked
    assert "already replayed" in (second.refused[0].refusal or "")
    assert "--again" in (second.refused[0].refusal or "")
    assert [letter.offset for letter in again.ready] == [offsets["refused"]]


async def test_a_replay_that_fails_again_is_tied_to_its_letter(letters: Letters) -> None:
    offsets = await letters.seed()
    plan = await plan_redelivery(
        letters.settings, letters.bootstrap, Selection((offsets["refused"],))
    )
    [result] = await execute_redelivery(letters.settings, letters.bootstrap, plan.ready)
    assert result.offset is not None
    # The worker dead-letters the replayed record again, naming its new position.
    again = await letters.write(
        DeadLetter(
            topic=letters.topics.deliveries,
            partition=1,
            offset=result.offset,
            key=b"cns_b",
            value=result.letter.value,
            reason="HTTP 400 after 1 attempt(s): still bad",
            stage="delivery",
        )
    )

    listing = await _list(letters, consent_id="cns_b")

    by_offset = {letter.offset: letter for letter in listing.letters}
    assert by_offset[again].redelivery_of == offsets["refused"]
    assert by_offset[offsets["refused"]].followups == [again]


async def test_undecodable_letters_are_refused_without_force(letters: Letters) -> None:
    offsets = await letters.seed()
    selection = Selection((offsets["bad_change"],))

    refused = await plan_redelivery(letters.settings, letters.bootstrap, selection)
    forced = await plan_redelivery(letters.settings, letters.bootstrap, selection, force=True)

    assert refused.blocked
    assert refused.ready == []
    assert "does not decode" in (refused.refused[0].refusal or "")
    assert "--force" in (refused.refused[0].refusal or "")
    await execute_redelivery(letters.settings, letters.bootstrap, forced.ready)
    [record] = await letters.read(letters.topics.account_changes, 1)
    assert (record.key, record.value) == (b"u1", b"not avro at all")


async def test_all_skips_refused_letters_and_replays_the_rest(letters: Letters) -> None:
    offsets = await letters.seed()

    plan = await plan_redelivery(
        letters.settings,
        letters.bootstrap,
        Selection(letter_filter=LetterFilter(stage="delivery"), all_matching=True),
    )

    assert not plan.blocked
    assert [letter.offset for letter in plan.ready] == [offsets["exhausted"], offsets["refused"]]
    assert [d.letter.offset for d in plan.refused] == [offsets["bad_notification"]]


async def test_a_parked_delivery_is_replayed_to_deliveries(letters: Letters) -> None:
    """A letter from the retry topic goes back to the topic its value belongs to."""
    offset = await letters.write(
        DeadLetter(
            topic=letters.topics.deliveries_retry,
            partition=1,
            offset=0,
            key=b"cns_c",
            value=letters.delivery("cns_c", "app_c", 1),
            reason="retry record has kind None, not delivery or notification",
            stage="delivery",
        )
    )

    plan = await plan_redelivery(letters.settings, letters.bootstrap, Selection((offset,)))
    await execute_redelivery(letters.settings, letters.bootstrap, plan.ready)

    assert [d.target for d in plan.decisions] == [f"{letters.topics.deliveries}[1]"]
    [record] = await letters.read(letters.topics.deliveries, 1)
    assert record.key == b"cns_c"
    assert await letters.read(letters.topics.deliveries_retry, 1) == []


# --- the command line -------------------------------------------------------------------------


async def _invoke(*args: str, stdin: str | None = None) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, app, list(args), input=stdin, catch_exceptions=False
    )


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def cli(letters: Letters, monkeypatch: pytest.MonkeyPatch, cli_environment: None) -> list[str]:
    """The letters' settings in the environment; returns the global flags to pass."""
    monkeypatch.setenv("PORTABILITY_TOPIC_PREFIX", letters.settings.topic_prefix)
    monkeypatch.setenv("PORTABILITY_PARTITIONS", str(PARTITIONS))
    return ["--bootstrap", letters.bootstrap]


async def test_cli_list_json(letters: Letters, cli: list[str]) -> None:
    offsets = await letters.seed()

    document = _json(await _invoke(*cli, "dlq", "list", "--json", "--consent", "cns_a"))

    assert document["topic"] == letters.topics.dead_letters
    [letter] = document["letters"]
    assert letter["offset"] == offsets["exhausted"]
    assert letter["source"] == {"topic": letters.topics.deliveries, "partition": 0, "offset": 3}
    assert (letter["consent_id"], letter["app_id"], letter["attempts"]) == ("cns_a", "app_a", 3)
    assert len(letter["history"]) == 3
    assert document["summary"]["by_stage"] == {"delivery": 1}


async def test_cli_list_table_has_counts(letters: Letters, cli: list[str]) -> None:
    await letters.seed()

    result = await _invoke(*cli, "dlq", "list", "--source-topic", "deliveries")

    assert result.exit_code == 0, result.output
    assert "cns_a" in result.stdout
    assert "2 letter(s) matched (delivery: 2)" in _flat(result.stdout)
    assert "HTTP 400 after 1 attempt(s)" in result.stdout


async def test_cli_list_without_the_topic_exits_1(
    broker: EmbeddedBroker, cli_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORTABILITY_TOPIC_PREFIX", f"none{uuid.uuid4().hex[:10]}.")

    result = await _invoke("--bootstrap", broker.bootstrap, "dlq", "list")

    assert result.exit_code == 1, result.output
    assert "portability topics create" in _flat(result.stderr)


async def test_cli_list_of_an_empty_topic(letters: Letters, cli: list[str]) -> None:
    result = await _invoke(*cli, "dlq", "list")

    assert result.exit_code == 0, result.output
    assert f"no dead letters in {letters.topics.dead_letters}" in _flat(result.stderr)


async def test_cli_show(letters: Letters, cli: list[str]) -> None:
    offsets = await letters.seed()

    decodable = await _invoke(*cli, "dlq", "show", str(offsets["exhausted"]))
    undecodable = await _invoke(*cli, "dlq", "show", str(offsets["bad_change"]))
    as_json = _json(await _invoke(*cli, "dlq", "show", str(offsets["refused"]), "--json"))

    assert decodable.exit_code == 0, decodable.output
    assert "decoded as delivery" in decodable.stdout
    assert '"consent_id": "cns_a"' in decodable.stdout
    assert "delivery attempts" in decodable.stdout
    assert undecodable.exit_code == 0, undecodable.output
    assert "value does not decode" in _flat(undecodable.stdout)
    assert b"not avro".hex(" ") in undecodable.stdout
    assert as_json["value"]["decoded"]["consent_id"] == "cns_b"


async def test_cli_show_unknown_offset_exits_1(letters: Letters, cli: list[str]) -> None:
    await letters.seed()

    result = await _invoke(*cli, "dlq", "show", "42")

    assert result.exit_code == 1, result.output
    assert "no dead letter at offset 42" in _flat(result.stderr)


async def test_cli_replay_yes(letters: Letters, cli: list[str]) -> None:
    offsets = await letters.seed()

    result = await _invoke(
        *cli, "dlq", "replay", str(offsets["exhausted"]), str(offsets["refused"]), "--yes"
    )

    assert result.exit_code == 0, result.output
    [first] = await letters.read(letters.topics.deliveries, 0)
    [second] = await letters.read(letters.topics.deliveries, 1)
    assert (first.key, _replayed_from(first)) == (b"cns_a", str(offsets["exhausted"]))
    assert (second.key, _replayed_from(second)) == (b"cns_b", str(offsets["refused"]))
    listed = _json(await _invoke(*cli, "dlq", "list", "--json"))
    replays = {letter["offset"]: letter["replays"] for letter in listed["letters"]}
    assert [r["offset"] for r in replays[offsets["exhausted"]]] == [0]


async def test_cli_replay_asks_before_several(letters: Letters, cli: list[str]) -> None:
    offsets = await letters.seed()

    declined = await _invoke(
        *cli, "dlq", "replay", str(offsets["exhausted"]), str(offsets["refused"]), stdin="n\n"
    )

    assert declined.exit_code == 1, declined.output
    assert "Replay 2 dead letters" in declined.stderr
    assert await letters.read(letters.topics.deliveries, 0) == []
    assert (await _list(letters)).markers == 0


async def test_cli_replay_dry_run_changes_nothing(letters: Letters, cli: list[str]) -> None:
    offsets = await letters.seed()

    result = await _invoke(*cli, "dlq", "replay", "--all", "--dry-run", "--json")

    document = _json(result)
    assert [entry["replay"] for entry in document["plan"]["letters"]] == [
        False,  # undecodable change
        True,
        True,
        False,  # undecodable notification
    ]
    assert document["replayed"] == []
    assert "2 letter(s) would be replayed" in _flat(result.stderr)
    assert await letters.read(letters.topics.deliveries, 0) == []
    assert await letters.read(letters.topics.deliveries, 1) == []
    assert (await _list(letters)).end == len(offsets)


async def test_cli_replay_refuses_an_undecodable_letter(letters: Letters, cli: list[str]) -> None:
    offsets = await letters.seed()

    result = await _invoke(
        *cli, "dlq", "replay", str(offsets["bad_change"]), str(offsets["refused"]), "--yes"
    )

    assert result.exit_code == 1, result.output
    assert "does not decode" in _flat(result.stdout)
    assert "nothing replayed" in _flat(result.stderr)
    assert await letters.read(letters.topics.deliveries, 1) == []
    assert await letters.read(letters.topics.account_changes, 1) == []


async def test_cli_replay_needs_offsets_or_all(letters: Letters, cli: list[str]) -> None:
    neither = await _invoke(*cli, "dlq", "replay")
    filters_with_offsets = await _invoke(*cli, "dlq", "replay", "1", "--stage", "matcher")

    assert neither.exit_code == 2, neither.output
    assert "--all" in _flat(neither.stderr)
    assert filters_with_offsets.exit_code == 2, filters_with_offsets.output


async def test_cli_redeliver_is_the_documented_name_of_replay(
    letters: Letters, cli: list[str]
) -> None:
    """``dlq redeliver`` is the command; ``dlq replay``, its first name, is a hidden alias."""
    await letters.seed()

    listed = await _invoke(*cli, "dlq", "--help")
    redeliver = _json(await _invoke(*cli, "dlq", "redeliver", "--all", "--dry-run", "--json"))
    replay = _json(await _invoke(*cli, "dlq", "replay", "--all", "--dry-run", "--json"))

    assert "redeliver" in listed.stdout
    assert "replay" not in listed.stdout
    assert redeliver == replay
    assert [entry["replay"] for entry in redeliver["plan"]["letters"]] == [
        False,
        True,
        True,
        False,
    ]


async def test_cli_list_keeps_ids_whole_at_80_columns_on_a_pipe(
    letters: Letters, cli: list[str]
) -> None:
    """As an operator piping it (``| less``): 80 columns, stdout not a terminal."""
    consent, app_id = "cns_1f0e2d3c4b5a6978", "app_5c2a0e1f9b3d"
    offset = await letters.write(
        DeadLetter(
            topic=letters.topics.deliveries, partition=1, offset=98765, key=consent.encode(),
            value=letters.delivery(consent, app_id, 3), stage="delivery",
            reason="HTTP 503 after 8 attempt(s): upstream is down for maintenance",
            extra={"attempts": "8", "consent_id": consent, "app_id": app_id},
        )
    )  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "portability", *cli, "dlq", "list",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=os.environ | {"COLUMNS": "80"},
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 0, stderr.decode()[-2000:]
    text = stdout.decode()
    row = next(line for line in text.splitlines() if consent in line)
    assert app_id in row
    assert str(offset) in row.split()
    assert "HTTP 503 after 8" in row  # and why, folded over the next lines
    assert max(cell_len(line) for line in text.splitlines()) <= 80
    assert "not shown at this width: time (UTC), stage, source, attempts, replay" in _flat(text)
