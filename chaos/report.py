"""The suite's table: faults by kind, whether each was survived, how long the pipeline took to
recover from it, latency under faults, and the oracle's checks. Reads only the oracle's
verdict and the record files (nothing of the pipeline).

*Recovery* of a fault is the time from its injection until the changes published from then
on that reached an app had arrived: those of its first ``RECOVERY_WINDOW_S`` seconds, and at
least the first ``RECOVERY_CHANGES`` of them (a quiet moment has few). For a crashed
matcher: how long its partitions' changes waited for the group to hand them over. A fault is
*survived* when the harness saw its processes serve again (a replacement healthy, a paused
process resumed, a server back) and changes published after it were delivered.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from chaos.evidence import Evidence
from chaos.oracle import START_WINDOW_S, Verdict

__all__ = ["RECOVERY_CHANGES", "RECOVERY_WINDOW_S", "percentile", "recoveries", "table"]

RECOVERY_WINDOW_S = 2.0
RECOVERY_CHANGES = 5
CHECKS = (
    "missing",
    "gap",
    "order",
    "stable ids",
    "content",
    "after revocation",
    "removal",
    "snapshot",
    "signature",
    "unknown consent",
    "crash loop",
)


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def recoveries(evidence: Evidence, verdict: Verdict) -> list[float | None]:
    """Per fault (in ``evidence.faults`` order), its recovery in seconds, or None if no change
    published in its window reached an app."""
    found: list[float | None] = []
    for fault in evidence.faults:
        began = fault["began"]
        arrivals: list[float] = []
        for change in evidence.changes:  # in publication order
            if change.sent_at < began or change.change_id not in verdict.first_seen:
                continue
            if change.sent_at >= began + RECOVERY_WINDOW_S and len(arrivals) >= RECOVERY_CHANGES:
                break
            arrivals.append(verdict.first_seen[change.change_id])
        found.append(max(arrivals) - began if arrivals else None)
    return found


def _fault_rows(evidence: Evidence, verdict: Verdict, skipped: dict[str, str]) -> list[list[str]]:
    by_kind: dict[str, list[tuple[dict[str, Any], float | None]]] = defaultdict(list)
    for fault, recovery in zip(evidence.faults, recoveries(evidence, verdict), strict=True):
        by_kind[fault["kind"]].append((fault, recovery))
    rows = []
    for kind, faults in by_kind.items():
        times = [r for _, r in faults if r is not None]
        survived = sum(1 for f, r in faults if f.get("survived") and r is not None)
        spread = f"{statistics.median(times):.1f} / {max(times):.1f}" if times else "-"
        rows.append([kind, str(len(faults)), str(survived), spread])
    for kind, reason in skipped.items():
        rows.append([kind, "0", "-", f"not run: {reason}"])
    return rows


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]


def table(
    evidence: Evidence,
    verdict: Verdict,
    header: str,
    skipped: dict[str, str],
    exits: dict[str, int],
) -> str:
    """The whole report, as printed."""
    lines = [header]
    rows = [["fault", "injected", "survived", "recovery s (median / max)"]]
    rows += _fault_rows(evidence, verdict, skipped)
    lines += ["", *_columns(rows)]
    latencies = [latency for _, latency in verdict.latencies]
    lines.append("")
    lines.append(
        "latency under faults, change published -> received by the app: "
        f"p50 {percentile(latencies, 0.5):.2f} s, p95 {percentile(latencies, 0.95):.2f} s, "
        f"p99 {percentile(latencies, 0.99):.2f} s, max {max(latencies, default=0.0):.2f} s "
        f"({len(latencies)} deltas)"
    )
    lines.append(
        f"app: {evidence.requests} requests, {evidence.refused} refused by its bad days, "
        f"{verdict.duplicates} duplicate deltas dropped, {verdict.removals} removals told, "
        f"{verdict.copies_checked} snapshot copies compared"
    )
    lines.append(
        f"allowed by the contract: {verdict.missed_at_start} changes made before the matcher "
        f"read their grant (within {START_WINDOW_S:g} s of it), {verdict.dropped_at_end} in "
        "flight when their consent ended"
    )
    if exits:
        shown = ", ".join(f"{role} {count}" for role, count in sorted(exits.items()))
        lines.append(f"processes that exited on their own (restarted): {shown}")
    lines.append("")
    lines.append("check               violations")
    for check in CHECKS:
        found = verdict.violations.get(check, [])
        lines.append(f"{check:<20}{len(found)}")
        lines += [f"    {detail}" for detail in found[:5]]
    failed = [check for check, found in verdict.violations.items() if found]
    lines.append("")
    lines.append("PASS" if not failed else f"FAIL: {', '.join(sorted(failed))}")
    return "\n".join(lines)
