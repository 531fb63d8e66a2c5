"""The checks of ``changes publish`` one line at a time, without Kafka: the JSON form of an
AccountChange, the producer contract's body checks, and reading lines with a bound."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from portability.cli import root as cli
from portability.ops.change_json import (
    RECORD_BRANCHES,
    ChangeFormatError,
    change_from_json,
    change_to_json,
)
from portability.ops.change_lines import LineChecker, LineReader, LineRejection, PreparedRecord
from portability.runtime import open_codec
from portability.settings import Settings
from portability.wire.codec import AvroCodec
from portability.wire.ingress import DEFAULT_WINDOW
from portability.wire.schemas import SchemaName, schema_text

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "account-changes"
NOW_S = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / f"{name}.jsonl").read_text())
    return loaded


@pytest.fixture
async def codec() -> AsyncIterator[AvroCodec]:
    opened = await open_codec(Settings(topic_prefix="lines."))
    yield opened
    await opened.registry.close()


def checked(codec: AvroCodec, line: str | bytes) -> PreparedRecord | LineRejection:
    checker = LineChecker(codec, partitions=6, window=DEFAULT_WINDOW, clock=lambda: NOW_S)
    return checker.check(7, line.encode() if isinstance(line, str) else line)


def reason(codec: AvroCodec, document: object) -> str:
    verdict = checked(codec, json.dumps(document))
    assert isinstance(verdict, LineRejection), verdict
    assert verdict.line == 7
    return verdict.reason


# --- the JSON form ------------------------------------------------------------------------------


def test_every_category_has_its_branch_in_the_schema() -> None:
    schema = json.loads(schema_text(SchemaName.ACCOUNT_CHANGE))
    record = next(field for field in schema["fields"] if field["name"] == "record")
    names = {branch["name"] for branch in record["type"] if isinstance(branch, dict)}
    assert set(RECORD_BRANCHES.values()) <= names
    category = next(field for field in schema["fields"] if field["name"] == "category")
    assert set(RECORD_BRANCHES) == set(category["type"]["symbols"])


@pytest.mark.parametrize(
    "name", ["profile", "post", "follow", "activity-on-others-post", "direct_message", "delete"]
)
def test_each_example_reads_and_prints_back_the_same(name: str) -> None:
    document = example(name)

    change = change_from_json(document)

    assert change_to_json(change) == {**document, "audience": None}


def test_timestamps_may_be_epoch_milliseconds_and_defaults_may_be_left_out() -> None:
    document = example("post")
    document["occurred_at"] = 1795426867123
    document["record"] = {"caption": "c", "media_url": "m", "created_at": 1795426867101}
    del document["context"]

    change = change_from_json(document)

    assert change["occurred_at"] == datetime(2026, 11, 23, 9, 41, 7, 123000, tzinfo=UTC)
    assert change["record"] == {
        "caption": "c",
        "media_url": "m",
        "visibility": "public",  # the schema's default
        "created_at": datetime(2026, 11, 23, 9, 41, 7, 101000, tzinfo=UTC),
    }
    assert change["context"] is None


def test_an_offset_other_than_z_is_converted_to_utc() -> None:
    document = example("profile")
    document["occurred_at"] = "2026-11-23T10:40:00.000+01:00"

    assert change_from_json(document)["occurred_at"] == datetime(2026, 11, 23, 9, 40, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"category": "post", "record": {"kind": "like"}}, "record: unknown field 'kind'"),
        (
            {"category": "follow", "record": {"direction": "sideways"}},
            "record.direction: expected one of following, follower",
        ),
        ({"record": {"caption": "c", "media_url": "m"}}, "missing field 'record.created_at'"),
        ({"occurred_at": "yesterday"}, 'occurred_at: "yesterday" is not an RFC 3339 time'),
        ({"occurred_at": 1.5}, "occurred_at: expected an RFC 3339 time"),
        ({"occurred_at": 2**70}, "out of range"),
        ({"record_id": None}, "record_id: expected a string, got null"),
        ({"context": {"actor_private": "no"}}, "context.actor_private: expected true or false"),
        ({"operation": 1}, "operation: expected one of upsert, delete; got a number 1"),
    ],
)
def test_schema_mistakes_name_the_field(change: dict[str, Any], message: str) -> None:
    document = {**example("post"), **change}

    with pytest.raises(ChangeFormatError) as raised:
        change_from_json(document)

    assert message in str(raised.value)


# --- the contract's checks ----------------------------------------------------------------------


async def test_a_good_line_becomes_its_record(codec: AvroCodec) -> None:
    verdict = checked(codec, json.dumps(example("activity-on-others-post")))

    assert isinstance(verdict, PreparedRecord)
    assert (verdict.line, verdict.key, verdict.timestamp_ms) == (7, b"u00000042", NOW_S * 1000)
    assert verdict.schema_id == codec.schema_id(SchemaName.ACCOUNT_CHANGE)
    assert verdict.headers == (("portability.audience", b"share"),)
    record = codec.decode(SchemaName.ACCOUNT_CHANGE, verdict.value)["record"]
    assert record is not None
    assert record["kind"] == "share"


@pytest.mark.parametrize(
    ("change", "start"),
    [
        ({"user_id": ""}, "no_key: user_id is empty"),
        ({"user_id": "\ud800"}, "bad_key: user_id is not valid UTF-8"),
        ({"occurred_at": 1795426867}, "implausible_time: occurred_at 1795426867 ms is before"),
        ({"occurred_at": "2026-11-23T11:00:00.001Z"}, "implausible_time: occurred_at"),
        ({"audience": {"source_partition": 0, "entries": []}}, "reserved_field: audience"),
        ({"record": None}, "record: an upsert carries the record's new state"),
        ({"record_id": "post_1/audience"}, "record_id: ids ending in /audience are reserved"),
        ({"user_id": 42}, "user_id: expected a string, got a number 42"),
    ],
)
async def test_contract_mistakes_are_named_as_the_pipeline_names_them(
    codec: AvroCodec, change: dict[str, Any], start: str
) -> None:
    assert reason(codec, {**example("post"), **change}).startswith(start)


async def test_a_delete_carries_no_record(codec: AvroCodec) -> None:
    document = {**example("delete"), "record": example("activity-on-others-post")["record"]}

    assert reason(codec, document).startswith("record: a delete carries no record")


async def test_lines_that_are_not_json_objects(codec: AvroCodec) -> None:
    doubled = '{"change_id": "a", "change_id": "b"}'
    deep = "[" * 100_000 + "]" * 100_000

    verdicts = [checked(codec, line) for line in (b"\xff{}", "{", "[]", doubled, deep)]

    assert [v.reason for v in verdicts if isinstance(v, LineRejection)] == [
        "not UTF-8 (byte 0)",
        "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "expected an object, got an array",
        "field 'change_id' appears twice",
        "not JSON: nested too deeply",
    ]


# --- reading lines ------------------------------------------------------------------------------


def test_an_over_long_line_is_skipped_without_being_held() -> None:
    huge = b"x" * 5_000_000  # no newline at all for 5 MB, then one
    stream = io.BytesIO(b"short\n" + huge + b"\nlast")
    reader = LineReader(stream, max_bytes=1024)

    lines = reader.batch(10)

    assert lines == [(1, b"short", 6), (2, None, len(huge) + 1), (3, b"last", 4)]
    assert reader.bytes_read == 6 + len(huge) + 1 + 4
    assert reader.batch(10) == []


def test_a_line_of_exactly_the_limit_is_read_and_crlf_is_dropped() -> None:
    reader = LineReader(io.BytesIO(b"a" * 1024 + b"\r\n" + b"b" * 1025), max_bytes=1024)

    lines = reader.batch(2)

    assert lines == [(1, b"a" * 1024, 1026), (2, None, 1025)]


def test_progress_shows_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, cli_environment: None
) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=screen, force_terminal=True, width=120))
    lines = "".join((EXAMPLES / f"{n}.jsonl").read_text() for n in ("profile", "post"))

    result = CliRunner().invoke(
        cli.app, ["changes", "publish", "--dry-run"], input=lines + "oops\n"
    )

    assert result.exit_code == 1, result.output
    shown = screen.getvalue()
    assert "line 3: not JSON" in shown
    assert "dry run: 2 line(s) would be sent, 1 rejected" in shown


def test_the_platform_docs_show_every_example_as_it_is() -> None:
    docs = (EXAMPLES.parents[1] / "publishing-account-changes.md").read_text()

    for example_file in sorted(EXAMPLES.glob("*.jsonl")):
        assert example_file.read_text().strip() in docs, example_file.name
        assert f"`{example_file.name}`" in docs


def test_the_registry_url_is_printed_without_credentials() -> None:
    from portability.ops.changes import _without_credentials

    assert _without_credentials("https://user:secret@reg.example:8081/x") == (
        "https://reg.example:8081/x"
    )
    assert _without_credentials("http://[::1]:8081") == "http://[::1]:8081"
    assert _without_credentials("http://u:p@[::1]:8081") == "http://[::1]:8081"
    assert _without_credentials(None) is None


@pytest.mark.usefixtures("cli_environment")
def test_tail_refuses_a_user_id_that_cannot_be_a_key() -> None:
    result = CliRunner().invoke(cli.app, ["changes", "tail", "--user", ""])

    assert result.exit_code == 2, result.output
    assert "a user id is never empty" in result.output


async def test_lines_from_a_pipe_come_as_they_arrive_not_a_batch_at_a_time() -> None:
    """A platform writing a line at a time into ``portability changes publish``: each line is
    read (and so sent) at once; the reader used to wait for a whole batch of 256."""
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as stream, os.fdopen(write_end, "wb") as writer:
        reader = LineReader(stream, max_bytes=1024)
        writer.write(b"first\n")
        writer.flush()
        first = await asyncio.wait_for(asyncio.to_thread(reader.batch, 256), 5)
        writer.write(b"second\nthird\n")
        writer.flush()
        then: list[tuple[int, bytes | None, int]] = []
        while len(then) < 2:  # in one call or two (the second from the stream's buffer)
            then += await asyncio.wait_for(asyncio.to_thread(reader.batch, 256), 5)
        writer.close()
        rest = await asyncio.wait_for(asyncio.to_thread(reader.batch, 256), 5)

    assert first == [(1, b"first", 6)]
    assert then == [(2, b"second", 7), (3, b"third", 6)]
    assert rest == []
