"""How a partition held at a parked record is judged, and what ``portability lag`` exits
with, over crafted samples (no Kafka involved; the reading is in test_lag_parked.py)."""

from __future__ import annotations

import pytest

from portability.ops.lag_rules import (
    EXIT_CODES,
    ParkedHold,
    PartitionHistory,
    PartitionSample,
    Status,
    Verdict,
    evaluate_partition,
    group_verdict,
    worst_status,
)

NOW = 10_000.0
OVERDUE_S = 900.0


def _held(hold: ParkedHold, *, lag: int = 4, at: float = NOW) -> PartitionSample:
    return PartitionSample(at=at, committed=7, start=0, end=7 + lag, parked=hold)


def _judge(
    hold: ParkedHold | None,
    *,
    has_members: bool | None = True,
    standing_s: float = 3600.0,
    lag: int = 4,
) -> Verdict:
    """Two samples of a commit held at offset 7 for ``standing_s`` (past the stop threshold
    by default: the ordinary rules would say STOPPED)."""
    window = [
        PartitionSample(NOW - 1, 7, 0, 7 + lag, parked=hold),
        PartitionSample(NOW, 7, 0, 7 + lag, parked=hold),
    ]
    return evaluate_partition(
        window,
        has_members=has_members,
        unchanged_since=NOW - standing_s,
        stop_after_s=300.0,
        parked_overdue_s=OVERDUE_S,
    )


def test_a_retry_due_later_is_parked_with_when() -> None:
    verdict = _judge(ParkedHold(7, "cns_1", 2, NOW + 485))

    assert verdict.status is Status.PARKED
    assert verdict.reason.startswith("parked record of consent cns_1: retry 3 due at ")
    assert verdict.reason.endswith(" UTC, in 8m 05s")


@pytest.mark.parametrize(("late_s", "status"), [(60.0, Status.PARKED), (901.0, Status.WARNING)])
def test_a_retry_due_in_the_past_is_parked_until_overdue(late_s: float, status: Status) -> None:
    verdict = _judge(ParkedHold(7, "cns_1", 1, NOW - late_s))

    assert verdict.status is status
    if status is Status.WARNING:
        assert "at offset 7: retry 2 was due 15m 01s ago (overdue after 900 s)" in verdict.reason
    else:
        assert verdict.reason.endswith("retry 2 due 1m 00s ago, being retried")


def test_a_consent_held_for_its_disabled_endpoint_is_parked() -> None:
    verdict = _judge(ParkedHold(7, "cns_1", 3, None, endpoint_disabled=True))

    assert verdict == Verdict(
        Status.PARKED,
        "parked record of consent cns_1 waits for its app's endpoint (disabled) to get a new URL",
    )


@pytest.mark.parametrize(
    ("standing_s", "status"), [(600.0, Status.PARKED), (901.0, Status.WARNING)]
)
def test_a_record_whose_due_time_is_unknown_is_judged_by_how_long_it_holds(
    standing_s: float, status: Status
) -> None:
    verdict = _judge(ParkedHold(7, "cns_1", 0, None), standing_s=standing_s)

    assert verdict.status is status
    if status is Status.PARKED:
        assert verdict.reason.endswith("waits behind its earlier records' retry")
    else:
        assert "has held the partition for 15m 01s" in verdict.reason


def test_without_members_nobody_retries_it_so_it_is_stopped() -> None:
    assert _judge(ParkedHold(7, "c", 1, NOW + 60), has_members=False).status is Status.STOPPED


def test_members_unknown_is_parked() -> None:
    assert _judge(ParkedHold(7, "c", 1, NOW + 60), has_members=None).status is Status.PARKED


def test_without_a_hold_the_ordinary_rules_apply() -> None:
    assert _judge(None).status is Status.STOPPED


def test_caught_up_is_ok_whatever_held_it_before() -> None:
    assert _judge(ParkedHold(7, "c", 1, NOW + 60), lag=0).status is Status.OK


def test_history_passes_the_overdue_margin_on() -> None:
    history = PartitionHistory(window=3)
    history.add(_held(ParkedHold(7, "c", 1, NOW - 100)))

    assert history.evaluate(True, 300.0, parked_overdue_s=50.0).status is Status.WARNING
    assert history.evaluate(True, 300.0).status is Status.PARKED  # 900 s by default


def test_a_group_with_parked_partitions_is_parked_and_says_how_many() -> None:
    verdict = group_verdict(
        True,
        [
            ("deliveries[0]", Verdict(Status.OK, "caught up")),
            ("deliveries.retry[0]", Verdict(Status.PARKED, "parked record of consent a")),
            ("deliveries.retry[1]", Verdict(Status.PARKED, "parked record of consent b")),
        ],
    )

    assert verdict == Verdict(
        Status.PARKED,
        "deliveries.retry[0]: parked record of consent a (and 1 more parked partition(s))",
    )


def test_a_warning_elsewhere_outranks_parked() -> None:
    verdict = group_verdict(
        True,
        [
            ("deliveries.retry[0]", Verdict(Status.PARKED, "parked")),
            ("deliveries[1]", Verdict(Status.WARNING, "lag grew")),
        ],
    )

    assert verdict == Verdict(Status.WARNING, "deliveries[1]: lag grew")


def test_hold_as_json() -> None:
    hold = ParkedHold(7, "cns_1", 2, 0.5)

    assert hold.as_dict() == {
        "offset": 7,
        "consent_id": "cns_1",
        "failures": 2,
        "due_at": "1970-01-01T00:00:00.500+00:00",
        "endpoint_disabled": False,
    }


# --- exit codes ----------------------------------------------------------------------------------


def test_exit_codes_are_the_documented_table() -> None:
    assert EXIT_CODES == {
        Status.OK: 0,
        Status.PARKED: 0,
        Status.WARNING: 3,
        Status.REWOUND: 4,
        Status.STALLED: 5,
        Status.STOPPED: 6,
        Status.UNKNOWN: 7,
    }
    # 1 (Kafka unreachable) and 2 (usage error) keep their meaning.
    assert not {1, 2} & set(EXIT_CODES.values())
    assert [status.exit_code for status in Status] == sorted(EXIT_CODES.values())


def test_worst_status() -> None:
    assert worst_status([Status.PARKED, Status.OK]) is Status.PARKED
    assert worst_status([Status.UNKNOWN, Status.STOPPED, Status.WARNING]) is Status.UNKNOWN
    assert worst_status([]) is Status.OK
