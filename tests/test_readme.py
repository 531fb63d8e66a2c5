"""The README and docs stay true: every setting and command is documented, every link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from portability.cli import app
from portability.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def test_every_setting_is_in_the_configuration_tables() -> None:
    missing = [
        name
        for name in Settings.model_fields
        if f"`PORTABILITY_{name.upper()}`" not in CONFIGURATION
    ]
    assert missing == []


def test_every_top_level_command_is_mentioned() -> None:
    commands = sorted(typer.main.get_group(app).commands)
    assert "demo" in commands
    missing = [name for name in commands if f"portability {name}" not in README]
    assert missing == []


def test_readme_is_a_map_and_its_links_resolve() -> None:
    """The README stays short, and every relative link of the README and docs/ names a file."""
    assert len(README.splitlines()) <= 250
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    link = re.compile(r"\]\((?!https?:|#)([^)#]+)(?:#[^)]*)?\)")
    broken = [
        f"{page.relative_to(ROOT)} -> {target}"
        for page in pages
        for target in link.findall(page.read_text())
        if not (page.parent / target).exists()
    ]
    assert broken == []
