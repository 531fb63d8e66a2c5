"""What a receiving app does with ``portability.snapshot`` pages.

A snapshot's pages come in order (1, 2, ...) and the last is flagged. An app replaces its copy
of the granted categories with the snapshot's records, then applies the deltas that follow:
the first of them may skip sequence numbers (deltas the snapshot already holds are not sent),
so the consent's sequence restarts there instead of opening a gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from portability.receiver.errors import SnapshotPageError

__all__ = ["ReceivedSnapshot", "SnapshotPageInfo", "parse_snapshot_page"]


@dataclass(frozen=True, slots=True)
class SnapshotPageInfo:
    """One page as received."""

    consent_id: str
    snapshot_id: str
    epoch: int
    page: int
    last: bool
    position: str
    records: list[dict[str, Any]]


@dataclass(slots=True)
class ReceivedSnapshot:
    """The pages of a consent's latest snapshot received so far.

    Attributes:
        records: Every record of the pages in order (empty when records are not retained).
        record_count: How many records the pages held.
        complete: The last page arrived.
        deltas_before: How many of the consent's deltas had arrived when its first page did
            (those after it continue from the snapshot).
    """

    snapshot_id: str
    epoch: int
    position: str
    deltas_before: int = 0
    pages: int = 0
    record_count: int = 0
    complete: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)

    def add(self, page: SnapshotPageInfo, retain: bool) -> bool:
        """Add the next page; False for a page already added (a redelivery)."""
        if page.page <= self.pages:
            return False
        if page.page != self.pages + 1:
            raise SnapshotPageError(
                f"snapshot {page.snapshot_id} page {page.page} arrived after page {self.pages}: "
                "pages are delivered in order"
            )
        self.pages = page.page
        self.record_count += len(page.records)
        if retain:
            self.records.extend(page.records)
        self.complete = page.last
        return True


def parse_snapshot_page(document: dict[str, Any]) -> SnapshotPageInfo:
    """The page in a ``portability.snapshot`` event body (already JSON-parsed).

    Raises:
        SnapshotPageError: A required field is missing or of the wrong type.
    """
    data = document.get("data")
    if not isinstance(data, dict):
        raise SnapshotPageError("data must be an object")
    expected: dict[str, type] = {
        "consent_id": str,
        "snapshot_id": str,
        "epoch": int,
        "page": int,
        "last": bool,
        "position": str,
        "records": list,
    }
    for name, kind in expected.items():
        if not isinstance(data.get(name), kind):
            raise SnapshotPageError(f"data.{name} must be a {kind.__name__}")
    return SnapshotPageInfo(
        consent_id=data["consent_id"],
        snapshot_id=data["snapshot_id"],
        epoch=data["epoch"],
        page=data["page"],
        last=data["last"],
        position=data["position"],
        records=data["records"],
    )
