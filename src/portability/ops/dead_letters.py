"""Reading, inspecting and replaying the dead-letter topic (``portability dlq``).

The topic is read without a consumer group: one partition, assigned, from its first record
to the high watermark seen at the first fetch, so a read is bounded however busy the
pipeline is. Filters apply client-side; every letter's value is decoded once, with the
schema of its source topic, so that what a letter is about (consent, app) is known even
when its headers do not say it, and so that replay can refuse bytes that would only be
dead-lettered again.

A replay re-produces a letter's original key and value to its source topic, in its source
partition (a consent's deliveries and notifications keep their lane), with headers
``dlq.replayed_from`` (the dead-letter offset) and ``dlq.replayed_at``. After the replayed
record is acknowledged, a *replay marker* is appended to the dead-letter topic itself: a
record without value whose headers name the letter and where its replay went
(``dlq.marker: replay``). Markers are how a later replay knows a letter was replayed
already (it refuses it without ``--again``) and how a letter born of a failed replay is
tied to the one it came from (its source position is the replay's position). Markers are
not letters: ``list``, ``show`` and ``replay`` read them as the letters' history.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from portability.broker import BrokerError, KafkaClients, bounded
from portability.broker.inspector import Inspector, TopicLayout
from portability.ops.errors import MissingTopicsError, OpsError
from portability.runtime import open_codec
from portability.settings import Settings
from portability.wire.codec import AvroCodec
from portability.wire.dead_letters import HEADER_PREFIX, DeadLetter
from portability.wire.errors import WireFormatError
from portability.wire.schemas import SchemaName
from portability.wire.topics import TopicNames, pipeline_topics

__all__ = [
    "MARKER_HEADER",
    "REPLAYED_AT_HEADER",
    "REPLAYED_FROM_HEADER",
    "Attempt",
    "Decoded",
    "Letter",
    "LetterFilter",
    "Listing",
    "ReplayDecision",
    "ReplayMark",
    "ReplayPlan",
    "ReplayResult",
    "Selection",
    "Summary",
    "execute_replay",
    "list_letters",
    "parse_since",
    "plan_replay",
    "reason_class",
    "resolve_topic",
    "show_letter",
]

log = logging.getLogger(__name__)

MARKER_HEADER = f"{HEADER_PREFIX}marker"
REPLAYED_FROM_HEADER = f"{HEADER_PREFIX}replayed_from"
REPLAYED_AT_HEADER = f"{HEADER_PREFIX}replayed_at"
_MARKER_REPLAY = "replay"
_TO = f"{HEADER_PREFIX}replayed_to."
_POLL_MS = 200
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# --- letters ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt from a letter's ``dlq.history``."""

    at: str
    status: int | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "status": self.status, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Decoded:
    """A letter's value read with its source topic's schema: the record, or why not."""

    schema: SchemaName | None
    record: dict[str, Any] | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.record is not None

    def as_dict(self, value: bytes | None) -> dict[str, Any]:
        document: dict[str, Any] = {"schema": self.schema.value if self.schema else None}
        if self.record is not None:
            document["decoded"] = _jsonable(self.record)
            return document
        document["error"] = self.error
        document["length"] = 0 if value is None else len(value)
        if value is not None:
            document["hex"] = value[:256].hex()
            document["utf8"] = value[:512].decode(errors="replace")
        return document


@dataclass(frozen=True, slots=True)
class ReplayMark:
    """A replay marker: letter ``letter`` was re-produced to ``topic[partition]@target``."""

    offset: int  # the marker's own offset in the dead-letter topic
    letter: int
    topic: str
    partition: int
    target: int
    at: str

    @property
    def position(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.target)

    def as_dict(self) -> dict[str, Any]:
        return {
            "marker_offset": self.offset,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.target,
            "at": self.at,
        }


