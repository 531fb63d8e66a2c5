"""OffsetTracker: what may be committed when records finish out of order."""

from __future__ import annotations

from portability.delivery import OffsetTracker


def test_commits_up_to_the_first_offset_not_done_and_counts_what_is_held() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.add(offset)
    tracker.done(12)
    tracker.done(13)
    # Done behind 10 and 11: not committable yet, but no longer held.
    assert (tracker.take_committable(), len(tracker), tracker.outstanding) == (None, 4, 2)
    tracker.done(10)
    assert (tracker.take_committable(), tracker.outstanding) == (11, 1)
    assert tracker.take_committable() is None  # reported once
    tracker.done(11)
    assert (tracker.take_committable(), len(tracker), tracker.outstanding) == (14, 0, 0)


def test_an_offset_done_twice_or_never_added_changes_nothing() -> None:
    tracker = OffsetTracker()
    tracker.add(5)
    tracker.add(6)
    tracker.done(7)
    tracker.done(6)
    tracker.done(6)
    assert (tracker.take_committable(), tracker.outstanding) == (None, 1)
    tracker.done(5)
    assert (tracker.take_committable(), tracker.outstanding) == (7, 0)
