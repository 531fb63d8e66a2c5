"""Applying the policy: one function per path out of the pipeline.

* :func:`for_subject` - a change of the subject's own account, as the subject's recipient may
  receive it (the matcher's deltas).
* :func:`apply` - one current record of a category (snapshots and archives).
* :func:`contribution` - what a change of an actor's activity on *another* user's post means
  for that post's audience figures: whether the activity record counts from now on. The
  actor's side (:class:`portability.privacy.ledger.ActivityLedger`) turns that into an account
  joining or leaving a figure, which the matcher sends to the creator's partition (see
  :mod:`portability.privacy.audience`).

The rules that do not depend on the version: a share made off the platform is not an event at
all; the platform's context (settings at the time, off-platform flag) never leaves; a
category the consent does not grant never leaves.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

from portability.privacy.model import PrivacyPolicy
from portability.wire.records import AccountChange, ChangeContext

__all__ = ["Contribution", "apply", "contribution", "for_subject", "is_tracked"]


def is_tracked(change: AccountChange) -> bool:
    """False for a change the platform's rules say is not an event (an off-platform share).

    A consumer that keeps state from ``account.changes`` (the current-state view) should
    ignore such a change, as the matcher does.
    """
    context = change.get("context")
    return context is None or not context["off_platform"]


def for_subject(
    policy: PrivacyPolicy, change: AccountChange, tagged: bool = False
) -> AccountChange | None:
    """``change`` as the subject's own recipient may receive it, or None if it never leaves.

    The result is a new change: its record shaped by the category's rule, without the
    platform's context. ``tagged`` marks the record's Avro union branch (``-type``), as
    encoding needs.
    """
    if not is_tracked(change) or change.get("audience") is not None:
        return None  # not an event; or the matcher's own audience update, never delivered
    rule = policy.rule(change["category"])
    if rule is None:
        return None
    record = change["record"]
    return {
        "change_id": change["change_id"],
        "user_id": change["user_id"],
        "category": change["category"],
        "operation": change["operation"],
        "record_id": change["record_id"],
        "occurred_at": change["occurred_at"],
        "record": None if record is None else rule.shape(record, tagged),
        "context": None,
        "audience": None,
    }


def apply(
    policy: PrivacyPolicy,
    category: str,
    record: Mapping[str, Any] | None,
    *,
    granted: Collection[str] | None = None,
    context: ChangeContext | None = None,
) -> dict[str, Any] | None:
    """One record of ``category`` as a recipient may receive it in a snapshot or archive.

    Args:
        policy: The policy to apply (``current_policy()`` for the one in force).
        category: The record's category.
        record: The record (None, the state of a deleted record, gives None).
        granted: The consent's categories; a category outside them gives None.
        context: The platform's context of the change that made the record, if kept; an
            off-platform share gives None.

    Returns:
        The record to ship, or None when nothing of it may leave.
    """
    if record is None or (granted is not None and category not in granted):
        return None
    if context is not None and context["off_platform"]:
        return None
    return policy.shape(category, record)


class Contribution(NamedTuple):
    """An activity record on another user's post, as that post's audience figures see it.

    Attributes:
        post_owner_id: The creator of the post.
        post_id: The post.
        kind: The activity kind (``share``, ``view``...).
        counts: Whether the record counts toward the post's ``kind`` figure from now on: made
            or edited under rules that count it. False for a removal, and for a record made
            under rules that do not count it.
    """

    post_owner_id: str
    post_id: str
    kind: str
    counts: bool


def contribution(policy: PrivacyPolicy, change: AccountChange) -> Contribution | None:
    """What ``change`` means for another user's post audience figures, if anything.

    A figure counts *accounts*, not activity records: this says only whether the one activity
    record the change makes, edits or removes counts; the actor's side
    (:class:`portability.privacy.ledger.ActivityLedger`) knows the actor's other records.

    An upsert counts when it is of a kind the policy counts and the platform's context says it
    was made on the platform, by a public account (unless the policy counts private accounts),
    and for a share, by a user showing their shares (unless the policy counts hidden ones). It
    does not count when the platform gave no context (the account's settings are unknown, so
    the most private ones are assumed). A removal never counts; its post is the one its
    context names (the activity it removes).

    Returns:
        None for a change that is not activity on someone else's post, a removal whose
        context does not say what it removes, and an off-platform share (not an event at all).
    """
    if change["category"] != "activity":
        return None
    context = change.get("context")
    if context is not None and context["off_platform"]:
        return None
    target = _activity_target(change, context)
    if target is None:
        return None
    kind, post_id, owner = target
    if owner == change["user_id"] or not owner:
        return None
    if context is None or change["operation"] == "delete":
        return Contribution(owner, post_id, kind, False)
    rule = policy.audience
    counts = (
        kind in rule.kinds
        and (rule.count_private_accounts or not context["actor_private"])
        and (kind != "share" or context["shares_visible"] or rule.count_hidden_shares)
    )
    return Contribution(owner, post_id, kind, counts)


def _activity_target(
    change: AccountChange, context: ChangeContext | None
) -> tuple[str, str, str] | None:
    """(kind, post id, post owner) of an activity change: from its record, or for a delete
    from the context the platform attached."""
    record = change["record"]
    if record is not None:
        return (str(record["kind"]), str(record["post_id"]), str(record["post_owner_id"]))
    reference = None if context is None else context["activity"]
    if reference is None:
        return None
    return (reference["kind"], reference["post_id"], reference["post_owner_id"])
