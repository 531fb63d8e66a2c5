"""The chaos suite's oracle finds what it must: a run's record files written by hand, one
violation each, and a clean one it passes (an oracle that passes everything proves nothing).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from chaos.evidence import load
from chaos.oracle import Verdict, judge
from chaos.records import CALLS, PUBLISHED, RECEIVED, JsonLines, iso_millis

_USER, _CONSENT = "u00000001", "cns_0000000000000001"


def _iso(seconds: float) -> str:
    return iso_millis(datetime.fromtimestamp(seconds, UTC))


def _change(n: int, operation: str = "upsert", record_id: str | None = None) -> dict[str, Any]:
    record = None if operation == "delete" else {"caption": f"c{n}", "visibility": "public"}
    return {
        "change_id": f"chg-{n}",
        "user_id": _USER,
        "category": "post",
        "operation": operation,
        "record_id": record_id or f"post_{n}",
        "occurred_at": _iso(100.0 + n),
        "record": record,
        "sent_at": 100.0 + n,
        "acked_at": 100.0 + n,
    }


def _delta(n: int, sequence: int, change: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"dlt_{n}",
        "sequence": sequence,
        "change_id": change["change_id"],
        "category": change["category"],
        "operation": change["operation"],
        "record_id": change["record_id"],
        "record": change["record"],
        "occurred_at": change["occurred_at"],
    }


def _request(at: float, body: dict[str, Any], webhook_id: str | None = None) -> dict[str, Any]:
    return {
        "at": at,
        "answered_at": at,
        "app": "a0",
        "webhook_id": webhook_id or f"msg_{at}",
        "verified": True,
        "status": 200,
        "body": body,
    }


def _deltas(at: float, *deltas: dict[str, Any]) -> dict[str, Any]:
    data = {"consent_id": _CONSENT, "app_id": "app_1", "user_id": _USER, "deltas": list(deltas)}
    return _request(at, {"type": "portability.delta", "data": data})


def _grant(snapshot: bool = False) -> dict[str, Any]:
    answer = {
        "consent_id": _CONSENT,
        "user_id": _USER,
        "categories": ["post"],
        "granted_at": _iso(100.0),
        "snapshot_epoch": 1 if snapshot else 0,
    }
    return {
        "op": "grant",
        "status": 201,
        "sent_at": 100.0,
        "acked_at": 100.2,
        "app": "a0",
        "snapshot": snapshot,
        "answer": answer,
    }


def _judge(
    folder: Path,
    changes: list[dict[str, Any]],
    calls: list[dict[str, Any]],
    received: list[dict[str, Any]],
) -> Verdict:
    for name, lines in ((PUBLISHED, changes), (CALLS, calls), (RECEIVED, received)):
        out = JsonLines(folder / name)
        for line in lines:
            out.write(line)
        out.close()
    return judge(load(folder))


CHANGES = [_change(1), _change(2), _change(3)]


def _found(verdict: Verdict) -> set[str]:
    return {kind for kind, found in verdict.violations.items() if found}


def test_a_clean_run_passes(tmp_path: Path) -> None:
    received = [_deltas(102.0, _delta(1, 1, CHANGES[0]), _delta(2, 2, CHANGES[1]))]
    received.append(_deltas(104.0, _delta(3, 3, CHANGES[2])))
    received.append(_deltas(105.0, _delta(3, 3, CHANGES[2])))  # a redelivery: deduplicated

    verdict = _judge(tmp_path, CHANGES, [_grant()], received)

    assert verdict.ok, dict(verdict.violations)
    assert (verdict.deltas, verdict.duplicates) == (3, 1)


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        # The second change never came: a gap in the sequence, and a change missing.
        (
            [_deltas(102.0, _delta(1, 1, CHANGES[0])), _deltas(104.0, _delta(3, 3, CHANGES[2]))],
            {"gap", "missing"},
        ),
        # The second and third arrived swapped.
        (
            [
                _deltas(102.0, _delta(1, 1, CHANGES[0])),
                _deltas(103.0, _delta(3, 3, CHANGES[2])),
                _deltas(104.0, _delta(2, 2, CHANGES[1])),
            ],
            {"gap", "order"},
        ),
        # A redelivery under another sequence.
        (
            [
                _deltas(102.0, _delta(1, 1, CHANGES[0]), _delta(2, 2, CHANGES[1])),
                _deltas(104.0, _delta(3, 3, CHANGES[2])),
                _deltas(105.0, _delta(3, 4, CHANGES[2])),
            ],
            {"stable ids"},
        ),
        # A delta whose record is not what the platform published.
        (
            [
                _deltas(102.0, _delta(1, 1, CHANGES[0]), _delta(2, 2, CHANGES[1])),
                _deltas(104.0, _delta(3, 3, CHANGES[2] | {"record": {"caption": "forged"}})),
            ],
            {"content"},
        ),
    ],
    ids=["missing", "order", "stable-ids", "content"],
)
def test_each_violation_is_found(
    tmp_path: Path, received: list[dict[str, Any]], expected: set[str]
) -> None:
    verdict = _judge(tmp_path, CHANGES, [_grant()], received)

    assert _found(verdict) == expected, dict(verdict.violations)


def test_a_delta_after_an_acknowledged_revocation_and_a_silent_removal_are_found(
    tmp_path: Path,
) -> None:
    revoke = {
        "op": "revoke",
        "status": 200,
        "sent_at": 102.4,
        "acked_at": 102.5,
        "consent_id": _CONSENT,
        "by": "platform",
        "answer": {},
    }
    received = [_deltas(102.1, _delta(1, 1, CHANGES[0])), _deltas(104.0, _delta(3, 3, CHANGES[2]))]

    verdict = _judge(tmp_path, CHANGES, [_grant(), revoke], received)

    # The third change was published after the revocation was answered (and the second
    # skipped: a gap); no removal came.
    expected = {"after revocation", "removal", "gap"}
    assert _found(verdict) == expected, dict(verdict.violations)


def test_a_snapshot_copy_that_differs_from_the_platform_is_found(tmp_path: Path) -> None:
    page = {
        "consent_id": _CONSENT,
        "snapshot_id": "trf_1",
        "epoch": 1,
        "page": 1,
        "last": True,
        "records": [
            {"category": "post", "record_id": "post_1", "change_id": "chg-1", "record": {}},
        ],
    }
    changes = [*CHANGES, _change(4, "delete", record_id="post_2")]
    received = [
        _request(103.5, {"type": "portability.snapshot", "data": page}),
        _deltas(104.0, _delta(3, 3, CHANGES[2])),
    ]

    verdict = _judge(tmp_path, changes, [_grant(snapshot=True)], received)

    # post_1's record is not the platform's, and post_3's delete after it never came.
    assert _found(verdict) == {"snapshot"}, dict(verdict.violations)


def test_a_resync_whose_snapshot_never_comes_is_found(tmp_path: Path) -> None:
    page = {
        "consent_id": _CONSENT,
        "snapshot_id": "trf_1",
        "epoch": 1,
        "page": 1,
        "last": True,
        "records": [],
    }
    resync = {
        "op": "resync",
        "status": 202,
        "sent_at": 101.5,
        "acked_at": 101.6,
        "consent_id": _CONSENT,
        "answer": {"snapshot_epoch": 2},
    }
    received = [_request(100.5, {"type": "portability.snapshot", "data": page})]

    verdict = _judge(tmp_path, CHANGES, [_grant(snapshot=True), resync], received)

    assert verdict.violations["snapshot"] == [
        f"{_CONSENT}: snapshot epoch 2 never arrived (the latest: 1), nor the deltas held for it"
    ]