@dataclass(slots=True)
class Letter:
    """One dead letter: the original key and value, and what its headers say."""

    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    raw_headers: tuple[tuple[str, bytes], ...]
    fields: dict[str, str]  # the dlq.* headers, without the prefix
    decoded: Decoded
    replay_topic: str | None = None  # where a replay goes; None: cannot be told
    consent_id: str | None = None
    app_id: str | None = None
    replays: list[ReplayMark] = field(default_factory=list)  # where it was replayed to
    replay_of: int | None = None  # the letter whose replay this letter is
    followups: list[int] = field(default_factory=list)  # letters born of its replays

    @property
    def stage(self) -> str:
        return self.fields.get("stage", "?")

    @property
    def source_topic(self) -> str | None:
        return self.fields.get("source.topic")

    @property
    def source_partition(self) -> int | None:
        return _int(self.fields.get("source.partition"))

    @property
    def source_offset(self) -> int | None:
        return _int(self.fields.get("source.offset"))

    @property
    def source(self) -> str:
        if self.source_topic is None:
            return "?"
        return f"{self.source_topic}[{self.source_partition}]@{self.source_offset}"

    @property
    def reason(self) -> str:
        return self.fields.get("reason", "")

    @property
    def attempts(self) -> int | None:
        return _int(self.fields.get("attempts"))

    @property
    def history(self) -> tuple[Attempt, ...]:
        return _history(self.fields.get("history"))[0]

    @property
    def history_error(self) -> str | None:
        return _history(self.fields.get("history"))[1]

    @property
    def time(self) -> datetime | None:
        """When it was dead-lettered: the record's timestamp, else its ``dlq.at`` header."""
        if self.timestamp_ms is not None and self.timestamp_ms >= 0:
            return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)
        return _parse_time(self.fields.get("at"))

    @property
    def was_replayed(self) -> bool:
        return bool(self.replays or self.followups)

    def as_dict(self) -> dict[str, Any]:
        moment = self.time
        return {
            "offset": self.offset,
            "time": None if moment is None else _iso(moment),
            "stage": self.stage,
            "source": {
                "topic": self.source_topic,
                "partition": self.source_partition,
                "offset": self.source_offset,
            },
            "reason": self.reason,
            "replay_topic": self.replay_topic,
            "consent_id": self.consent_id,
            "app_id": self.app_id,
            "attempts": self.attempts,
            "history": [attempt.as_dict() for attempt in self.history],
            "key": _key_text(self.key),
            "decodable": self.decoded.ok,
            "replays": [mark.as_dict() for mark in self.replays],
            "replay_of": self.replay_of,
            "replayed_again_as": list(self.followups),
        }

    def detail(self) -> dict[str, Any]:
        """Everything about the letter: :meth:`as_dict`, every header, and the value."""
        document = self.as_dict()
        document["headers"] = {name: _header_text(value) for name, value in self.raw_headers}
        if self.history_error:
            document["history_error"] = self.history_error
        document["value"] = self.decoded.as_dict(self.value)
        return document


# --- filters and summaries ------------------------------------------------------------------


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
    moment = _parse_time(text)
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


# --- reading ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Scan:
    """The dead-letter topic read once: its letters, linked to their replay markers."""

    topic: str
    start: int
    end: int
    letters: list[Letter]
    marks: list[ReplayMark]

    def find(self, offset: int) -> Letter | None:
        return next((letter for letter in self.letters if letter.offset == offset), None)

    def mark_at(self, offset: int) -> ReplayMark | None:
        return next((mark for mark in self.marks if mark.offset == offset), None)


