"""``portability disclosures USER``: the disclosure report as tables or JSON, on SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner, Result

from messages.disclosure_helpers import ARCHIVE, FEED, IDLE, USER, History, seed_history
from portability.cli import app
from portability.consent import ConsentService, create_store_engine, init_schema
from portability.messages.disclosures import DisclosureReports

pytestmark = pytest.mark.usefixtures("cli_environment")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/c.db"


@pytest.fixture
def store(database_url: str) -> Iterator[Engine]:
    engine = create_store_engine(database_url)
    init_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def history(store: Engine) -> History:
    return seed_history(store, ConsentService(store))


def _invoke(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(
        app, ["--database-url", database_url, "disclosures", *args], catch_exceptions=False
    )


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_table_names_each_app_its_counts_and_consents(
    database_url: str, history: History
) -> None:
    result = _invoke(database_url, USER)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"disclosures of user {USER}" in out
    for app_id in (ARCHIVE, FEED, IDLE):
        assert app_id in out
    assert "Archive Pal" in out
    assert "profile: 1, post: 3" in out
    assert "2026-03-01 10:00:00Z" in out
    feed_line = next(line for line in out.splitlines() if history.feed_consent in line)
    assert "revoked" in feed_line
    assert "user_revoked" in feed_line
    assert "2026-03-01 11:00:00Z" in feed_line  # when it ended
    assert "2026-01, 2026-02" in out
    assert "records, oldest delivery first" not in out  # only with --records


def test_records_are_listed_and_paged_with_the_next_command_on_stderr(
    database_url: str, history: History
) -> None:
    result = _invoke(database_url, USER, "--records", "--limit", "4")

    assert result.exit_code == 0, result.output
    assert "records, oldest delivery first (4 shown)" in result.stdout
    assert "msg_snapshot" in result.stdout or "dlt_1" in result.stdout
    assert history.archive_consent in result.stdout
    assert "more records: portability disclosures" in result.stderr
    cursor = result.stderr.split("--cursor ")[1].split()[0]

    rest = _invoke(database_url, USER, "--records", "--limit", "4", "--cursor", cursor)

    assert rest.exit_code == 0, rest.output
    assert "(3 shown)" in rest.stdout
    assert "a1" in rest.stdout
    assert "more records" not in rest.stderr


def test_json_is_the_reports_document(database_url: str, store: Engine, history: History) -> None:
    document = _json(_invoke(database_url, USER, "--json", "--records", "--limit", "3"))

    expected = DisclosureReports(store, ConsentService(store)).report(USER, records=True, limit=3)
    document.pop("generated_at")
    assert document == expected.model_dump(mode="json", exclude={"generated_at"})
    assert document["apps"][1]["consents"][0]["consent_id"] == history.feed_consent
    assert document["records"]["next_cursor"] is not None


def test_json_without_records_leaves_them_out(database_url: str, history: History) -> None:
    document = _json(_invoke(database_url, USER, "--json"))

    assert document["records"] is None
    assert [app["app_id"] for app in document["apps"]] == [ARCHIVE, FEED, IDLE]


@pytest.mark.usefixtures("history")
def test_an_unknown_user_is_said_to_have_no_disclosures(database_url: str) -> None:
    result = _invoke(database_url, "nobody")

    assert result.exit_code == 0, result.output
    assert "no disclosures for user 'nobody'" in result.stderr
    assert result.stdout == ""
    assert _json(_invoke(database_url, "nobody", "--json"))["apps"] == []


def test_an_unreachable_database_is_one_line_and_exit_1() -> None:
    # Nothing listens on port 1 of the loopback: the connection is refused at once.
    result = _invoke("postgresql+psycopg://postgres:secret@127.0.0.1:1/none", USER)

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot read the consent store at postgresql")
    assert "secret" not in result.stderr
    assert "--database-url" in lines[0]


@pytest.mark.usefixtures("history")
def test_misuse_says_what_to_change(database_url: str) -> None:
    bad_cursor = _invoke(database_url, USER, "--records", "--cursor", "nope")
    lone_cursor = _invoke(database_url, USER, "--cursor", "d1.e30")
    bad_limit = _invoke(database_url, USER, "--records", "--limit", "0")
    empty_user = _invoke(database_url, "")

    assert bad_cursor.exit_code == 2
    assert "next_cursor of the previous page" in bad_cursor.stderr
    assert lone_cursor.exit_code == 2
    assert "add --records" in lone_cursor.stderr
    assert bad_limit.exit_code == 2
    assert "--limit" in bad_limit.output
    assert empty_user.exit_code == 2
    assert "user_id is empty" in empty_user.stderr
