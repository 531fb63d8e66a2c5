"""The demo end to end, small: it must report every expected delta and nothing else, and
every late grant's copy (snapshot, then deltas) equal to the platform's state."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from portability.broker import EmbeddedBroker
from portability.demo import DemoOptions, DemoReport, Progress, run_demo
from portability.settings import Settings


async def test_small_demo_delivers_everything_it_should(
    broker: EmbeddedBroker, settings: Settings
) -> None:
    seen: list[str] = []

    def on_progress(progress: Progress) -> None:
        if not seen or seen[-1] != progress.phase:
            seen.append(progress.phase)

    # Two seconds of changes: the late grants' snapshots are usually taken while they flow.
    options = DemoOptions(
        users=300, events=3_000, rate=1_500, revoke_fraction=0.1, late_grants=3, bad_records=2
    )
    report = await run_demo(
        options, settings.model_copy(update={"kafka_bootstrap": broker.bootstrap}), on_progress
    )

    assert report.failures == []
    assert report.progress.produced == 3_000
    assert report.expected > 0
    assert report.missing == 0
    assert report.leaks == 0
    assert report.unexpected == 0
    assert report.verification_failures == 0
    assert report.gaps == 0
    assert (
        report.progress.verified == report.expected + report.revoked_in_flight + report.late_deltas
    )
    assert report.progress.dead_lettered == report.progress.bad_records_sent == 2
    assert report.progress.revoked > 0
    # Every revoked consent's app was told, and no delta of it came after the event.
    assert report.removals_missing == 0
    assert report.deltas_after_removal == 0
    # The late grants got their snapshots mid-stream, then deltas: each copy is the platform's.
    assert report.progress.late_grants == 3
    assert report.progress.snapshots_completed == 3
    assert report.copies_equal == 3
    assert report.snapshot_records > 0
    assert report.snapshot_doubled == 0
    assert report.latency_p99_ms is not None
    # Each consent's ledger head at the app is the platform's (the message log's writer's).
    assert report.ledger_consents == report.consents + report.progress.late_grants
    assert report.ledgers_equal == report.ledger_consents
    assert report.ledger_events >= report.progress.verified  # every delta, pages, removals
    assert report.ledger_mismatches == 0
    assert seen[0] == "granting consents"
    assert "streaming changes" in seen
    assert seen[-1] == "done"


def test_report_fails_on_snapshot_mismatches() -> None:
    progress = Progress(phase="done", late_grants=5, snapshots_completed=4)
    report = _report(
        progress=progress,
        snapshot_records=12,
        copies_equal=2,
        snapshot_doubled=1,
        late_deltas=7,
    )

    assert report.failures == [
        "1 late grants whose snapshot did not complete",
        "2 snapshot copies differ from the platform's state",
        "1 changes arrived both in a snapshot and as a delta after it",
    ]
    assert report.as_dict()["copies_equal"] == 2


def test_report_fails_on_ledger_heads_that_differ() -> None:
    report = _report(ledger_consents=10, ledgers_equal=9, ledger_mismatches=2)

    assert report.failures == [
        "1 consents whose ledger head at the app differs from the platform's",
        "2 events whose ledger value the app computed otherwise",
    ]
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(report.table())
    [line] = [x for x in console.export_text().splitlines() if "ledger heads equal" in x]
    assert "9 of 10 (0 events)" in line


def _report(**changes: Any) -> DemoReport:
    """A report of a small run with nothing wrong, but for ``changes``."""
    fields: dict[str, Any] = {
        "progress": Progress(phase="done"),
        "consents": 10,
        "users": 100,
        "apps": 2,
        "expected": 50,
        "missing": 0,
        "unexpected": 0,
        "leaks": 0,
        "revoked_in_flight": 0,
        "removals_missing": 0,
        "deltas_after_removal": 0,
        "verification_failures": 0,
        "gaps": 0,
        "snapshot_records": 0,
        "copies_equal": 0,
        "snapshot_doubled": 0,
        "late_deltas": 0,
        "retries": 0,
        "latency_p50_ms": None,
        "latency_p95_ms": None,
        "latency_p99_ms": None,
    }
    return DemoReport(**(fields | changes))
