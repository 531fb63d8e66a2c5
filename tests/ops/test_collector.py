"""A pipeline process tunes its garbage collector once started (portability.runtime)."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import gc, json
from portability.runtime import settle_collector
before = gc.get_threshold()
settle_collector()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_settled_collector_freezes_start_up_and_collects_young_objects_less_often() -> None:
    # In a process of its own: the setting is process-wide, and this one runs other tests.
    probe = subprocess.run(  # noqa: S603 - our own interpreter and probe
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    figures = json.loads(probe.stdout)
    assert figures["after"][0] == 50_000 > figures["before"][0]
    assert figures["after"][1:] == figures["before"][1:]  # the older generations as they were
    assert figures["frozen"] > 10_000  # the modules imported at start-up, out of its sight