class _DeadLetterTopic:
    """The dead-letter topic of ``settings`` on ``bootstrap``; ``async with`` it, then read."""

    def __init__(self, settings: Settings, bootstrap: str, timeout_s: float) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self.names = TopicNames.with_prefix(settings.topic_prefix)
        self.topic = self.names.dead_letters
        self._codec: AvroCodec | None = None

    async def __aenter__(self) -> _DeadLetterTopic:
        async with Inspector(self.bootstrap, self.timeout_s) as inspector:
            layouts = await inspector.layouts([self.topic])
        layout = layouts.get(self.topic)
        if layout is None:
            raise MissingTopicsError([self.topic], self.bootstrap)
        if len(layout.partitions) != 1:
            raise OpsError(
                f"{self.topic} has {len(layout.partitions)} partitions; the pipeline creates it "
                "with 1, and a dead letter is known by its offset in that partition: recreate "
                "the topic with one partition"
            )
        self._codec = await _open_codec(self.settings)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._codec is not None:
            await self._codec.registry.close()

    async def read(self) -> _Scan:
        """Every letter and marker up to the high watermark of the first fetch."""
        start, end, records = await self._fetch_all()
        letters: list[Letter] = []
        marks: list[ReplayMark] = []
        for record in records:
            mark = _mark(record)
            if mark is not None:
                marks.append(mark)
            else:
                letters.append(await self._letter(record))
        scan = _Scan(self.topic, start, end, letters, marks)
        _link(scan)
        return scan

    async def _fetch_all(self) -> tuple[int, int, list[ConsumerRecord[bytes, bytes]]]:
        consumer = KafkaClients(self.bootstrap, self.settings).reader("portability-dlq")
        try:
            await bounded(consumer.start(), self.bootstrap, self.timeout_s, "connect")
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            start = await bounded(consumer.position(tp), self.bootstrap, self.timeout_s, "seek")
            records, end = await self._drain(consumer, tp, start)
        finally:
            await consumer.stop()
        return start, end, records

    async def _drain(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, start: int
    ) -> tuple[list[ConsumerRecord[bytes, bytes]], int]:
        """Fetch until the position reaches the end; a read that stops moving is an error.

        The end is the high watermark of the first fetch answer (ListOffsets "latest" is
        wrong on Tansu: see :mod:`portability.broker.inspector`); letters written meanwhile
        are left for the next command.
        """
        loop = asyncio.get_running_loop()
        records: list[ConsumerRecord[bytes, bytes]] = []
        end: int | None = None
        position, moved_at = start, loop.time()
        while True:
            batch = await consumer.getmany(tp, timeout_ms=_POLL_MS)
            if end is None:
                end = consumer.highwater(tp)
            records += batch.get(tp, [])
            reached = max(position, await consumer.position(tp))
            if reached > position:
                position, moved_at = reached, loop.time()
            if end is not None and position >= end:
                return [record for record in records if record.offset < end], end
            if loop.time() - moved_at > self.timeout_s:
                raise BrokerError(
                    f"reading {self.topic} from {self.bootstrap} stopped at offset {position} "
                    f"of {end if end is not None else '?'} for {self.timeout_s:g} s"
                )

    async def _letter(self, record: ConsumerRecord[bytes, bytes]) -> Letter:
        headers = tuple((name, bytes(value)) for name, value in record.headers)
        fields = DeadLetter.parse_headers(headers)
        source = fields.get("source.topic")
        decoded = await self._decode(schemas_for_topic(self.names, source), record.value, source)
        letter = Letter(
            offset=record.offset,
            timestamp_ms=record.timestamp,
            key=record.key,
            value=record.value,
            raw_headers=headers,
            fields=fields,
            decoded=decoded,
        )
        letter.replay_topic = _replay_topic(self.names, source, decoded)
        letter.consent_id, letter.app_id = _about(self.names, letter)
        return letter

    async def _decode(
        self, schemas: Sequence[SchemaName], value: bytes | None, topic: str | None
    ) -> Decoded:
        if not schemas:
            return Decoded(None, None, f"no schema is known for source topic {topic or '?'}")
        if self._codec is None:  # pragma: no cover - __aenter__ sets it
            raise RuntimeError("the dead-letter topic was not opened")
        errors = []
        for schema in schemas:
            try:
                return Decoded(schema, await self._codec.decode_fetching(schema, value), None)
            except WireFormatError as error:
                errors.append(str(error))
        return Decoded(schemas[0] if len(schemas) == 1 else None, None, "; ".join(errors))


def schemas_for_topic(names: TopicNames, topic: str | None) -> tuple[SchemaName, ...]:
    """The schemas the records of a pipeline topic may have (the frame says which)."""
    return {
        names.account_changes: (SchemaName.ACCOUNT_CHANGE,),
        names.consents: (SchemaName.CONSENT,),
        names.deliveries: (SchemaName.DELIVERY,),
        names.notifications: (SchemaName.NOTIFICATION,),
        names.deliveries_retry: (SchemaName.DELIVERY, SchemaName.NOTIFICATION),
        names.apps: (SchemaName.APP,),
    }.get(topic or "", ())


def _replay_topic(names: TopicNames, source: str | None, decoded: Decoded) -> str | None:
    """The source topic, except for a parked copy: back to deliveries or notifications.

    A record replayed into the retry topic would lack its retry headers and be
    dead-lettered again; the original topic gives it a fresh start in the consent's lane
    (same partition number: the retry topic is partitioned like both).
    """
    if source != names.deliveries_retry:
        return source
    return (
        {
            SchemaName.DELIVERY: names.deliveries,
            SchemaName.NOTIFICATION: names.notifications,
        }.get(decoded.schema)
        if decoded.ok and decoded.schema
        else None
    )


