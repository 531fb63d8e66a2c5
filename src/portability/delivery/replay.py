"""Replay on request: deliver a consent's deltas again, from a sequence number or a time.

An app that lost deltas (its store was restored, a gap never filled) asks the API for them
again. The deltas are still on the ``deliveries`` topic for its retention (7 days), keyed by
consent id in the partition :func:`~portability.wire.topics.partition_for_consent` names.
A :class:`Replayer` reads that partition with a reader outside any group (the delivery
worker's offsets are untouched), from its beginning (or the first offset at ``since``) up to
the high watermark seen when it starts, keeps the consent's records (comparing the key before
decoding anything), and posts them in ascending sequence, in batches, with the same
:class:`~portability.delivery.sender.WebhookSender` the worker uses: the same delta ids, so
the app deduplicates what it already has.

Only active consents are replayed, and the consent is checked again before every batch: an
app must not receive data after the consent ended, even data it was once sent. Memory stays
bounded: records stream through one batch at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from portability.consent import ConsentService
from portability.consent.errors import ConflictError
from portability.consent.replays import ReplayProgress, ReplayStore, ReplayView
from portability.delivery.sender import Outcome, WebhookSender
from portability.errors import PortabilityError
from portability.privacy import is_audience_record_id
from portability.runtime import Runtime
from portability.sealing import SecretsKeys, UnsealError
from portability.settings import Settings
from portability.wire.errors import WireFormatError
from portability.wire.records import AppRecord, DeliveryRecord, to_millis
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_consent

__all__ = [
    "INTERRUPTED_BY_RESTART",
    "ReplayRefusedError",
    "ReplayRetry",
    "ReplayUnavailableError",
    "Replayer",
]

log = logging.getLogger(__name__)

INTERRUPTED_BY_RESTART = "interrupted by a restart of the API: request the replay again"
_INTERRUPTED_BY_STOP = "interrupted: the API stopped before the replay finished; request it again"
_MAX_RUNNING = 4  # replays executing at once in one API process; the rest wait, pending
_POLL_MS = 200
_MAX_RECORDS = 500  # per poll: bounds what one read holds in memory
_MAX_EMPTY_POLLS = 50  # ~10 s without a record below the stop offset: the broker is stuck


class ReplayUnavailableError(PortabilityError):
    """This process has no Kafka, so it cannot read the deliveries topic."""


class ReplayRefusedError(ConflictError):
    """The consent or its app is not in a state that allows a replay.

    Attributes:
        code: ``consent_not_active``, ``app_cannot_receive`` or ``secrets_unavailable``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _ReplayFailed(Exception):
    """Ends a replay as failed; the message is what the app reads in ``last_error``."""


@dataclass(frozen=True, slots=True)
class ReplayRetry:
    """How a replay retries a retriable failure of one request before it fails.

    Attributes:
        attempts: Attempts per request, the first included.
        base_s: Wait before the second attempt; doubles each time, with jitter.
        max_s: Longest wait, also the longest ``Retry-After`` honoured.
    """

    attempts: int = 5
    base_s: float = 0.5
    max_s: float = 30.0

    def wait_s(self, attempt: int, outcome: Outcome) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if outcome.retry_after_s is not None:
            return min(outcome.retry_after_s, self.max_s)
        backoff = min(self.base_s * 2 ** (attempt - 1), self.max_s)
        return float(backoff * random.uniform(0.8, 1.0))


@dataclass(slots=True)
class _Progress:
    """A running replay's counters, and the batch it is filling."""

    deltas_found: int = 0
    deltas_sent: int = 0
    requests: int = 0
    first_sequence: int | None = None
    last_sequence: int | None = None
    last_error: str | None = None
    undecodable: int = 0
    batch: list[DeliveryRecord] = field(default_factory=list)
    batch_bytes: int = 0

    def snapshot(self) -> ReplayProgress:
        return ReplayProgress(
            deltas_found=self.deltas_found,
            deltas_sent=self.deltas_sent,
            requests=self.requests,
            first_sequence=self.first_sequence,
            last_sequence=self.last_sequence,
            last_error=self.last_error,
        )

    def found(self, delivery: DeliveryRecord) -> None:
        self.deltas_found += 1
        if self.first_sequence is None:
            self.first_sequence = delivery["sequence"]
        self.last_sequence = delivery["sequence"]


