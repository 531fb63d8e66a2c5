"""The Burrow-style lag rules over crafted sample sequences (no Kafka involved)."""

from __future__ import annotations

import pytest

from portability.ops.lag_rules import (
    PartitionHistory,
    PartitionSample,
    Status,
    Verdict,
    evaluate_partition,
    group_verdict,
    lag_records,
    lag_seconds,
)

STOP_AFTER_S = 300.0


def _window(
    *points: tuple[int | None, int], start: int = 0, step_s: float = 2.0
) -> list[PartitionSample]:
    """Samples ``step_s`` apart from (committed, end) pairs."""
    return [
        PartitionSample(at=1000.0 + i * step_s, committed=committed, start=start, end=end)
        for i, (committed, end) in enumerate(points)
    ]


def _judge(
    window: list[PartitionSample],
    has_members: bool | None = True,
    unchanged_since: float | None = None,
    stop_after_s: float = STOP_AFTER_S,
) -> Verdict:
    """Evaluate, with the position unchanged since the first sample of its current value."""
    if unchanged_since is None:
        current = window[-1].position
        first = len(window) - 1
        while first > 0 and window[first - 1].position == current:
            first -= 1
        unchanged_since = window[first].at
    return evaluate_partition(
        window, has_members=has_members, unchanged_since=unchanged_since, stop_after_s=stop_after_s
    )


# --- lag in records and seconds ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("committed", "start", "end", "expected"),
    [
        (10, 0, 25, 15),
        (25, 0, 25, 0),
        (None, 0, 25, 25),  # never committed: reads from the log start
        (None, 10, 25, 15),
        (3, 10, 25, 15),  # retention removed records up to 10: those cannot be read
        (40, 0, 25, 0),  # beyond the end (topic recreated): nothing to read, not negative
    ],
)
def test_lag_records(committed: int | None, start: int, end: int, expected: int) -> None:
    assert lag_records(committed, start, end) == expected


def test_lag_seconds_is_the_age_of_the_oldest_unconsumed_record() -> None:
    assert lag_seconds(5, now=1000.0, oldest_timestamp_ms=940_000) == 60.0


def test_lag_seconds_is_zero_when_caught_up_whatever_the_timestamp() -> None:
    assert lag_seconds(0, now=1000.0, oldest_timestamp_ms=None) == 0.0
    assert lag_seconds(0, now=1000.0, oldest_timestamp_ms=1) == 0.0


def test_lag_seconds_unknown_without_a_timestamp() -> None:
    assert lag_seconds(5, now=1000.0, oldest_timestamp_ms=None) is None
    assert lag_seconds(5, now=1000.0, oldest_timestamp_ms=-1) is None


def test_lag_seconds_from_a_clock_ahead_of_ours_is_zero() -> None:
    assert lag_seconds(5, now=1000.0, oldest_timestamp_ms=1_002_000) == 0.0


# --- one partition -------------------------------------------------------------------------------


def test_caught_up_is_ok() -> None:
    verdict = _judge(_window((10, 10), (20, 20), (30, 30)))

    assert verdict == Verdict(Status.OK, "caught up")


def test_caught_up_now_is_ok_after_any_history() -> None:
    assert _judge(_window((10, 20), (5, 20), (20, 20))).status is Status.OK  # rewound, then
    assert _judge(_window((10, 20), (10, 20), (20, 20)), has_members=False).status is Status.OK


def test_consuming_with_steady_or_shrinking_lag_is_ok() -> None:
    steady = _judge(_window((10, 15), (20, 25), (30, 35)))
    shrinking = _judge(_window((10, 30), (20, 34), (30, 36)))

    assert steady == Verdict(Status.OK, "consuming, lag 5 not growing")
    assert shrinking.status is Status.OK


def test_lag_growing_while_consuming_is_warning() -> None:
    verdict = _judge(_window((10, 15), (12, 20), (14, 26)))

    assert verdict == Verdict(Status.WARNING, "lag grew from 5 to 12 in 4.0 s")


def test_lag_that_grew_but_also_dipped_is_ok() -> None:
    """Like Burrow: only a lag that never decreased in the window is falling behind."""
    assert _judge(_window((10, 20), (12, 24), (20, 23), (22, 30))).status is Status.OK


def test_lag_flat_then_growing_is_warning() -> None:
    assert _judge(_window((10, 15), (15, 20), (18, 25))).status is Status.WARNING


def test_committed_offset_going_back_is_rewound() -> None:
    verdict = _judge(_window((30, 40), (35, 40), (10, 40)))

    assert verdict == Verdict(Status.REWOUND, "committed offset went back from 35 to 10")


def test_rewind_of_a_caught_up_group_is_seen() -> None:
    """Unlike Burrow, a zero lag earlier in the window does not hide a rewind."""
    assert _judge(_window((40, 40), (40, 40), (10, 40))).status is Status.REWOUND


def test_rewind_wins_over_standing_still_afterwards() -> None:
    window = _window((40, 40), (10, 40), (10, 40))

    assert _judge(window, has_members=False).status is Status.REWOUND


def test_offset_standing_still_with_lag_and_members_is_stalled() -> None:
    verdict = _judge(_window((10, 20), (10, 25), (10, 30)))

    assert verdict == Verdict(Status.STALLED, "committed offset 10 unchanged for 4.0 s with lag 20")