def _about(names: TopicNames, letter: Letter) -> tuple[str | None, str | None]:
    """The consent and app of a letter: its headers, else its decoded value, else its key.

    Deliveries and notifications are keyed by consent id, so even an undecodable one names
    its consent.
    """
    record = letter.decoded.record or {}
    consent = letter.fields.get("consent_id") or _str(record.get("consent_id"))
    app = letter.fields.get("app_id") or _str(record.get("app_id"))
    keyed_by_consent = letter.source_topic in (
        names.deliveries,
        names.notifications,
        names.deliveries_retry,
    )
    if consent is None and keyed_by_consent and letter.key:
        consent = letter.key.decode(errors="replace")
    return consent, app


def _mark(record: ConsumerRecord[bytes, bytes]) -> ReplayMark | None:
    headers = {name: bytes(value).decode(errors="replace") for name, value in record.headers}
    if headers.get(MARKER_HEADER) != _MARKER_REPLAY:
        return None
    letter = _int(headers.get(REPLAYED_FROM_HEADER))
    partition = _int(headers.get(f"{_TO}partition"))
    target = _int(headers.get(f"{_TO}offset"))
    if letter is None or partition is None or target is None:
        log.warning("ignoring a malformed replay marker at offset %d", record.offset)
        return None
    return ReplayMark(
        offset=record.offset,
        letter=letter,
        topic=headers.get(f"{_TO}topic", "?"),
        partition=partition,
        target=target,
        at=headers.get(f"{HEADER_PREFIX}at", ""),
    )


def _link(scan: _Scan) -> None:
    """Tie markers to their letters, and letters born of a replay to the replayed letter.

    A replayed record that fails again is dead-lettered with its own position as source;
    the marker says which letter was replayed to that position. A worker that forwards the
    replayed record's ``dlq.replayed_from`` header ties them even without a marker.
    """
    by_offset = {letter.offset: letter for letter in scan.letters}
    replayed_to: dict[tuple[str, int, int], int] = {}
    for mark in scan.marks:
        replayed_to[mark.position] = mark.letter
        if mark.letter in by_offset:
            by_offset[mark.letter].replays.append(mark)
    for letter in scan.letters:
        origin = _int(letter.fields.get("replayed_from"))
        topic, partition, offset = (
            letter.source_topic,
            letter.source_partition,
            letter.source_offset,
        )
        if origin is None and topic is not None and partition is not None and offset is not None:
            origin = replayed_to.get((topic, partition, offset))
        if origin is None or origin == letter.offset:
            continue
        letter.replay_of = origin
        if origin in by_offset:
            by_offset[origin].followups.append(letter.offset)


# --- list and show ------------------------------------------------------------------------------


async def list_letters(
    settings: Settings,
    bootstrap: str,
    letter_filter: LetterFilter,
    limit: int | None = None,
    timeout_s: float = 10.0,
) -> Listing:
    """The letters that match, the newest ``limit`` of them, with counts over all matches."""
    async with _DeadLetterTopic(settings, bootstrap, timeout_s) as topic:
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
    async with _DeadLetterTopic(settings, bootstrap, timeout_s) as topic:
        scan = await topic.read()
    letter = scan.find(offset)
    if letter is not None:
        return letter
    raise OpsError(_not_a_letter(scan, offset))


def _not_a_letter(scan: _Scan, offset: int) -> str:
    mark = scan.mark_at(offset)
    if mark is not None:
        return (
            f"offset {offset} of {scan.topic} is not a dead letter but the record of a replay: "
            f"letter {mark.letter} was replayed to {mark.topic}[{mark.partition}]@{mark.target}"
        )
    if scan.start >= scan.end:
        return f"no dead letter at offset {offset}: {scan.topic} is empty"
    return (
        f"no dead letter at offset {offset} of {scan.topic}: its offsets run from {scan.start} "
        f"to {scan.end - 1} (`portability dlq list` shows them)"
    )


# --- replay -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selection:
    """Letters named by offset, or (``all_matching``) every letter the filter matches."""

    offsets: tuple[int, ...] = ()
    letter_filter: LetterFilter = LetterFilter()
    all_matching: bool = False


