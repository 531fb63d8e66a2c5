"""Replay on request: deliver a consent's deltas again, from a sequence number or a time.

An app that lost deltas (its store was restored, a gap never filled) asks the API for them
again. The deltas are still on the ``deliveries`` topic for its retention (7 days), keyed by
consent id in the partition :func:`~portability.wire.topics.partition_for_consent` names.
A :class:`Replayer` accepts the requests of one API process: it checks the consent may be
replayed, records the replay, and runs it in the background
(:class:`~portability.delivery.replay_run.ReplayRun`), a few at a time. It also owns their
lifecycle: replays a previous process left unfinished are failed when it starts, and its own
are cancelled (and failed) when it stops.

Only active consents are replayed: an app must not receive data after the consent ended,
even data it was once sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from portability.consent import ConsentService
from portability.consent.replays import ReplayStore, ReplayView
from portability.delivery.errors import ReplayUnavailableError
from portability.delivery.replay_run import ReplayRetry, ReplayRun, replayable_app
from portability.delivery.sender import WebhookSender
from portability.runtime import Runtime
from portability.sealing import SecretsKeys
from portability.settings import Settings

__all__ = ["INTERRUPTED_BY_RESTART", "Replayer"]

log = logging.getLogger(__name__)

INTERRUPTED_BY_RESTART = "interrupted by a restart of the API: request the replay again"
_INTERRUPTED_BY_STOP = "interrupted: the API stopped before the replay finished; request it again"
_MAX_RUNNING = 4  # replays executing at once in one API process; the rest wait, pending


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
            await asyncio.to_thread(replayable_app, self._service, consent_id)
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

    async def _run(self, view: ReplayView) -> None:
        runtime = self._runtime
        assert runtime is not None  # noqa: S101 - submit refuses without Kafka
        run = ReplayRun(
            view,
            settings=self._settings,
            runtime=runtime,
            service=self._service,
            store=self._store,
            sender=self._sender,
            retry=self._retry,
        )
        async with self._slots:
            await run.run()
