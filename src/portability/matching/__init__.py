"""Matching account changes against the active ongoing consents of their users."""

from portability.matching.consent_index import ActiveConsent, ConsentIndex
from portability.matching.matcher import Matcher
from portability.matching.output import delta_id
from portability.matching.stats import MatcherStats

__all__ = ["ActiveConsent", "ConsentIndex", "Matcher", "MatcherStats", "delta_id"]
