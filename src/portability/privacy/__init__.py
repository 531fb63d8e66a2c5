"""The privacy policy: what may reach a recipient, applied in one place for every path.

``PrivacyPolicy`` (the rules of one version), ``load_policy`` and ``PolicySource`` (the file,
reloaded when a new version is written), the engine (``for_subject`` for deltas, ``apply`` for
snapshots and archives, ``contribution`` for whether an activity record counts toward another
user's post figures), the actor's side of those figures, which counts each account once
(:mod:`portability.privacy.ledger`), and the figures themselves
(:mod:`portability.privacy.audience`).
"""

from portability.privacy.audience import (
    AudienceFigures,
    Release,
    audience_marker,
    audience_record_id,
    figures_change,
    is_audience_record_id,
    platform_headers,
    update_change,
)
from portability.privacy.current import apply, current_policy, policy_source, reset_current_policy
from portability.privacy.engine import Contribution, contribution, for_subject, is_tracked
from portability.privacy.errors import PolicyError, PrivacyError
from portability.privacy.ledger import ActivityLedger
from portability.privacy.loader import PolicySource, default_policy_path, load_policy
from portability.privacy.model import (
    FIGURE_KINDS,
    AudienceRule,
    CategoryRule,
    PrivacyPolicy,
    policy_from_document,
)

__all__ = [
    "FIGURE_KINDS",
    "ActivityLedger",
    "AudienceFigures",
    "AudienceRule",
    "CategoryRule",
    "Contribution",
    "PolicyError",
    "PolicySource",
    "PrivacyError",
    "PrivacyPolicy",
    "Release",
    "apply",
    "audience_marker",
    "audience_record_id",
    "contribution",
    "current_policy",
    "default_policy_path",
    "figures_change",
    "for_subject",
    "is_audience_record_id",
    "is_tracked",
    "load_policy",
    "platform_headers",
    "policy_from_document",
    "policy_source",
    "reset_current_policy",
    "update_change",
]
