"""The ``portability`` command line, driven in-process with Typer's CliRunner.

The consent commands run against SQLite in ``tmp_path``; ``topics create`` runs against the
session's embedded Tansu, on a topic prefix unique to the test (the other topics commands
and ``lag`` are in test_ops_cli.py).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from portability.broker import EmbeddedBroker
from portability.cli import app

_COMMANDS = (
    "demo",
    "broker",
    "topics",
    "lag",
    "dlq",
    "matcher",
    "worker",
    "relay",
    "pipeline",
    "consents",
    "apps",
)


pytestmark = pytest.mark.usefixtures("cli_environment")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def db_args(tmp_path: Path) -> list[str]:
    return ["--database-url", f"sqlite:///{tmp_path}/c.db"]


def _invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _flat(text: str) -> str:
    """Rich may wrap a long message across lines; compare with whitespace collapsed."""
    return " ".join(text.split())


def test_help_lists_every_command(runner: CliRunner) -> None:
    result = _invoke(runner, "--help")

    assert result.exit_code == 0, result.output
    for command in _COMMANDS:
        assert command in result.stdout


def test_apps_register_prints_id_and_secret(runner: CliRunner, db_args: list[str]) -> None:
    result = _invoke(
        runner, *db_args, "apps", "register", "Example", "https://example.test/hook", "--id", "app1"
    )

    document = _json(result)
    assert document["app_id"] == "app1"
    assert document["webhook_url"] == "https://example.test/hook"
    assert document["signing_secret"].startswith("whsec_")


def test_consent_grant_list_revoke(runner: CliRunner, db_args: list[str]) -> None:
    registered = _invoke(
        runner, *db_args, "apps", "register", "Example", "https://example.test/hook", "--id", "app1"
    )
    assert registered.exit_code == 0, registered.output

    granted = _json(
        _invoke(
            runner, *db_args, "consents", "grant", "user1", "app1",
            "--categories", "post,profile", "--json",
        )
    )  # fmt: skip
    assert len(granted) == 1
    consent = granted[0]
    assert consent["user_id"] == "user1"
    assert consent["app_id"] == "app1"
    assert sorted(consent["categories"]) == ["post", "profile"]
    assert consent["status"] == "active"

    listed = _json(_invoke(runner, *db_args, "consents", "list", "--json", "--user", "user1"))
    assert [(row["consent_id"], row["status"]) for row in listed] == [
        (consent["consent_id"], "active")
    ]
    assert _json(_invoke(runner, *db_args, "consents", "list", "--json", "--user", "other")) == []

    revoked = _json(
        _invoke(runner, *db_args, "consents", "revoke", consent["consent_id"], "--json")
    )
    assert [(row["consent_id"], row["status"]) for row in revoked] == [
        (consent["consent_id"], "revoked")
    ]
    listed = _json(_invoke(runner, *db_args, "consents", "list", "--json", "--user", "user1"))
    assert [row["status"] for row in listed] == ["revoked"]


def test_revoke_without_json_prints_a_table(runner: CliRunner, db_args: list[str]) -> None:
    _invoke(
        runner, *db_args, "apps", "register", "Example", "https://example.test/hook", "--id", "app1"
    )
    consent = _json(_invoke(runner, *db_args, "consents", "grant", "user1", "app1", "--json"))[0]

    result = _invoke(runner, *db_args, "consents", "revoke", consent["consent_id"])

    assert result.exit_code == 0, result.output
    assert "revoked" in result.stdout


def test_grant_with_unknown_category_exits_2(runner: CliRunner, db_args: list[str]) -> None:
    _invoke(
        runner, *db_args, "apps", "register", "Example", "https://example.test/hook", "--id", "app1"
    )

    result = _invoke(
        runner, *db_args, "consents", "grant", "user1", "app1", "--categories", "post,bogus"
    )

    assert result.exit_code == 2, result.output
    assert "bogus" in _flat(result.stderr)
    assert "unknown category" in _flat(result.stderr)
    assert _json(_invoke(runner, *db_args, "consents", "list", "--json")) == []


def test_grant_to_unknown_app_exits_2(runner: CliRunner, db_args: list[str]) -> None:
    result = _invoke(runner, *db_args, "consents", "grant", "user1", "nosuchapp", "--json")

    assert result.exit_code == 2, result.output
    message = _flat(result.stderr)
    assert "no app 'nosuchapp'" in message
    assert "register it first" in message
    assert result.stdout == ""


def test_revoke_unknown_consent_exits_2(runner: CliRunner, db_args: list[str]) -> None:
    result = _invoke(runner, *db_args, "consents", "revoke", "nosuchconsent")

    assert result.exit_code == 2, result.output
    assert "nosuchconsent" in _flat(result.stderr)


def test_topics_create_creates_and_lists_pipeline_topics(
    runner: CliRunner, broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"cli{uuid.uuid4().hex[:10]}."
    monkeypatch.setenv("PORTABILITY_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("PORTABILITY_PARTITIONS", "2")

    first = _invoke(runner, "--bootstrap", broker.bootstrap, "topics", "create")

    assert first.exit_code == 0, first.output
    assert f"{prefix}account.changes" in first.stdout
    assert f"{prefix}consents" in first.stdout
    assert "created" in first.stdout

    again = _invoke(runner, "--bootstrap", broker.bootstrap, "topics", "create")

    assert again.exit_code == 0, again.output
    assert f"{prefix}account.changes" in again.stdout
    assert "exists" in again.stdout
    assert "created" not in again.stdout


@pytest.mark.parametrize("command", [["topics", "create"], ["topics", "list"], ["lag"]])
def test_kafka_commands_without_bootstrap_exit_2(runner: CliRunner, command: list[str]) -> None:
    result = _invoke(runner, *command)

    assert result.exit_code == 2, result.output
    assert "PORTABILITY_KAFKA_BOOTSTRAP" in _flat(result.stderr)


def test_unknown_portability_setting_is_a_usage_error(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORTABILITY_NO_SUCH_SETTING", "1")

    result = _invoke(runner, "topics", "list")

    assert result.exit_code == 2, result.output
    assert "no_such_setting" in _flat(result.output).lower()


def test_grant_for_a_user_outside_the_eea_and_uk_is_refused(
    runner: CliRunner, db_args: list[str]
) -> None:
    _invoke(
        runner, *db_args, "apps", "register", "Example", "https://example.test/hook", "--id", "app1"
    )

    refused = _invoke(runner, *db_args, "consents", "grant", "user1", "app1", "--region", "US")
    granted = _invoke(
        runner, *db_args, "consents", "grant", "user2", "app1", "--region", "FR", "--json"
    )

    assert refused.exit_code == 2, refused.output
    assert "US" in _flat(refused.stderr)
    assert "EEA" in _flat(refused.stderr)
    assert [c["user_id"] for c in _json(granted)] == ["user2"]
    listed = _json(_invoke(runner, *db_args, "consents", "list", "--json"))
    assert [c["user_id"] for c in listed] == ["user2"]
