"""Settings that cannot work: one line naming the setting, exit code 2, and never a secret.

pydantic's own message repeats every input of a failed model check: an unknown variable once
printed the operator token and the database password. These tests set secrets beside the
misuse and look for them in everything the command wrote.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner, Result

from portability.cli import app
from portability.settings import Settings
from portability.settings_types import SecretUrl, masked_url

from .processes import role_environment, started

pytestmark = pytest.mark.usefixtures("cli_environment")

OPERATOR_TOKEN = "op-token-7f3a9c1e5b2d4a68"
PLATFORM_TOKEN = "pf-token-0c9e8d7b6a5f4e3d"
PASSWORD = "db-pass-Zq81xW"
DATABASE_URL = f"postgresql+psycopg://portability:{PASSWORD}@127.0.0.1:5432/portability"
SECRETS = (OPERATOR_TOKEN, PLATFORM_TOKEN, PASSWORD)


@pytest.fixture
def secrets_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTABILITY_API_OPERATOR_TOKEN", OPERATOR_TOKEN)
    monkeypatch.setenv("PORTABILITY_API_PLATFORM_TOKEN", PLATFORM_TOKEN)
    monkeypatch.setenv("PORTABILITY_DATABASE_URL", DATABASE_URL)


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _assert_one_clean_line(result: Result, *fragments: str) -> str:
    """Exit 2, one line of output (stderr), no traceback, no secret; returns the line."""
    assert result.exit_code == 2, result.output
    for secret in SECRETS:
        assert secret not in result.output, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.usefixtures("secrets_set")
@pytest.mark.parametrize(
    "command", [["topics", "list"], ["consents", "list"], ["matcher"], ["api"]], ids=" ".join
)
def test_an_unknown_variable_beside_secrets_names_it_and_prints_no_secret(
    monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("PORTABILITY_OPERATOR_TOKEN", "a misspelling of the token's name")

    result = _invoke(*command)

    _assert_one_clean_line(
        result, "unknown setting(s) PORTABILITY_OPERATOR_TOKEN", "docs/configuration.md"
    )


@pytest.mark.usefixtures("secrets_set")
def test_a_bad_value_of_a_secret_setting_names_it_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    short = "short-Tk9"  # too short: tokens need 16 characters
    monkeypatch.setenv("PORTABILITY_API_OPERATOR_TOKEN", short)

    result = _invoke("consents", "list")

    line = _assert_one_clean_line(result, "PORTABILITY_API_OPERATOR_TOKEN", "16")
    assert short not in result.output, line


@pytest.mark.usefixtures("secrets_set")
def test_a_database_url_that_does_not_parse_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "PORTABILITY_DATABASE_URL", f"postgresql+psycopg://portability:{PASSWORD}@db:port/x"
    )

    result = _invoke("apps", "list")

    _assert_one_clean_line(result, "PORTABILITY_DATABASE_URL", "--database-url", "not a database")


@pytest.mark.usefixtures("secrets_set")
def test_a_bad_flag_is_named_with_its_variable() -> None:
    result = _invoke("--bootstrap", "kafka 1:9092", "topics", "list")

    _assert_one_clean_line(result, "PORTABILITY_KAFKA_BOOTSTRAP (or --bootstrap)", "host:port")


@pytest.mark.usefixtures("secrets_set")
def test_several_bad_settings_are_named_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTABILITY_PARTITIONS", "0")
    monkeypatch.setenv("PORTABILITY_DELIVERY_RETRY_JITTER", "2")

    result = _invoke("topics", "list")

    _assert_one_clean_line(
        result, "PORTABILITY_PARTITIONS: ", "; PORTABILITY_DELIVERY_RETRY_JITTER"
    )


@pytest.mark.usefixtures("secrets_set")
def test_a_list_setting_that_is_not_json_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTABILITY_DELIVERY_RETRY_SCHEDULE_S", "0, 5, 300")

    result = _invoke("topics", "list")

    _assert_one_clean_line(result, "PORTABILITY_DELIVERY_RETRY_SCHEDULE_S", "JSON")


def test_secret_settings_print_masked(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=SecretUrl(DATABASE_URL),
        schema_registry_url=SecretUrl(f"https://registry:{PASSWORD}@sr.example:8081/"),
        api_operator_token=SecretStr(OPERATOR_TOKEN),
    )

    printed = f"{settings!r} {settings} {settings.model_dump_json()}"

    for secret in SECRETS:
        assert secret not in printed
    assert "postgresql+psycopg://portability:***@127.0.0.1:5432/portability" in printed
    assert settings.resolved_database_url() == DATABASE_URL


def test_masked_url_hides_passwords_in_user_info_and_query() -> None:
    assert masked_url("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    assert masked_url("postgresql:///db?host=/run&password=x") == (
        "postgresql:///db?host=/run&password=***"
    )
    assert masked_url("sqlite:////var/lib/c.db") == "sqlite:////var/lib/c.db"
    assert masked_url("http://user@h:8081") == "http://user@h:8081"


async def test_a_role_process_with_an_unknown_variable_prints_one_line_and_no_secret(
    tmp_path: Path,
) -> None:
    env = role_environment(
        tmp_path,
        api_operator_token=OPERATOR_TOKEN,
        api_platform_token=PLATFORM_TOKEN,
        database_url=DATABASE_URL,
        kafka_bootstrap="127.0.0.1:9",
        no_such_setting="1",
    )

    async with started(["pipeline"], env, tmp_path) as process:
        code = await process.exit_code(30.0)

    output = process.output()
    assert code == 2, output
    assert output.strip().splitlines() == [
        "error: unknown setting(s) PORTABILITY_NO_SUCH_SETTING; see docs/configuration.md"
    ]
    for secret in SECRETS:
        assert secret not in output
