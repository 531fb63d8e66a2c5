"""``portability apps register --delivery-mode poll``: a poll app needs no webhook URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from portability.cli import app

pytestmark = pytest.mark.usefixtures("cli_environment")


def invoke(tmp_path: Path, *args: str) -> tuple[int, str]:
    """The exit code, and stdout if it succeeded (else everything it wrote)."""
    database = ["--database-url", f"sqlite:///{tmp_path}/c.db"]
    result = CliRunner().invoke(app, [*database, *args], catch_exceptions=False)
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_a_poll_app_registers_without_a_url_and_lists_its_mode(tmp_path: Path) -> None:
    code, output = invoke(tmp_path, "apps", "register", "Poller", "--delivery-mode", "poll")

    assert code == 0, output
    document = json.loads(output)
    assert (document["delivery_mode"], document["webhook_url"]) == ("poll", "")
    assert document["signing_secret"].startswith("whsec_")
    code, listed = invoke(tmp_path, "apps", "list", "--json")
    assert [(a["app_id"], a["delivery_mode"]) for a in json.loads(listed)] == [
        (document["app_id"], "poll")
    ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("Hooked",), "webhook_url is required"),
        (("Hooked", "https://h.example/h", "--delivery-mode", "push"), "unknown delivery_mode"),
    ],
)
def test_a_registration_that_cannot_receive_is_refused_with_what_to_do(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    code, output = invoke(tmp_path, "apps", "register", *args)

    assert code != 0
    assert says in " ".join(output.split())
