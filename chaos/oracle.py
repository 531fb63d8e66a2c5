"""The oracle: what the app received, judged against what the platform published and what
the churn was told. It shares no code with the pipeline (``make lint`` checks that nothing
here imports ``portability``); it reads only the suite's record files.

Per consent, over the events the app accepted (verified, answered 2xx), in arrival order:

- **stable ids**: a delta id always carries the same sequence and change, a sequence always
  the same delta id, a ``webhook-id`` always the same body;
- **order and gaps**: a delta first seen never has a sequence below one seen before; a
  sequence never skips ahead, except for the first delta after a snapshot's last page
  (the contract: the snapshot covered those);
- **content**: each delta is the published change it names (category, operation, record);
- **nothing missing**: for a consent without a snapshot, every change of its user in a
  granted category made after the grant is delivered; changes made before the matcher read
  the grant (a documented limit) may be missed only at the start, within
  ``START_WINDOW_S`` of the grant's answer, and changes in flight when it was revoked only at
  the end;
- **no delta after a revocation**: none whose change was published after the revocation
  was answered, and nothing at all after the ``authorization.removed``;
- **every removal told**: each consent ended gets ``authorization.removed`` with its reason;
- **snapshot copies**: an active consent's latest snapshot plus the deltas after it equals
  the platform's state of the user's granted categories, and no change is in both.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from chaos.evidence import ALL, Change, ConsentFacts, Evidence, Received

__all__ = ["START_WINDOW_S", "Verdict", "judge"]

START_WINDOW_S = 30.0
_AUDIENCE = "/audience"  # the pipeline's own aggregate records (the contract reserves them)


@dataclass
class Verdict:
    violations: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (sent_at, latency)
    first_seen: dict[str, float] = field(default_factory=dict)  # change id -> first receipt
    deltas: int = 0
    duplicates: int = 0
    missed_at_start: int = 0
    dropped_at_end: int = 0
    copies_checked: int = 0
    removals: int = 0

    def add(self, kind: str, detail: str) -> None:
        self.violations[kind].append(detail)

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())


def judge(evidence: Evidence) -> Verdict:
    verdict = Verdict()
    for line in evidence.unverified[:5]:
        verdict.add("signature", f"{line['webhook_id']} to {line['app']} did not verify")
    if len(evidence.unverified) > 5:
        verdict.add("signature", f"... {len(evidence.unverified)} requests in all")
    _same_body_per_webhook_id(evidence, verdict)
    for consent_id, facts in evidence.consents.items():
        _consent(evidence, facts, evidence.events.get(consent_id, []), verdict)
    for consent_id in set(evidence.events) - set(evidence.consents):
        verdict.add("unknown consent", f"{consent_id}: events for a consent never granted")
    return verdict


def _same_body_per_webhook_id(evidence: Evidence, verdict: Verdict) -> None:
    for webhook_id, bodies in evidence.webhook_bodies.items():
        first = _content(bodies[0])
        if any(_content(body) != first for body in bodies[1:]):
            verdict.add("stable ids", f"{webhook_id}: redelivered with another body")


def _content(body: dict[str, Any]) -> Any:
    """What a redelivery must repeat: the data (the top-level ``timestamp`` is when the event
    was created and is repeated too)."""
    return body.get("type"), body.get("data")


def _deltas(events: list[Received]) -> list[tuple[Received, dict[str, Any]]]:
    return [(e, d) for e in events if e.type == "portability.delta" for d in e.data["deltas"]]


def _consent(
    evidence: Evidence, facts: ConsentFacts, events: list[Received], verdict: Verdict
) -> None:
    cid = facts.consent_id
    _sequences(cid, events, verdict)
    delivered = _delivered(evidence, facts, events, verdict)
    removed = [e for e in events if e.type == "authorization.removed"]
    if facts.ended_at is not None:
        _after_revocation(evidence, facts, events, removed, verdict)
    elif removed:
        verdict.add("removal", f"{cid}: authorization.removed for a consent never ended")
    if facts.snapshot or facts.resynced:
        if facts.ended_at is None:
            _copy(evidence, facts, events, verdict)
    else:
        _missing(evidence, facts, delivered, verdict)


def _sequences(cid: str, events: list[Received], verdict: Verdict) -> None:
    by_id: dict[str, tuple[int, str]] = {}
    by_sequence: dict[int, str] = {}
    highest = 0
    may_skip = False
    for event in events:
        if event.type == "portability.snapshot" and event.data.get("last"):
            may_skip = True
        if event.type != "portability.delta":
            continue
        for delta in event.data["deltas"]:
            seen = by_id.get(delta["id"])
            if seen is not None:
                verdict.duplicates += 1
                if seen != (delta["sequence"], delta["change_id"]):
                    verdict.add("stable ids", f"{cid}: delta {delta['id']} changed {seen}")
                continue
            sequence = delta["sequence"]
            by_id[delta["id"]] = (sequence, delta["change_id"])
            other = by_sequence.setdefault(sequence, delta["id"])
            if other != delta["id"]:
                verdict.add(
                    "stable ids", f"{cid}: sequence {sequence} is {other} and {delta['id']}"
                )
            if sequence <= highest:
                verdict.add("order", f"{cid}: new sequence {sequence} after {highest}")
            elif sequence > highest + 1 and not may_skip:
                verdict.add("gap", f"{cid}: sequence {highest} then {sequence}")
            highest = max(highest, sequence)
            may_skip = False


def _delivered(
    evidence: Evidence, facts: ConsentFacts, events: list[Received], verdict: Verdict
) -> dict[str, float]:
    """Change id -> first receipt of its delta; each delta checked against its change."""
    first: dict[str, float] = {}
    for event, delta in _deltas(events):
        if delta["record_id"].endswith(_AUDIENCE):
            continue
        change = evidence.by_change.get(delta["change_id"])
        if change is None:
            verdict.add("content", f"{facts.consent_id}: delta of unknown change {delta['id']}")
            continue
        if delta["change_id"] in first:
            continue
        verdict.deltas += 1
        first[delta["change_id"]] = event.at
        verdict.latencies.append((change.sent_at, event.at - change.sent_at))
        old = verdict.first_seen.get(change.change_id)
        verdict.first_seen[change.change_id] = event.at if old is None else min(old, event.at)
        if (change.user_id, change.category) != (facts.user_id, delta["category"]):
            verdict.add("content", f"{facts.consent_id}: {delta['id']} is another user's change")
        elif change.category not in _granted(facts):
            verdict.add("content", f"{facts.consent_id}: {delta['id']} of a category not granted")
        elif (delta["operation"], delta["record_id"], delta["record"]) != (
            change.operation,
            change.record_id,
            change.record,
        ):
            verdict.add("content", f"{facts.consent_id}: {delta['id']} differs from its change")
    return first


def _granted(facts: ConsentFacts) -> tuple[str, ...]:
    return ALL if "all" in facts.categories else facts.categories


def _expected(evidence: Evidence, facts: ConsentFacts) -> list[Change]:
    granted = _granted(facts)
    ended = facts.ended_at if facts.ended_at is not None else float("inf")
    return [
        change
        for change in evidence.by_user.get(facts.user_id, [])
        if change.category in granted
        and facts.granted_at < change.occurred_at
        # Published after the revocation was answered: never owed (and checked not to come).
        and change.sent_at <= ended
    ]


def _missing(
    evidence: Evidence, facts: ConsentFacts, delivered: dict[str, float], verdict: Verdict
) -> None:
    expected = _expected(evidence, facts)
    got = [change.index for change in expected if change.change_id in delivered]
    first, last = (min(got), max(got)) if got else (None, None)
    for change in expected:
        if change.change_id in delivered:
            continue
        if (first is None or change.index < first) and (
            change.sent_at < facts.acked_at + START_WINDOW_S
        ):
            verdict.missed_at_start += 1  # before the matcher read the grant: documented
        elif facts.ended_at is not None and (last is None or change.index > last):
            verdict.dropped_at_end += 1  # in flight when it was revoked: dropped, as promised
        else:
            verdict.add("missing", f"{facts.consent_id}: change {change.change_id} never came")


def _after_revocation(
    evidence: Evidence,
    facts: ConsentFacts,
    events: list[Received],
    removed: list[Received],
    verdict: Verdict,
) -> None:
    cid = facts.consent_id
    ended_at = facts.ended_at or 0.0
    for event, delta in _deltas(events):
        change = evidence.by_change.get(delta["change_id"])
        if change is not None and event.at > ended_at and change.sent_at > ended_at:
            verdict.add("after revocation", f"{cid}: {delta['id']} published after revocation")
    if not removed:
        verdict.add("removal", f"{cid}: ended ({facts.reason}) but never told")
        return
    verdict.removals += 1
    told = removed[0]
    if told.data.get("reason") != facts.reason:
        verdict.add("removal", f"{cid}: reason {told.data.get('reason')}, not {facts.reason}")
    for event in events:
        if event.at > told.at and event.type != "authorization.removed":
            verdict.add("after revocation", f"{cid}: {event.type} after authorization.removed")


def _copy(
    evidence: Evidence, facts: ConsentFacts, events: list[Received], verdict: Verdict
) -> None:
    cid = facts.consent_id
    pages = [e for e in events if e.type == "portability.snapshot"]
    if not pages:
        verdict.add("snapshot", f"{cid}: no snapshot page arrived")
        return
    newest = max(pages, key=lambda e: e.data["epoch"])
    if newest.data["epoch"] < facts.epoch:
        verdict.add(
            "snapshot",
            f"{cid}: snapshot epoch {facts.epoch} never arrived (the latest: "
            f"{newest.data['epoch']}), nor the deltas held for it",
        )
        return
    latest = newest.data["snapshot_id"]
    own = {e.data["page"]: e for e in pages if e.data["snapshot_id"] == latest}
    if not own or not any(e.data["last"] for e in own.values()) or len(own) != max(own):
        verdict.add("snapshot", f"{cid}: snapshot {latest} incomplete ({sorted(own)})")
        return
    began = min(e.at for e in own.values())
    copy = {
        (r["category"], r["record_id"]): (r["change_id"], r["record"])
        for page in own.values()
        for r in page.data["records"]
    }
    in_snapshot = {change_id for change_id, _ in copy.values()}
    after = sorted(
        (d for e, d in _deltas(events) if e.at >= began and not d["record_id"].endswith(_AUDIENCE)),
        key=lambda d: d["sequence"],
    )
    for delta in after:
        if delta["change_id"] in in_snapshot:
            verdict.add("snapshot", f"{cid}: {delta['id']} both in the snapshot and after it")
        key = (delta["category"], delta["record_id"])
        if delta["operation"] == "delete":
            copy.pop(key, None)
        else:
            copy[key] = (delta["change_id"], delta["record"])
    if copy != _platform_state(evidence, facts):
        verdict.add("snapshot", f"{cid}: the app's copy differs from the platform's state")
    verdict.copies_checked += 1


def _platform_state(evidence: Evidence, facts: ConsentFacts) -> dict[tuple[str, str], Any]:
    granted = _granted(facts)
    state: dict[tuple[str, str], Any] = {}
    for change in evidence.by_user.get(facts.user_id, []):
        if change.category not in granted:
            continue
        key = (change.category, change.record_id)
        if change.operation == "delete":
            state.pop(key, None)
        else:
            state[key] = (change.change_id, change.record)
    return state
