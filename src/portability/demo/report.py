"""What the demo shows while it runs and the summary it ends with."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table

__all__ = ["DemoReport", "Progress"]


@dataclass(slots=True)
class Progress:
    phase: str
    elapsed_s: float = 0.0
    produced: int = 0
    matched: int = 0
    deltas_emitted: int = 0
    delivered: int = 0
    verified: int = 0
    duplicates: int = 0
    revoked: int = 0
    late_grants: int = 0  # consents granted mid-stream with a snapshot
    snapshots_completed: int = 0  # of those, snapshots whose last page the app received
    bad_records_sent: int = 0
    dead_lettered: int = 0

    def table(self) -> Table:
        table = Table(
            title=f"portability demo: {self.phase} ({self.elapsed_s:.1f}s)", show_header=False
        )
        for label, value in (
            ("changes produced", self.produced),
            ("changes matched", self.matched),
            ("deltas emitted", self.deltas_emitted),
            ("deltas delivered", self.delivered),
            ("deltas verified at the app", self.verified),
            ("duplicates", self.duplicates),
            ("consents revoked mid-stream", self.revoked),
            (
                "late grants with snapshots / snapshots completed",
                f"{self.late_grants} / {self.snapshots_completed}",
            ),
            (
                "bad records injected / dead-lettered",
                f"{self.bad_records_sent} / {self.dead_lettered}",
            ),
        ):
            table.add_row(label, str(value))
        return table


@dataclass(slots=True)
class DemoReport:
    progress: Progress
    consents: int
    users: int
    apps: int
    expected: int
    missing: int
    unexpected: int
    leaks: int
    revoked_in_flight: int
    removals_missing: int
    deltas_after_removal: int
    verification_failures: int
    gaps: int
    snapshot_records: int  # records in the completed snapshots of the late grants
    copies_equal: int  # late grants whose copy (snapshot, then deltas) equals the platform's
    snapshot_doubled: int  # changes that arrived both in a snapshot and as a delta after it
    late_deltas: int  # deltas the late grants received (after their snapshots)
    retries: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    ledger_consents: int = 0  # consents whose ledger heads were compared (every consent)
    ledgers_equal: int = 0  # of those, heads equal at the app and on the platform
    ledger_events: int = 0  # events in the app's chains, all consents together
    ledger_mismatches: int = 0  # events whose ledger value the receiver computed otherwise

    @property
    def failures(self) -> list[str]:
        """Why the run failed; empty when every check passed."""
        checks = {
            "deliveries failed signature verification": self.verification_failures,
            "deltas leaked after a revocation": self.leaks,
            "revoked consents whose app was not told (authorization.removed)": (
                self.removals_missing
            ),
            "deltas arrived after their authorization.removed event": self.deltas_after_removal,
            "deltas arrived that no consent allowed": self.unexpected,
            "expected deltas went missing": self.missing,
            "sequence numbers missing (gaps)": self.gaps,
            "bad records not dead-lettered": max(
                0, self.progress.bad_records_sent - self.progress.dead_lettered
            ),
            "late grants whose snapshot did not complete": (
                self.progress.late_grants - self.progress.snapshots_completed
            ),
            "snapshot copies differ from the platform's state": (
                self.progress.snapshots_completed - self.copies_equal
            ),
            "changes arrived both in a snapshot and as a delta after it": self.snapshot_doubled,
            "consents whose ledger head at the app differs from the platform's": (
                self.ledger_consents - self.ledgers_equal
            ),
            "events whose ledger value the app computed otherwise": self.ledger_mismatches,
        }
        return [f"{count} {what}" for what, count in checks.items() if count]

    def table(self) -> Table:
        table = self.progress.table()
        table.title = "portability demo: summary"
        for label, value in (
            ("users / apps / consents", f"{self.users} / {self.apps} / {self.consents}"),
            ("deltas expected", self.expected),
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("revoked-consent leaks", self.leaks),
            ("revoked, delivered before the revocation", self.revoked_in_flight),
            ("revoked, app not told", self.removals_missing),
            ("deltas after authorization.removed", self.deltas_after_removal),
            ("signature verification failures", self.verification_failures),
            ("sequence gaps", self.gaps),
            ("snapshot records", self.snapshot_records),
            ("deltas after the snapshots", self.late_deltas),
            (
                "copies equal to the platform (snapshot + deltas)",
                f"{self.copies_equal} of {self.progress.late_grants}",
            ),
            ("changes both in a snapshot and a later delta", self.snapshot_doubled),
            (
                "ledger heads equal at the app",
                f"{self.ledgers_equal} of {self.ledger_consents} ({self.ledger_events} events)",
            ),
            ("ledger mismatches at the app", self.ledger_mismatches),
            ("delivery retries", self.retries),
            ("latency p50 / p95 / p99 (ms)", _latency(self)),
        ):
            table.add_row(label, str(value))
        return table

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["failures"] = self.failures
        return document


def _latency(report: DemoReport) -> str:
    values = (report.latency_p50_ms, report.latency_p95_ms, report.latency_p99_ms)
    return " / ".join("-" if v is None else f"{v:.0f}" for v in values)
