"""The consents and apps tables at 80 columns on a pipe: ids whole, what matters kept.

The commands run as an operator runs them piped (``| less``, ``| grep``): in their own
process, stdout a pipe, ``COLUMNS=80``; the store is SQLite in ``tmp_path``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console

from portability.consent import ConsentService, create_store_engine, init_schema
from portability.ops.tables import Column, fitted_table


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A store with an app and two consents (one with an expiry); its URL and the ids."""
    url = f"sqlite:///{tmp_path / 'consents.db'}"
    engine = create_store_engine(url)
    init_schema(engine)
    service = ConsentService(engine)
    app = service.register_app("Archive Pal", "https://archivepal.example/webhooks/portability")
    ongoing = service.grant(
        "u00000042", app.app_id, ["post", "profile", "follow"], user_region="DE"
    )
    one_time = service.grant(
        "u00000043",
        app.app_id,
        ["post"],
        "one_time",
        datetime(2030, 1, 1, tzinfo=UTC),
        user_region="FR",
    )
    engine.dispose()
    return url, {
        "app": app.app_id,
        "ongoing": ongoing.consent_id,
        "one_time": one_time.consent_id,
    }


def _run(url: str, *args: str, columns: int = 80) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTABILITY_")}
    env["COLUMNS"] = str(columns)
    done = subprocess.run(  # noqa: S603 - this interpreter, the test's own arguments
        [sys.executable, "-m", "portability", "--database-url", url, *args],
        env=env,
        capture_output=True,  # stdout a pipe, as in `portability consents list | less`
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stdout.decode()


def _widest(text: str) -> int:
    return max(cell_len(line) for line in text.splitlines())


def test_consents_list_keeps_ids_whole_at_80_columns(store: tuple[str, dict[str, str]]) -> None:
    url, ids = store

    text = _run(url, "consents", "list")

    for consent in (ids["ongoing"], ids["one_time"]):
        row = next(line for line in text.splitlines() if consent in line)
        assert ids["app"] in row
        assert "active" in row
    assert "u00000043" in text
    assert _widest(text) <= 80
    assert "not shown at this width: mode, granted_at, expires_at" in " ".join(text.split())


def test_consents_list_shows_more_columns_when_there_is_room(
    store: tuple[str, dict[str, str]],
) -> None:
    url, ids = store

    text = _run(url, "consents", "list", columns=140)

    row = next(line for line in text.splitlines() if ids["one_time"] in line)
    assert "one_time" in row
    assert "2030-01-01 00:00Z" in row
    assert "not shown" not in text
    assert _widest(text) <= 140


def test_consents_list_json_gives_null_for_no_expiry(store: tuple[str, dict[str, str]]) -> None:
    url, ids = store

    listed: list[dict[str, Any]] = json.loads(_run(url, "consents", "list", "--json"))

    expiry = {consent["consent_id"]: consent["expires_at"] for consent in listed}
    assert expiry[ids["ongoing"]] is None
    assert expiry[ids["one_time"]] == "2030-01-01T00:00:00+00:00"


def test_apps_list_keeps_the_app_id_whole_at_80_columns(
    store: tuple[str, dict[str, str]],
) -> None:
    url, ids = store

    text = _run(url, "apps", "list")

    row = next(line for line in text.splitlines() if ids["app"] in line)
    assert "Archive Pal" in row
    assert "https://archivepal.example/" in text.replace("\n", "")  # folded, not cut
    assert _widest(text) <= 80


@pytest.mark.parametrize("width", [40, 60, 80, 100, 200])
def test_a_fitted_table_fits_and_keeps_whole_columns_whole(width: int) -> None:
    columns = [
        Column("id", whole=True),
        Column("note", squeeze=8),
        Column("extra", drop=2),
        Column("more", drop=1),
    ]
    rows = [["cns_1f0e2d3c4b5a6978", "a long note " * 4, "x" * 20, "y" * 20]]
    console = Console(width=width, record=True, file=io.StringIO())

    console.print(fitted_table(columns, rows, width))

    text = console.export_text()
    assert "cns_1f0e2d3c4b5a6978" in text
    assert _widest(text) <= width
    shown = {name for name in ("extra", "more") if name in text.splitlines()[1]}
    # "extra" goes first (the higher drop), then "more".
    expected = {40: set(), 60: {"more"}}.get(width, {"extra", "more"})
    assert shown == expected
