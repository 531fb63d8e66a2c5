"""The counters a running matcher and state view show on /stats/ are plain JSON."""

from __future__ import annotations

import json

from portability.matching.stats import MatcherStats
from portability.transfers.intake import IntakeStats


def test_matcher_drops_by_reason_stay_a_mapping_of_reasons() -> None:
    """dataclasses.asdict turned {"no_consent": 2} into {("no_consent", 2): 1}: /stats/ 500."""
    stats = MatcherStats()
    stats.dropped["no_consent"] += 2
    stats.dead_lettered_by_fault["bad_key"] += 1

    document = json.loads(json.dumps(stats.as_dict()))

    assert document["dropped"] == {"no_consent": 2}
    assert document["dead_lettered_by_fault"] == {"bad_key": 1}
    assert document["changes_dead_lettered"] == 1


def test_the_views_intake_counts_by_fault_stay_a_mapping_of_faults() -> None:
    stats = IntakeStats()
    stats.skipped_at_door["bad_frame"] += 3

    document = json.loads(json.dumps(stats.as_dict()))

    assert document["skipped_at_door"] == {"bad_frame": 3}
    assert document["updates_skipped"] == 0
