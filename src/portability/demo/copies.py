"""The demo's check of snapshots: an app's copy, rebuilt, against the platform's state.

A consent granted with a snapshot receives the user's current records of the granted
categories first, then only the deltas from the snapshot's position on. The app's copy is
the snapshot's records with those deltas applied in sequence order; it must equal the
platform's state (every change the oracle recorded, as the privacy policy lets it leave)
record by record, and no change may arrive both in the snapshot and as a delta after it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from portability.privacy import PrivacyPolicy, for_subject, is_audience_record_id
from portability.receiver import ReceivingApp
from portability.webhooks.parsing import Delta
from portability.webhooks.payload import UNVERSIONED, render_change
from portability.wire.records import AccountChange, format_timestamp

__all__ = [
    "Copy",
    "CopyCheck",
    "as_delivered",
    "check_copy",
    "deltas_after_snapshot",
    "platform_copy",
    "received_copy",
]

# (category, record id) -> the record, its time and change id, as the webhook contract has them.
Copy = dict[tuple[str, str], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class CopyCheck:
    """One consent's snapshot and copy, as the app has them now."""

    complete: bool  # the snapshot's last page arrived
    records: int  # records in the snapshot's pages
    equal: bool  # complete, and the rebuilt copy equals the platform's state
    doubled: int  # changes both in the snapshot and among the deltas after it
    deltas: int  # deltas of the consent received (after the snapshot or not)


def platform_copy(
    changes: Iterable[AccountChange],
    user_id: str,
    categories: Collection[str],
    policy: PrivacyPolicy,
) -> Copy:
    """The user's records of ``categories`` after ``changes`` in order, as the policy ships
    them: upserts replace, deletes remove, what never leaves is left out."""
    state: Copy = {}
    for change in changes:
        if change["user_id"] != user_id or change["category"] not in categories:
            continue
        if is_audience_record_id(change["record_id"]):
            continue  # the pipeline's own aggregate, never in a snapshot: left out of both sides
        shaped = for_subject(policy, change)
        if shaped is None:
            continue
        key = (shaped["category"], shaped["record_id"])
        if shaped["operation"] == "delete":
            state.pop(key, None)
        else:
            state[key] = as_delivered(shaped)
    return state


def received_copy(receiver: ReceivingApp, consent_id: str) -> Copy | None:
    """The app's copy: the latest snapshot's records, then the deltas that arrived after its
    first page, in sequence order; None until the snapshot is complete."""
    snapshot = receiver.snapshot(consent_id)
    if snapshot is None or not snapshot.complete:
        return None
    state: Copy = {
        (r["category"], r["record_id"]): {
            "record": r["record"],
            "occurred_at": r["occurred_at"],
            "change_id": r["change_id"],
        }
        for r in snapshot.records
    }
    for delta in sorted(deltas_after_snapshot(receiver, consent_id), key=lambda d: d.sequence):
        key = (delta.category, delta.record_id)
        if delta.operation == "delete":
            state.pop(key, None)
        else:
            state[key] = {
                "record": delta.record,
                "occurred_at": format_timestamp(delta.occurred_at),
                "change_id": delta.change_id,
            }
    return state


def check_copy(receiver: ReceivingApp, consent_id: str, expected: Copy) -> CopyCheck:
    """Compare the app's copy of ``consent_id`` with ``expected`` (see :func:`platform_copy`)."""
    snapshot = receiver.snapshot(consent_id)
    deltas = len(receiver.deltas(consent_id))
    if snapshot is None:
        return CopyCheck(complete=False, records=0, equal=False, doubled=0, deltas=deltas)
    in_snapshot = {r["change_id"] for r in snapshot.records}
    after = {d.change_id for d in deltas_after_snapshot(receiver, consent_id)}
    return CopyCheck(
        complete=snapshot.complete,
        records=snapshot.record_count,
        equal=received_copy(receiver, consent_id) == expected,
        doubled=len(in_snapshot & after),
        deltas=deltas,
    )


def deltas_after_snapshot(receiver: ReceivingApp, consent_id: str) -> list[Delta]:
    """The deltas received since the consent's latest snapshot began, but audience figures."""
    snapshot = receiver.snapshot(consent_id)
    received = receiver.deltas(consent_id)
    if snapshot is not None:
        received = received[snapshot.deltas_before :]
    return [d for d in received if not is_audience_record_id(d.record_id)]


def as_delivered(change: AccountChange) -> dict[str, Any]:
    """The change's record, time and id exactly as a ``portability.delta`` body carries them
    (rendered by :func:`render_change`, the matcher's own rendering)."""
    delta = json.loads(render_change(change, UNVERSIONED))
    return {
        "record": delta["record"],
        "occurred_at": delta["occurred_at"],
        "change_id": delta["change_id"],
    }
