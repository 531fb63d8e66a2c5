"""``portability secrets``: a new key, the store's census by key, and re-sealing with a new key
(the key rotation of the README), driven in-process with Typer's CliRunner on SQLite."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from portability.cli import app

pytestmark = pytest.mark.usefixtures("cli_environment")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_rotating_the_sealing_key_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = ["--database-url", f"sqlite:///{tmp_path}/c.db"]
    registered = as_json(invoke(*db, "apps", "register", "A", "https://a.example/h", "--id", "a1"))
    assert registered["signing_secret"].startswith("whsec_")  # shown once, as by the API
    status = as_json(invoke(*db, "secrets", "status", "--json"))
    assert (status["keys"], status["secrets_by_key"]) == (["local"], {"local": 1})

    made = invoke("secrets", "new-key", "--file", str(tmp_path / "k2.key"), "--key-id", "k2")
    assert made.exit_code == 0, made.output
    k2 = (tmp_path / "k2.key").read_text().strip()
    assert stat.S_IMODE((tmp_path / "k2.key").stat().st_mode) == 0o600
    assert k2.partition(":")[2] not in made.output  # the id is printed, never the key
    assert "wrote key k2" in " ".join(made.output.split())
    again = invoke("secrets", "new-key", "--file", str(tmp_path / "k2.key"))
    assert again.exit_code != 0
    assert "never overwritten" in again.output

    local = (tmp_path / "data" / "secrets.key").read_text().strip()
    monkeypatch.setenv("PORTABILITY_SECRETS_KEY", f"{k2},{local}")
    report = as_json(invoke(*db, "secrets", "reencrypt", "--json"))
    assert (report["sealing_key"], report["changed"], report["failed"]) == ("k2", ["a1"], [])
    status = as_json(invoke(*db, "secrets", "status", "--json"))
    assert (status["keys"], status["secrets_by_key"]) == (["k2", "local"], {"k2": 1})

    # A ring without k2 cannot open what k2 sealed: named, exit 1, nothing changed.
    monkeypatch.setenv("PORTABILITY_SECRETS_KEY", local)
    failed = invoke(*db, "secrets", "reencrypt")
    assert failed.exit_code == 1
    assert "a1: sealed with key 'k2', which PORTABILITY_SECRETS_KEY does not hold" in (
        " ".join(failed.output.split())
    )
    status = as_json(invoke(*db, "secrets", "status", "--json"))
    assert status["unknown_keys"] == ["k2"]


def test_a_shared_deployment_without_a_key_is_told_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORTABILITY_DEVELOPMENT_MODE", "false")
    result = invoke("--database-url", f"sqlite:///{tmp_path}/c.db", "secrets", "status")
    assert result.exit_code == 2
    assert "PORTABILITY_SECRETS_KEY is not set" in " ".join(result.output.split())