@dataclass(frozen=True, slots=True)
class _Range:
    """What one replay looks for: a consent's records from a sequence or a time."""

    consent_id: str
    from_sequence: int | None
    since: datetime | None
    # The consent's latest snapshot: its epoch, and its position once published (else None).
    snapshot_epoch: int = 0
    snapshot_position: int | None = None

    @property
    def since_ms(self) -> int | None:
        return None if self.since is None else to_millis(self.since)

    def wants(self, delivery: DeliveryRecord) -> bool:
        if delivery["consent_id"] != self.consent_id:
            return False
        if self.from_sequence is not None and delivery["sequence"] < self.from_sequence:
            return False
        if not self._after_snapshot(delivery):
            return False
        return self.since is None or delivery["matched_at"] >= self.since

    def _after_snapshot(self, delivery: DeliveryRecord) -> bool:
        """Not held by the consent's snapshot, nor waiting for one, as the worker decides."""
        if self.snapshot_epoch == 0 or is_audience_record_id(delivery["change"]["record_id"]):
            return True
        if self.snapshot_position is None:
            # The latest snapshot is not published: its epoch's deltas wait for it.
            return delivery.get("snapshot_epoch", 0) < self.snapshot_epoch
        source_offset = delivery.get("source_offset", -1)
        return source_offset < 0 or source_offset >= self.snapshot_position