@dataclass(frozen=True, slots=True)
class ReplayDecision:
    """A selected letter, and why it will not be replayed (``refusal``), if it will not."""

    letter: Letter
    refusal: str | None = None

    @property
    def target(self) -> str:
        letter = self.letter
        return f"{letter.replay_topic}[{letter.source_partition}]" if letter.replay_topic else "?"


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """What a replay would do. Named letters are all-or-nothing: one refusal blocks them."""

    topic: str
    named: bool
    decisions: tuple[ReplayDecision, ...]
    not_found: tuple[str, ...] = ()  # why named offsets are not letters

    @property
    def ready(self) -> list[Letter]:
        return [d.letter for d in self.decisions if d.refusal is None]

    @property
    def refused(self) -> list[ReplayDecision]:
        return [d for d in self.decisions if d.refusal is not None]

    @property
    def blocked(self) -> bool:
        return self.named and bool(self.not_found or self.refused)

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "blocked": self.blocked,
            "not_found": list(self.not_found),
            "letters": [
                {
                    "offset": d.letter.offset,
                    "target": d.target,
                    "consent_id": d.letter.consent_id,
                    "replay": d.refusal is None,
                    "refusal": d.refusal,
                }
                for d in self.decisions
            ],
        }


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """One letter replayed (``offset`` in its source topic), or the error that stopped it."""

    letter: Letter
    offset: int | None
    error: str | None = None
    marked: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "letter": self.letter.offset,
            "topic": self.letter.replay_topic,
            "partition": self.letter.source_partition,
            "offset": self.offset,
            "error": self.error,
            "marked": self.marked,
        }


async def plan_replay(
    settings: Settings,
    bootstrap: str,
    selection: Selection,
    *,
    force: bool = False,
    again: bool = False,
    timeout_s: float = 10.0,
) -> ReplayPlan:
    """Select the letters and decide, for each, whether it can be replayed."""
    async with _DeadLetterTopic(settings, bootstrap, timeout_s) as topic:
        scan = await topic.read()
        letters, not_found = _select(scan, selection)
        sources = {letter.replay_topic for letter in letters if letter.replay_topic}
        async with Inspector(bootstrap, timeout_s) as inspector:
            layouts = await inspector.layouts(sources)
    decisions = tuple(
        ReplayDecision(letter, _refusal(letter, layouts, force=force, again=again))
        for letter in letters
    )
    return ReplayPlan(scan.topic, not selection.all_matching, decisions, tuple(not_found))


def _select(scan: _Scan, selection: Selection) -> tuple[list[Letter], list[str]]:
    if selection.all_matching:
        return [ltr for ltr in scan.letters if selection.letter_filter.matches(ltr)], []
    letters: list[Letter] = []
    not_found: list[str] = []
    for offset in dict.fromkeys(selection.offsets):
        letter = scan.find(offset)
        if letter is None:
            not_found.append(_not_a_letter(scan, offset))
        else:
            letters.append(letter)
    return letters, not_found


def _refusal(
    letter: Letter, layouts: Mapping[str, TopicLayout], *, force: bool, again: bool
) -> str | None:
    """Why ``letter`` must not be replayed, with what would change that; None if it may."""
    topic, partition = letter.replay_topic, letter.source_partition
    if letter.source_topic is None or partition is None:
        return "its headers do not name a source topic and partition (not a pipeline letter)"
    if topic is None:
        return (
            f"it comes from {letter.source_topic} and its value does not decode, so whether "
            "it was a delivery or a notification, and where to replay it, is unknown"
        )
    layout = layouts.get(topic)
    if layout is None:
        return f"its source topic {topic} does not exist (create it: portability topics create)"
    if partition not in layout.partitions:
        return f"{topic} has no partition {partition} (it has {len(layout.partitions)})"
    if not letter.decoded.ok and not force:
        return (
            f"its value does not decode, so it would only be dead-lettered again "
            f"(--force replays it anyway): {letter.decoded.error}"
        )
    if letter.was_replayed and not again:
        return f"already replayed ({_replay_note(letter)}); --again replays it once more"
    return None


def _replay_note(letter: Letter) -> str:
    notes = [f"to {m.topic}[{m.partition}]@{m.target} at {m.at}" for m in letter.replays]
    notes += [f"dead-lettered again as letter {offset}" for offset in letter.followups]
    return "; ".join(notes)


async def execute_replay(
    settings: Settings,
    bootstrap: str,
    letters: Sequence[Letter],
    timeout_s: float = 10.0,
) -> list[ReplayResult]:
    """Re-produce each letter to its source partition, then record a marker for each.

    Letters are sent in dead-letter order through one producer, so two letters of one
    consent keep their order in its partition. A marker is written only once the replay
    is acknowledged.
    """
    dead_letters = TopicNames.with_prefix(settings.topic_prefix).dead_letters
    producer = KafkaClients(bootstrap, settings).producer("portability-dlq-replay", linger_ms=0)
    try:
        await bounded(producer.start(), bootstrap, timeout_s, "connect")
        results = await _produce_replays(producer, sorted(letters, key=lambda x: x.offset))
        return await _write_markers(producer, dead_letters, results)
    finally:
        await producer.stop()