def test_offset_standing_still_with_members_unknown_is_stalled() -> None:
    assert _judge(_window((10, 20), (10, 20)), has_members=None).status is Status.STALLED


def test_offset_standing_still_without_members_is_stopped() -> None:
    verdict = _judge(_window((10, 20), (10, 25), (10, 30)), has_members=False)

    assert verdict == Verdict(
        Status.STOPPED,
        "committed offset 10 unchanged for 4.0 s with lag 20; the group has no members",
    )


def test_offset_standing_still_past_the_stop_threshold_is_stopped_even_with_members() -> None:
    window = _window((10, 20), (10, 20), (10, 20))

    verdict = _judge(window, unchanged_since=window[-1].at - 301.0)

    assert verdict == Verdict(
        Status.STOPPED,
        "committed offset 10 unchanged for 301.0 s with lag 10 (stop threshold 300 s)",
    )


def test_stopped_after_catching_up_is_stopped_once_lag_appears() -> None:
    """The consumer caught up, then stopped; new records arrive: nobody will read them."""
    window = _window((10, 10), (10, 14))

    assert _judge(window, has_members=False).status is Status.STOPPED


def test_lag_appearing_behind_a_standing_member_is_warning_until_the_window_fills() -> None:
    """Stalled needs lag throughout the window; before that, a growing lag warns."""
    window = _window((10, 10), (10, 14), (10, 18))

    assert _judge(window).status is Status.WARNING
    assert _judge([*window[1:], PartitionSample(1006.0, 10, 0, 20)]).status is Status.STALLED


def test_never_committed_and_no_members_is_stopped() -> None:
    verdict = _judge(_window((None, 5), (None, 9)), has_members=False)

    assert verdict.status is Status.STOPPED
    assert verdict.reason.startswith("no offset committed in 2.0 s with lag 9")


def test_one_sample_with_lag_is_a_warning_without_a_trend() -> None:
    verdict = _judge(_window((10, 25)))

    assert verdict == Verdict(Status.WARNING, "lag 15 (one sample: no trend yet)")


def test_one_sample_with_lag_and_no_members_is_stopped() -> None:
    verdict = _judge(_window((10, 25)), has_members=False)

    assert verdict == Verdict(Status.STOPPED, "lag 15 and the group has no members")


def test_one_sample_caught_up_is_ok() -> None:
    assert _judge(_window((25, 25)), has_members=False).status is Status.OK


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        _judge([], unchanged_since=0.0)


# --- the history kept between samples ----------------------------------------------------------


def test_history_keeps_only_the_window() -> None:
    history = PartitionHistory(window=3)
    for sample in _window((1, 5), (2, 5), (3, 5), (4, 5), (5, 5)):
        history.add(sample)

    assert [s.committed for s in history.samples] == [3, 4, 5]


def test_history_remembers_since_when_the_offset_stands_beyond_the_window() -> None:
    """A 2-sample window spans 10 s, yet the offset has stood for 40 s: STOPPED at 30 s."""
    history = PartitionHistory(window=2)
    verdicts = []
    for sample in _window((5, 5), (10, 20), (10, 20), (10, 20), (10, 20), (10, 20), step_s=10.0):
        history.add(sample)
        verdicts.append(history.evaluate(has_members=True, stop_after_s=30.0).status)

    assert history.unchanged_since == 1010.0
    assert verdicts == [
        Status.OK,
        Status.WARNING,  # lag appeared while the offset moved
        Status.STALLED,  # 10 s
        Status.STALLED,  # 20 s
        Status.STOPPED,  # 30 s
        Status.STOPPED,
    ]


def test_history_restarts_the_clock_when_the_offset_moves() -> None:
    history = PartitionHistory(window=5)
    for sample in _window((10, 20), (10, 20), (11, 20), step_s=10.0):
        history.add(sample)

    assert history.unchanged_since == 1020.0


def test_history_needs_a_window() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        PartitionHistory(window=0)


# --- a group ------------------------------------------------------------------------------------


def test_group_takes_the_worst_partition_and_names_it() -> None:
    verdict = group_verdict(
        True,
        [
            ("deliveries[0]", Verdict(Status.OK, "caught up")),
            ("deliveries[1]", Verdict(Status.WARNING, "lag grew")),
            ("deliveries[2]", Verdict(Status.STALLED, "standing")),
            ("deliveries[3]", Verdict(Status.STALLED, "standing too")),
        ],
    )

    assert verdict == Verdict(Status.STALLED, "deliveries[2]: standing")


def test_group_all_ok() -> None:
    verdict = group_verdict(True, [("a[0]", Verdict(Status.OK, "caught up"))] * 3)

    assert verdict == Verdict(Status.OK, "3 partition(s) caught up or consuming")


def test_group_not_found_is_unknown() -> None:
    verdict = group_verdict(False, [])

    assert verdict.status is Status.UNKNOWN
    assert "group not found" in verdict.reason


def test_group_found_without_partitions_is_unknown() -> None:
    assert group_verdict(True, []).status is Status.UNKNOWN


def test_statuses_are_ordered_by_severity() -> None:
    ordered = [
        Status.OK,
        Status.PARKED,
        Status.WARNING,
        Status.REWOUND,
        Status.STALLED,
        Status.STOPPED,
    ]

    assert sorted(reversed(ordered), key=lambda s: s.severity) == ordered
    assert Status.UNKNOWN.severity > Status.STOPPED.severity
