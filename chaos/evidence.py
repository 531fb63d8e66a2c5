"""The oracle's evidence: the record files read into plain structures.

What the platform published (each change once, in publication order), what the churn was
told (each consent's grant, categories and end), and what the app accepted (verified and
answered 2xx), per consent in arrival order. Nothing of the pipeline is imported: the bodies
are read as the webhook contract (docs/webhooks.md) describes them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.records import CALLS, FAULTS, PUBLISHED, RECEIVED, parse_time, read_lines

__all__ = ["Change", "ConsentFacts", "Evidence", "Received", "load"]

ALL = ("profile", "post", "follow", "activity", "direct_message")


@dataclass(frozen=True, slots=True)
class Change:
    index: int  # publication order (a user's changes are on one partition in this order)
    change_id: str
    user_id: str
    category: str
    operation: str
    record_id: str
    record: Any
    occurred_at: float
    sent_at: float


@dataclass(frozen=True, slots=True)
class Received:
    """One accepted event of a consent: a request's body, or one delta of it."""

    at: float
    webhook_id: str
    type: str
    data: dict[str, Any]


@dataclass
class ConsentFacts:
    consent_id: str
    user_id: str
    app: str
    categories: tuple[str, ...]
    granted_at: float
    acked_at: float
    snapshot: bool
    resynced: bool = False
    epoch: int = 0  # the latest snapshot epoch asked for (the grant's 1, one more a resync)
    ended_at: float | None = None  # when the revocation or deletion was answered
    ended_sent_at: float | None = None
    reason: str | None = None  # the authorization.removed reason expected


@dataclass
class Evidence:
    changes: list[Change]
    by_change: dict[str, Change]
    by_user: dict[str, list[Change]]
    consents: dict[str, ConsentFacts]
    events: dict[str, list[Received]]  # consent -> accepted events, arrival order
    requests: int
    unverified: list[dict[str, Any]]
    refused: int  # requests the app answered other than 2xx (its bad days)
    webhook_bodies: dict[str, list[Any]] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)


def _changes(folder: Path) -> tuple[list[Change], dict[str, Change]]:
    changes: list[Change] = []
    by_change: dict[str, Change] = {}
    for line in read_lines(folder / PUBLISHED):
        if line["change_id"] in by_change:
            continue  # sent again after the broker refused its batch: the first counts
        change = Change(
            len(changes),
            line["change_id"],
            line["user_id"],
            line["category"],
            line["operation"],
            line["record_id"],
            line["record"],
            parse_time(line["occurred_at"]),
            line["sent_at"],
        )
        changes.append(change)
        by_change[change.change_id] = change
    return changes, by_change


_REASONS = {"platform": "user_revoked", "app": "app_revoked"}


def _consents(calls: list[dict[str, Any]]) -> dict[str, ConsentFacts]:
    consents: dict[str, ConsentFacts] = {}
    for call in calls:
        answer = call.get("answer") or {}
        if call["op"] == "grant" and call["status"] == 201:
            consents[answer["consent_id"]] = ConsentFacts(
                answer["consent_id"],
                answer["user_id"],
                call["app"],
                tuple(answer["categories"]),
                parse_time(answer["granted_at"]),
                call["acked_at"],
                bool(call["snapshot"]),
                epoch=answer.get("snapshot_epoch", 0),
            )
        elif call["op"] == "resync" and call["status"] == 202:
            resynced = consents[call["consent_id"]]
            resynced.resynced = True
            resynced.epoch = max(resynced.epoch, answer.get("snapshot_epoch", 0))
        elif call["op"] in ("revoke", "delete_account") and call["status"] == 200:
            ended = [call["consent_id"]] if call["op"] == "revoke" else call["consents"]
            reason = _REASONS.get(call.get("by", ""), "account_deleted")
            for consent_id in ended:
                ending = consents.get(consent_id)
                if ending is not None and ending.ended_at is None:
                    ending.ended_at, ending.ended_sent_at = call["acked_at"], call["sent_at"]
                    ending.reason = reason
    return consents


def load(folder: Path) -> Evidence:
    """Read the run's record files from ``folder``."""
    changes, by_change = _changes(folder)
    by_user: dict[str, list[Change]] = defaultdict(list)
    for change in changes:
        by_user[change.user_id].append(change)
    calls = list(read_lines(folder / CALLS))
    events: dict[str, list[Received]] = defaultdict(list)
    bodies: dict[str, list[Any]] = defaultdict(list)
    unverified: list[dict[str, Any]] = []
    requests = refused = 0
    lines = sorted(read_lines(folder / RECEIVED), key=lambda line: line["at"])
    for line in lines:
        requests += 1
        if not line["verified"]:
            unverified.append(line)
            continue
        if line["status"] != 200:
            refused += 1
            continue
        body = line["body"]
        data = body.get("data") or {}
        bodies[line["webhook_id"]].append(body)
        consent = data.get("consent_id")
        if consent is None:
            continue  # a test event (portability.ping): no consent's
        events[consent].append(Received(line["at"], line["webhook_id"], body["type"], data))
    return Evidence(
        changes,
        by_change,
        dict(by_user),
        _consents(calls),
        dict(events),
        requests,
        unverified,
        refused,
        dict(bodies),
        [line for line in read_lines(folder / FAULTS) if "kind" in line],
        calls,
    )