async def _produce_replays(
    producer: AIOKafkaProducer, letters: Sequence[Letter]
) -> list[ReplayResult]:
    now = _iso(datetime.now(UTC)).encode()
    pending: list[tuple[Letter, asyncio.Future[Any] | BaseException]] = []
    for letter in letters:
        headers = [(REPLAYED_FROM_HEADER, str(letter.offset).encode()), (REPLAYED_AT_HEADER, now)]
        try:
            future = await producer.send(
                letter.replay_topic,
                letter.value,
                key=letter.key,
                partition=letter.source_partition,
                headers=headers,
            )
        except KafkaError as error:
            pending.append((letter, error))
            continue
        pending.append((letter, future))
    results = []
    for letter, sent in pending:
        results.append(await _replay_result(letter, sent))
    return results


async def _replay_result(letter: Letter, sent: asyncio.Future[Any] | BaseException) -> ReplayResult:
    if isinstance(sent, BaseException):
        return ReplayResult(letter, None, f"{type(sent).__name__}: {sent}")
    try:
        metadata = await sent
    except KafkaError as error:
        return ReplayResult(letter, None, f"{type(error).__name__}: {error}")
    log.info(
        "replayed dead letter %d to %s[%d]@%d",
        letter.offset,
        letter.replay_topic,
        letter.source_partition,
        metadata.offset,
        extra={"consent": letter.consent_id, "app": letter.app_id, "letter": letter.offset},
    )
    return ReplayResult(letter, int(metadata.offset))


async def _write_markers(
    producer: AIOKafkaProducer, topic: str, results: list[ReplayResult]
) -> list[ReplayResult]:
    at = _iso(datetime.now(UTC)).encode()
    marked: list[ReplayResult] = []
    for result in results:
        if result.offset is None:
            marked.append(result)
            continue
        letter = result.letter
        headers = [
            (MARKER_HEADER, _MARKER_REPLAY.encode()),
            (REPLAYED_FROM_HEADER, str(letter.offset).encode()),
            (f"{_TO}topic", (letter.replay_topic or "").encode()),
            (f"{_TO}partition", str(letter.source_partition).encode()),
            (f"{_TO}offset", str(result.offset).encode()),
            (f"{HEADER_PREFIX}at", at),
        ]
        try:
            await producer.send_and_wait(topic, None, key=letter.key, headers=headers)
        except KafkaError:
            log.exception(
                "replayed dead letter %d but could not record the replay",
                letter.offset,
                extra={"consent": letter.consent_id, "letter": letter.offset},
            )
            marked.append(result)
            continue
        marked.append(ReplayResult(letter, result.offset, marked=True))
    return marked


# --- helpers ------------------------------------------------------------------------------------


async def _open_codec(settings: Settings) -> AvroCodec:
    """The codec as :class:`portability.runtime.Runtime` builds it, without creating topics."""
    return await open_codec(settings)


def _history(text: str | None) -> tuple[tuple[Attempt, ...], str | None]:
    if not text:
        return (), None
    try:
        entries = json.loads(text)
    except ValueError as error:
        return (), f"dlq.history is not JSON: {error}"
    if not isinstance(entries, list):
        return (), "dlq.history is not a JSON list of attempts"
    try:
        return tuple(_attempt(entry) for entry in entries), None
    except (ValueError, TypeError, AttributeError) as error:
        return (), f"dlq.history has an attempt that is not {{at, status, reason}}: {error}"


def _attempt(entry: Mapping[str, Any]) -> Attempt:
    status = entry.get("status")
    return Attempt(
        at=str(entry.get("at", "")),
        status=int(status) if status is not None else None,
        reason=str(entry.get("reason", "")),
    )


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _key_text(key: bytes | None) -> str | None:
    """A key as text when it is UTF-8 (consent and user ids are), else ``hex:...``."""
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return "hex:" + binascii.hexlify(key).decode()


def _header_text(value: bytes) -> str:
    return _key_text(value) or ""


def _jsonable(value: Any) -> Any:
    """A decoded record as JSON can carry it: times as ISO text, bytes as hex."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, bytes):
        return value.hex()
    return value
