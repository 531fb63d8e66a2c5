"""Per-consent sequence bookkeeping and latency percentiles, without HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from portability.receiver.tracking import ConsentLog, LatencyRecorder
from portability.webhooks.parsing import Delta


def delta(sequence: int, delta_id: str | None = None) -> Delta:
    return Delta(
        id=delta_id or f"d{sequence}",
        sequence=sequence,
        change_id=f"c{sequence}",
        category="post",
        operation="delete",
        record_id=f"p{sequence}",
        occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
        record=None,
    )


def test_in_order_sequences_open_no_gap() -> None:
    log = ConsentLog()

    assert [log.add(delta(sequence)) for sequence in (1, 2, 3)] == [(None, 0)] * 3
    assert log.missing_ranges() == []


def test_gap_opens_and_late_arrivals_close_it() -> None:
    log = ConsentLog()
    log.add(delta(1))

    assert log.add(delta(5)) == ((2, 4), 3)
    assert log.add(delta(3)) == (None, -1)
    assert log.missing_ranges() == [(2, 2), (4, 4)]
    assert log.add(delta(8)) == ((6, 7), 2)
    assert log.detected_gaps == [(2, 4), (6, 7)]
    assert log.missing_ranges() == [(2, 2), (4, 4), (6, 7)]


def test_a_reused_sequence_does_not_skew_the_count() -> None:
    log = ConsentLog()
    log.add(delta(1))

    assert log.add(delta(1, delta_id="other")) == (None, 0)
    assert len(log.deltas) == 2


@pytest.mark.parametrize(
    ("percent", "expected"), [(50, 50.0), (95, 95.0), (99, 99.0), (100, 100.0), (1, 1.0)]
)
def test_nearest_rank_percentiles(percent: float, expected: float) -> None:
    recorder = LatencyRecorder()
    for value in reversed(range(1, 101)):
        recorder.add(float(value))

    assert recorder.percentile(percent) == expected


def test_no_percentile_without_data() -> None:
    assert LatencyRecorder().percentile(50) is None


def test_sequences_below_the_first_gap_are_kept_as_one_number() -> None:
    log = ConsentLog(retain=False)

    for sequence in (1, 2, 3, 6, 4, 8):
        log.add(delta(sequence))

    assert (log.contiguous, log.sequences) == (4, {6, 8})
    assert log.missing_ranges() == [(5, 5), (7, 7)]
    assert log.deltas == []
    assert all(log.has(sequence) for sequence in (1, 4, 6, 8))
    assert not any(log.has(sequence) for sequence in (5, 7, 9))
    log.add(delta(5))
    log.add(delta(7))
    assert (log.contiguous, log.sequences, log.missing_ranges()) == (8, set(), [])


def test_a_latency_window_keeps_the_latest_only() -> None:
    recorder = LatencyRecorder(window=3)

    for latency in (100.0, 1.0, 2.0, 3.0):
        recorder.add(latency)

    assert len(recorder) == 3
    assert recorder.percentile(100) == 3.0  # 100 ms was the oldest, and left the window
    with pytest.raises(ValueError, match="window"):
        LatencyRecorder(window=0)
