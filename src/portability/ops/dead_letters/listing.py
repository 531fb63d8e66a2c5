"""Which letters a ``dlq`` command applies to, and ``dlq list`` and ``dlq show`` themselves.

Filters apply client-side, on letters :mod:`.reading` has decoded, so a filter on consent or
app matches letters whose headers do not name them. :class:`Summary` counts alike failures
together (:func:`reason_class`), here and in the dead-letter counts of the status page.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from portability.ops.dead_letters.letters import Letter, parse_time
from portability.ops.dead_letters.reading import DeadLetterTopic
from portability.ops.errors import OpsError
from portability.settings import Settings
from portability.wire.topics import TopicNames, pipeline_topics

__all__ = [
    "LetterFilter",
    "Listing",
    "Summary",
    "list_letters",
    "parse_since",
    "reason_class",
    "resolve_topic",
    "show_letter",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which letters a command applies to; every field left None matches everything."""

    stage: str | None = None
    source_topic: str | None = None
    consent_id: str | None = None
    app_id: str | None = None
    since: datetime | None = None

    def matches(self, letter: Letter) -> bool:
        if self.stage is not None and letter.stage != self.stage:
            return False
        if self.source_topic is not None and letter.source_topic != self.source_topic:
            return False
        if self.consent_id is not None and letter.consent_id != self.consent_id:
            return False
        if self.app_id is not None and letter.app_id != self.app_id:
            return False
        if self.since is not None:
            moment = letter.time
            return moment is not None and moment >= self.since
        return True

    @property
    def empty(self) -> bool:
        return self == LetterFilter()


@dataclass(frozen=True, slots=True)
class Summary:
    """Counts of letters per stage and per kind of reason."""

    total: int
    by_stage: Mapping[str, int]
    by_reason: Mapping[str, int]

    @classmethod
    def of(cls, letters: Iterable[Letter]) -> Summary:
        stages: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for letter in letters:
            stages[letter.stage] += 1
            reasons[reason_class(letter.reason)] += 1
        return cls(sum(stages.values()), dict(stages), dict(reasons.most_common()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_stage": dict(self.by_stage),
            "by_reason": dict(self.by_reason),
        }


def reason_class(reason: str, width: int = 60) -> str:
    """A reason without its details, to count alike failures together.

    The details follow the first ``": "`` outside parentheses: ``HTTP 503 after 8
    attempt(s): <body>`` counts as ``HTTP 503 after 8 attempt(s)``.
    """
    depth = 0
    for index, char in enumerate(reason):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth <= 0 and reason.startswith(": ", index):
            reason = reason[:index]
            break
    reason = reason.strip() or "(no reason)"
    return reason if len(reason) <= width else reason[: width - 1] + "…"


@dataclass(frozen=True, slots=True)
class Listing:
    """What ``dlq list`` shows: the matching letters (the newest ``limit``), and counts."""

    topic: str
    start: int
    end: int
    letters: tuple[Letter, ...]
    matched: int
    summary: Summary
    markers: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "offsets": {"start": self.start, "end": self.end},
            "matched": self.matched,
            "shown": len(self.letters),
            "replay_markers": self.markers,
            "letters": [letter.as_dict() for letter in self.letters],
            "summary": self.summary.as_dict(),
        }


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2h``, ``30m``, ``7d``, ``45s``, ``1w`` ago, or an ISO time (UTC if it has no offset).

    Raises ValueError saying what is accepted.
    """
    match = _DURATION.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    moment = parse_time(text)
    if moment is None:
        raise ValueError(
            f"{text!r} is neither a duration (like 30m, 2h, 7d) nor an ISO time "
            "(like 2026-11-23T09:00:00Z)"
        )
    return moment


def resolve_topic(settings: Settings, name: str) -> str:
    """A pipeline topic may be named without the topic prefix (``deliveries``)."""
    specs = pipeline_topics(TopicNames.with_prefix(settings.topic_prefix), settings.partitions)
    names = {spec.name for spec in specs}
    full = f"{settings.topic_prefix}{name}"
    return full if name not in names and full in names else name


async def list_letters(
    settings: Settings,
    bootstrap: str,
    letter_filter: LetterFilter,
    limit: int | None = None,
    timeout_s: float = 10.0,
) -> Listing:
    """The letters that match, the newest ``limit`` of them, with counts over all matches."""
    async with DeadLetterTopic(settings, bootstrap, timeout_s) as topic:
        scan = await topic.read()
    matched = [letter for letter in scan.letters if letter_filter.matches(letter)]
    shown = matched[-limit:] if limit else matched
    return Listing(
        topic=scan.topic,
        start=scan.start,
        end=scan.end,
        letters=tuple(shown),
        matched=len(matched),
        summary=Summary.of(matched),
        markers=len(scan.marks),
    )


async def show_letter(
    settings: Settings, bootstrap: str, offset: int, timeout_s: float = 10.0
) -> Letter:
    """The letter at ``offset``; :class:`OpsError` if there is none (or it is a marker)."""
    async with DeadLetterTopic(settings, bootstrap, timeout_s) as topic:
        scan = await topic.read()
    letter = scan.find(offset)
    if letter is not None:
        return letter
    raise OpsError(scan.not_a_letter(offset))
