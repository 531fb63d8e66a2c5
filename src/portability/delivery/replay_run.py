"""Running one replay: the consent's deliveries read back, posted in batches, progress kept.

A :class:`ReplayRun` is one replay's background task. It reads the consent's records with
:func:`~portability.delivery.replay_reading.consent_records`, decodes them, keeps those its
:class:`~portability.delivery.replay_reading.ReplayRange` wants, and posts them in ascending
sequence, in batches, with the same :class:`~portability.delivery.sender.WebhookSender` the
worker uses: the same delta ids, so the app deduplicates what it already has. A failed
request is retried as :class:`ReplayRetry` says. The consent is checked again before every
batch (:func:`replayable_app`): an app must not receive data after the consent ended, even
data it was once sent. Memory stays bounded: records stream through one batch at a time.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from portability.consent import ConsentService
from portability.consent.replays import ReplayProgress, ReplayStore, ReplayView
from portability.delivery.errors import ReplayFailedError, ReplayRefusedError
from portability.delivery.replay_reading import ReplayRange, consent_records
from portability.delivery.sender import Outcome, WebhookSender
from portability.errors import PortabilityError
from portability.runtime import Runtime
from portability.sealing import UnsealError
from portability.settings import Settings
from portability.wire.errors import WireFormatError
from portability.wire.records import AppRecord, DeliveryRecord
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_consent

__all__ = ["ReplayRetry", "ReplayRun", "replayable_app"]

log = logging.getLogger(__name__)


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


def replayable_app(service: ConsentService, consent_id: str) -> AppRecord:
    """The app's current endpoint and secrets, if the consent may be replayed now.

    Raises:
        NotFoundError: No such consent.
        ReplayRefusedError: The consent is not active, its app cannot receive, or the app's
            secrets cannot be opened here.
    """
    consent = service.get_consent(consent_id)
    if not consent.is_active:
        reason = f" ({consent.removal_reason})" if consent.removal_reason else ""
        raise ReplayRefusedError(
            "consent_not_active",
            f"consent {consent_id!r} is {consent.status}{reason}: only an active consent's "
            "deltas are replayed, since its app must receive nothing after it ended",
        )
    app = service.get_app(consent.app_id)
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


class ReplayRun:
    """One replay, from reading the consent's partition to recording how it ended.

    Args:
        view: The replay as recorded (pending).
        settings: Partition count and batch limits.
        runtime: Kafka and the codec.
        service: The consent store, checked before every batch.
        store: Where the replay's state and counters are recorded.
        sender: Posts batches to the app (started by the caller).
        retry: How a failed request is retried.
    """

    def __init__(
        self,
        view: ReplayView,
        *,
        settings: Settings,
        runtime: Runtime,
        service: ConsentService,
        store: ReplayStore,
        sender: WebhookSender,
        retry: ReplayRetry,
    ) -> None:
        self._view = view
        self._settings = settings
        self._runtime = runtime
        self._service = service
        self._store = store
        self._sender = sender
        self._retry = retry
        self._progress = _Progress()

    async def run(self) -> None:
        """Run the replay and record its end; every failure ends it as failed, never raises."""
        view = self._view
        error: str | None = None
        try:
            await asyncio.to_thread(self._store.start, view.replay_id)
            await self._replay()
        except ReplayFailedError as failure:
            error = str(failure)
        except KafkaError as failure:
            error = f"reading the deliveries topic failed: {failure!r}; request it again"
        except (PortabilityError, SQLAlchemyError) as failure:
            error = f"{type(failure).__name__}: {failure}"
        except Exception as failure:
            log.exception("replay %s crashed", view.replay_id)
            error = f"internal error: {failure!r}"
        await self._finish(error)

    async def _finish(self, error: str | None) -> None:
        view, progress = self._view, self._progress
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

    async def _replay(self) -> None:
        view = self._view
        consent = await asyncio.to_thread(self._service.get_consent, view.consent_id)
        wanted = ReplayRange(
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
            async for record in consent_records(reader, tp, wanted):
                await self._take(wanted, record)
            await self._flush()
        finally:
            await reader.stop()

    async def _take(self, wanted: ReplayRange, record: ConsumerRecord[bytes, bytes]) -> None:
        """Decode one of the consent's records and add it to the batch if it is wanted."""
        view, progress = self._view, self._progress
        try:
            delivery: DeliveryRecord = await self._runtime.codec.decode_fetching(
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
            await self._flush()
        progress.found(delivery)
        progress.batch.append(delivery)
        progress.batch_bytes += size

    async def _flush(self) -> None:
        """Post the batch (retrying), record the progress, and start a new batch."""
        progress = self._progress
        if not progress.batch:
            return
        app = await asyncio.to_thread(self._still_replayable)
        await self._post(app)
        progress.deltas_sent += len(progress.batch)
        progress.batch = []
        progress.batch_bytes = 0
        await asyncio.to_thread(self._store.progress, self._view.replay_id, progress.snapshot())

    def _still_replayable(self) -> AppRecord:
        try:
            return replayable_app(self._service, self._view.consent_id)
        except ReplayRefusedError as refusal:
            raise ReplayFailedError(f"stopped: {refusal}") from refusal

    async def _post(self, app: AppRecord) -> None:
        view, progress = self._view, self._progress
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
        raise ReplayFailedError(
            f"sequences {batch[0]['sequence']}-{batch[-1]['sequence']} could not be delivered "
            f"to {app['webhook_url']}: {progress.last_error}"
        )


def _describe(outcome: Outcome) -> str:
    excerpt = f" ({outcome.body_excerpt[:200]})" if outcome.body_excerpt else ""
    return f"{outcome.reason}{excerpt}"
