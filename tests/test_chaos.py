"""The chaos suite's short version, as ``make chaos`` runs the long one (docs/chaos.md).

Every role as its own OS process on a broker of its own and a private PostgreSQL server,
under four faults (a matcher and a worker killed, a worker paused, the consent store
stopped), with a platform publishing, consent churn and a receiving app that fails, stalls
and answers 429/503. The oracle must find nothing, and the run must leave no process behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from chaos.postgres import PrivatePostgres

pytestmark = [pytest.mark.xdist_group("test_chaos"), pytest.mark.timeout(330)]

_ROOT = Path(__file__).resolve().parent.parent
_BOUND_S = 300.0  # the run is about a minute alone; a loaded machine (make test) is slower


def _left_behind(folder: Path) -> list[str]:
    """Processes still running with the run's folder in their command or environment (every
    role's data folder, the receiving app's log, the broker's): none may outlive the run."""
    marker = str(folder).encode()
    found: list[str] = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            seen = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if marker in seen:
            found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return found


def _cells(line: str) -> list[str]:
    """A row of the table's fault columns (two spaces or more between cells)."""
    return [cell for cell in re.split(r"\s{2,}", line.strip()) if cell]


def test_the_short_chaos_run_passes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    try:
        PrivatePostgres().remove()
    except (RuntimeError, subprocess.CalledProcessError) as error:
        pytest.skip(f"no private PostgreSQL server here: {error}")
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTABILITY_")}
    process = subprocess.Popen(  # noqa: S603  # the suite's own command
        [sys.executable, "-m", "chaos", "--short", "--out", str(out)],
        cwd=_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = process.communicate(timeout=_BOUND_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the suite stops what it started on SIGTERM
        output, _ = process.communicate(timeout=60)
        pytest.fail(f"not over in {_BOUND_S:g} s:\n{output.decode(errors='replace')}")
    text = output.decode(errors="replace")

    assert process.returncode == 0, text
    report = (out / "short" / "report.txt").read_text()
    assert "\nPASS\n" in report, report
    rows = {row[0]: row[1:] for row in map(_cells, report.splitlines()) if row}
    for kind in ("kill matcher", "kill worker", "pause worker", "postgres outage"):
        assert rows[kind][:2] == ["1", "1"], report  # injected once, survived
    assert _left_behind(out) == [], "processes of the run outlived it"