class Replayer:
    """Accepts replay requests and runs them in the background of the API process.

    Args:
        settings: Topic layout, batch limits and request timeouts.
        engine: The consent store: replay state, consents, apps' endpoints and secrets.
        runtime: Kafka and the codec; None when the process has no Kafka, and then every
            request is refused with :class:`ReplayUnavailableError`.
        retry: How requests to the app are retried.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        runtime: Runtime | None,
        *,
        retry: ReplayRetry | None = None,
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._store = ReplayStore(engine)
        # The app's secrets are opened to sign what is replayed: the settings' keys.
        self._service = ConsentService(engine, secrets=SecretsKeys.from_settings(settings))
        self._retry = retry or ReplayRetry()
        self._sender = WebhookSender(settings)
        self._slots = asyncio.Semaphore(_MAX_RUNNING)
        self._submitting = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._started = False

    @property
    def store(self) -> ReplayStore:
        """Where replays are recorded."""
        return self._store

    async def start(self) -> None:
        """Fail replays a previous process left unfinished, and get ready to send.

        The API is one process per consent store (it also runs the store's only outbox
        relay), so whatever is unfinished when it starts was interrupted.
        """
        interrupted = await asyncio.to_thread(self._store.fail_unfinished, INTERRUPTED_BY_RESTART)
        for view in interrupted:
            log.warning(
                "replay %s of consent %s was interrupted by a restart",
                view.replay_id,
                view.consent_id,
                extra={"replay_id": view.replay_id, "consent_id": view.consent_id},
            )
        if self._runtime is not None:
            await self._sender.start()
            self._started = True

    async def stop(self) -> None:
        """Cancel this process's replays (recorded as failed) and close the sender."""
        replay_ids = list(self._tasks)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if replay_ids:
            with contextlib.suppress(SQLAlchemyError):
                await asyncio.to_thread(
                    self._store.fail_unfinished, _INTERRUPTED_BY_STOP, replay_ids
                )
        if self._started:
            await self._sender.stop()
            self._started = False

    async def submit(
        self,
        consent_id: str,
        requested_by: str,
        *,
        from_sequence: int | None = None,
        since: datetime | None = None,
    ) -> ReplayView:
        """Record a replay of ``consent_id`` and start it in the background.

        Args:
            consent_id: The consent whose deltas are delivered again.
            requested_by: The caller's role, kept for the record.
            from_sequence: Deltas with at least this sequence; or
            since: deltas the pipeline produced at or after this time.

        Returns:
            The replay, pending.

        Raises:
            ReplayUnavailableError: No Kafka in this process (or :meth:`start` not called).
            NotFoundError: No such consent.
            ReplayRefusedError: The consent is not active, or its app cannot receive.
            ReplayInProgressError: The consent has a replay in progress.
            TooManyReplaysError: The app has too many replays in progress.
        """
        if not self._started:
            raise ReplayUnavailableError(
                "replay needs Kafka: this API server runs without PORTABILITY_KAFKA_BOOTSTRAP, "
                "so it cannot read the deliveries topic"
            )
        async with self._submitting:  # one process: serialise the "one at a time" check
            await asyncio.to_thread(self._check_replayable, consent_id)
            view = await asyncio.to_thread(
                self._store.create,
                consent_id,
                requested_by,
                from_sequence=from_sequence,
                since=since,
            )
        task = asyncio.create_task(self._run(view), name=f"replay-{view.replay_id}")
        self._tasks[view.replay_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(view.replay_id, None))
        log.info(
            "replay %s of consent %s requested by %s (from_sequence=%s since=%s)",
            view.replay_id,
            consent_id,
            requested_by,
            from_sequence,
            since,
            extra={"replay_id": view.replay_id, "consent_id": consent_id, "app_id": view.app_id},
        )
        return view

    async def wait(self, replay_id: str) -> ReplayView:
        """Wait until the replay's background task ends, then return its state (for tests)."""
        task = self._tasks.get(replay_id)
        if task is not None:
            await asyncio.wait([task])
        return await asyncio.to_thread(self._store.get, replay_id)

    def _check_replayable(self, consent_id: str) -> AppRecord:
        """The app's current endpoint and secrets, if the consent may be replayed now."""
        consent = self._service.get_consent(consent_id)
        if not consent.is_active:
            reason = f" ({consent.removal_reason})" if consent.removal_reason else ""
            raise ReplayRefusedError(
                "consent_not_active",
                f"consent {consent_id!r} is {consent.status}{reason}: only an active consent's "
                "deltas are replayed, since its app must receive nothing after it ended",
            )
        app = self._service.get_app(consent.app_id)
        if not app.can_receive:
            raise ReplayRefusedError(
                "app_cannot_receive",
                f"app {app.app_id!r} cannot receive deliveries now (review "
                f"{app.review_status}, enabled={app.enabled}): an operator must enable it",
            )
        try:
            return app.to_sending_record()
        except UnsealError as error:
            raise ReplayRefusedError(
                "secrets_unavailable",
                f"app {app.app_id!r}'s signing secrets cannot be opened here ({error}): an "
                "operator must give the API the key that sealed them",
            ) from error

    # --- execution ----------------------------------------------------------------------------

    async def _run(self, view: ReplayView) -> None:
        progress = _Progress()
        async with self._slots:
            error: str | None = None
            try:
                await asyncio.to_thread(self._store.start, view.replay_id)
                await self._replay(view, progress)
            except _ReplayFailed as failure:
                error = str(failure)
            except KafkaError as failure:
                error = f"reading the deliveries topic failed: {failure!r}; request it again"
            except (PortabilityError, SQLAlchemyError) as failure:
                error = f"{type(failure).__name__}: {failure}"
            except Exception as failure:
                log.exception("replay %s crashed", view.replay_id)
                error = f"internal error: {failure!r}"
            await self._finish(view, progress, error)

    async def _finish(self, view: ReplayView, progress: _Progress, error: str | None) -> None:
        try:
            await asyncio.to_thread(
                self._store.finish, view.replay_id, progress.snapshot(), error=error
            )
        except SQLAlchemyError:
            # Left unfinished in the store: the next start of the API marks it failed.
            log.exception("replay %s: cannot record its end", view.replay_id)
        log.log(
            logging.WARNING if error else logging.INFO,
            "replay %s of consent %s %s: %d found, %d sent in %d requests%s",
            view.replay_id,
            view.consent_id,
            "failed" if error else "done",
            progress.deltas_found,
            progress.deltas_sent,
            progress.requests,
            f": {error}" if error else "",
            extra={
                "replay_id": view.replay_id,
                "consent_id": view.consent_id,
                "app_id": view.app_id,
                "undecodable": progress.undecodable,
            },
        )

    async def _replay(self, view: ReplayView, progress: _Progress) -> None:
        assert self._runtime is not None  # noqa: S101 - submit refuses without Kafka
        consent = await asyncio.to_thread(self._service.get_consent, view.consent_id)
        wanted = _Range(
            view.consent_id,
            view.from_sequence,
            view.since,
            consent.snapshot_epoch,
            consent.snapshot_position,
        )
        topic = self._runtime.topics.deliveries
        tp = TopicPartition(
            topic, partition_for_consent(view.consent_id, self._settings.partitions)
        )
        reader = self._runtime.kafka.reader(f"portability-replay-{view.replay_id}")
        await reader.start()
        try:
            reader.assign([tp])
            async for record in _consent_records(reader, tp, wanted):
                await self._take(view, wanted, record, progress)
            await self._flush(view, progress)
        finally:
            await reader.stop()

    async def _take(
        self,
        view: ReplayView,
        wanted: _Range,
        record: ConsumerRecord[bytes, bytes],
        progress: _Progress,
    ) -> None:
        """Decode one of the consent's records and add it to the batch if it is wanted."""
        assert self._runtime is not None  # noqa: S101
        try:
            delivery: DeliveryRecord = await self._runtime.codec.decode_fetching(  # type: ignore[assignment]
                SchemaName.DELIVERY, record.value
            )
        except WireFormatError as error:
            # The worker dead-lettered it the first time; it cannot be delivered now either.
            progress.undecodable += 1
            log.warning(
                "replay %s skips undecodable record at offset %d: %s",
                view.replay_id,
                record.offset,
                error,
                extra={"replay_id": view.replay_id, "offset": record.offset},
            )
            return
        # After a matcher restart a change may be matched again: same id, same sequence.
        if not wanted.wants(delivery) or (
            progress.last_sequence is not None and delivery["sequence"] <= progress.last_sequence
        ):
            return
        size = len(record.value or b"")
        if progress.batch and (
            len(progress.batch) >= self._settings.delivery_max_batch
            or progress.batch_bytes + size > self._settings.delivery_max_batch_bytes
        ):
            await self._flush(view, progress)
        progress.found(delivery)
        progress.batch.append(delivery)
        progress.batch_bytes += size

    async def _flush(self, view: ReplayView, progress: _Progress) -> None:
        """Post the batch (retrying), record the progress, and start a new batch."""
        if not progress.batch:
            return
        app = await asyncio.to_thread(self._still_replayable, view.consent_id)
        await self._post(view, app, progress)
        progress.deltas_sent += len(progress.batch)
        progress.batch = []
        progress.batch_bytes = 0
        await asyncio.to_thread(self._store.progress, view.replay_id, progress.snapshot())

    def _still_replayable(self, consent_id: str) -> AppRecord:
        try:
            return self._check_replayable(consent_id)
        except ReplayRefusedError as refusal:
            raise _ReplayFailed(f"stopped: {refusal}") from refusal

    async def _post(self, view: ReplayView, app: AppRecord, progress: _Progress) -> None:
        batch = progress.batch
        for attempt in range(1, self._retry.attempts + 1):
            progress.requests += 1
            outcome = await self._sender.post(app, batch)
            if outcome.ok:
                return
            progress.last_error = _describe(outcome)
            log.warning(
                "replay %s: sequences %d-%d to %s failed (attempt %d): %s",
                view.replay_id,
                batch[0]["sequence"],
                batch[-1]["sequence"],
                app["webhook_url"],
                attempt,
                progress.last_error,
                extra={
                    "replay_id": view.replay_id,
                    "consent_id": view.consent_id,
                    "app_id": app["app_id"],
                    "endpoint": app["webhook_url"],
                    "status": outcome.status,
                },
            )
            if not outcome.retriable:
                break
            if attempt < self._retry.attempts:
                await asyncio.sleep(self._retry.wait_s(attempt, outcome))
        raise _ReplayFailed(
            f"sequences {batch[0]['sequence']}-{batch[-1]['sequence']} could not be delivered "
            f"to {app['webhook_url']}: {progress.last_error}"
        )


