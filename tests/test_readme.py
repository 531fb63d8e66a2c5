"""The README stays true: every setting and every CLI command it must mention is there."""

from __future__ import annotations

from pathlib import Path

import typer.main

from portability.cli import app
from portability.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_tables() -> None:
    missing = [
        name for name in Settings.model_fields if f"`PORTABILITY_{name.upper()}`" not in README
    ]
    assert missing == []


def test_every_top_level_command_is_mentioned() -> None:
    commands = sorted(typer.main.get_group(app).commands)
    assert "demo" in commands
    missing = [name for name in commands if f"portability {name}" not in README]
    assert missing == []