def _describe(outcome: Outcome) -> str:
    excerpt = f" ({outcome.body_excerpt[:200]})" if outcome.body_excerpt else ""
    return f"{outcome.reason}{excerpt}"


async def _consent_records(
    reader: AIOKafkaConsumer, tp: TopicPartition, wanted: _Range
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """The consent's records of ``tp``, from where ``wanted`` starts to the end seen first.

    Records of other consents are skipped on their key, and, with ``since``, records whose
    timestamp is earlier (the matcher stamps a record after its ``matched_at``, so such a
    record cannot be wanted), all without decoding.
    """
    start = await _start_offset(reader, tp, wanted.since_ms)
    if start is None:
        return
    reader.seek(tp, start)
    key = wanted.consent_id.encode()
    since_ms = wanted.since_ms
    stop: int | None = None
    empty_polls = 0
    while stop is None or await reader.position(tp) < stop:
        batches = await reader.getmany(tp, timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
        if stop is None:
            # The end as of the first fetch: what arrives later is the worker's to deliver.
            stop = reader.highwater(tp)
        records = batches.get(tp, [])
        if not records:
            empty_polls += 1
            if empty_polls > _MAX_EMPTY_POLLS:
                raise _ReplayFailed(
                    f"{tp.topic}[{tp.partition}] returned no records below its end "
                    f"{stop} for {_MAX_EMPTY_POLLS} polls: request the replay again"
                )
            continue
        empty_polls = 0
        for record in records:
            if stop is not None and record.offset >= stop:
                return
            if record.key != key or (since_ms is not None and 0 <= record.timestamp < since_ms):
                continue
            yield record


async def _start_offset(
    reader: AIOKafkaConsumer, tp: TopicPartition, since_ms: int | None
) -> int | None:
    """Where to start reading ``tp``; None when it holds no record at all.

    With ``since_ms`` the broker is asked for the first offset at that time (ListOffsets by
    timestamp). Its answer is used only when it carries a timestamp at or after the one asked
    for: the embedded broker answers offset 0 with timestamp -1 for any time but the first
    record's, and then the partition is scanned from its beginning instead (still correct,
    as records are filtered by timestamp as they are read).
    """
    beginning = (await reader.beginning_offsets([tp]))[tp]
    # On Kafka the end; on Tansu one past the start of the last batch. Either way it is
    # beyond the beginning exactly when the partition holds a record.
    listed_end = (await reader.end_offsets([tp]))[tp]
    if listed_end <= beginning:
        return None
    if since_ms is None:
        return int(beginning)
    found = (await reader.offsets_for_times({tp: since_ms})).get(tp)
    if found is not None and found.timestamp >= since_ms and found.offset >= beginning:
        return int(found.offset)
    return int(beginning)
