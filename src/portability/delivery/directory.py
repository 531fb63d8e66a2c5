"""What the delivery worker knows of apps and consents, followed from their compacted topics.

Every worker reads all of ``apps`` and ``consents`` (small, compacted): it needs an app's
endpoint and secrets, and must hear of a revocation as soon as possible whatever partition
the consent lives in.

An app's secrets arrive sealed (:mod:`portability.sealing`) and are opened here, with the keys
of the settings, into the in-memory record the sender signs with. An app whose secrets do not
open (the worker lacks the key that sealed them, or holds another key under its id) is kept
with none and the reason (:meth:`Directory.secrets_problem`): its deliveries wait and are
retried, they are neither sent unsigned nor dead-lettered at once, and the worker runs on. The
reason is logged once per app state, naming the key and the setting to fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from portability.runtime import Runtime
from portability.sealing import SecretsKeys, UnsealError
from portability.wire.errors import WireFormatError
from portability.wire.records import AppRecord, ConsentRecord
from portability.wire.schemas import SchemaName

__all__ = ["Directory"]

log = logging.getLogger(__name__)

RevocationListener = Callable[[str], None]


class Directory:
    """Apps and consent states, kept current by a background reader."""

    def __init__(
        self,
        runtime: Runtime,
        client_id: str = "portability-directory",
        *,
        keys: SecretsKeys | None = None,
    ) -> None:
        """Follow ``runtime``'s topics; open secrets with ``keys`` (default: the settings').

        Raises:
            SecretsKeyError: No keys given and the settings name none (or a bad one).
        """
        self._runtime = runtime
        self._keys = keys or SecretsKeys.from_settings(runtime.settings)
        self._unopened: dict[str, str] = {}  # app id -> why its secrets did not open
        self._reader: AIOKafkaConsumer = runtime.kafka.reader(client_id)
        self._apps: dict[str, AppRecord] = {}
        self._consents: dict[str, ConsentRecord] = {}
        self._listeners: list[RevocationListener] = []
        self._app_listeners: list[Callable[[AppRecord], None]] = []
        self._ended: set[str] = set()
        self._caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._partitions: list[TopicPartition] = []

    def app(self, app_id: str) -> AppRecord | None:
        """The app's latest state, its secrets opened (none if they did not open)."""
        return self._apps.get(app_id)

    def secrets_problem(self, app_id: str) -> str | None:
        """Why the app's secrets could not be opened; None when they were (or are clear)."""
        return self._unopened.get(app_id)

    def is_stopped(self, consent_id: str) -> bool:
        """True when the consent is known to be revoked or expired: deliver nothing more."""
        if consent_id in self._ended:
            return True
        consent = self._consents.get(consent_id)
        return consent is not None and consent["status"] != "active"

    def published_snapshot(self, consent_id: str) -> tuple[int, int, int] | None:
        """The consent's current snapshot as published: (epoch, position, last page offset).

        None while the consent has no snapshot, or its current one is not published yet.
        """
        consent = self._consents.get(consent_id)
        if consent is None:
            return None
        position = consent.get("snapshot_position")
        last_page = consent.get("snapshot_last_page_offset")
        if position is None or last_page is None:
            return None
        return consent.get("snapshot_epoch", 0), position, last_page

    def mark_stopped(self, consent_id: str) -> None:
        """Stop a consent before its new state arrives (its removal was announced)."""
        if consent_id in self._ended:
            return
        self._ended.add(consent_id)
        self._notify(consent_id)

    def on_revocation(self, listener: RevocationListener) -> None:
        self._listeners.append(listener)

    def on_app(self, listener: Callable[[AppRecord], None]) -> None:
        """Call ``listener`` with every app state read (e.g. a new webhook URL)."""
        self._app_listeners.append(listener)

    async def start(self, timeout_s: float = 30.0) -> None:
        """Read both topics to their end, then keep following them in the background."""
        await self._reader.start()
        topics = self._runtime.topics
        self._partitions = [
            TopicPartition(topic, partition)
            for topic in (topics.apps, topics.consents)
            for partition in sorted(self._reader.partitions_for_topic(topic) or ())
        ]
        self._reader.assign(self._partitions)
        await self._reader.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._follow(), name="directory-follow")
        try:
            await asyncio.wait_for(self._caught_up.wait(), timeout_s)
        except TimeoutError:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._reader.stop()

    async def _follow(self) -> None:
        while True:
            batch = await self._reader.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    self._apply(record)
            if not self._caught_up.is_set() and await self._at_end():
                self._caught_up.set()
                for reason in self._unopened.values():
                    log.error("%s", reason)

    async def _at_end(self) -> bool:
        for tp in self._partitions:
            highwater = self._reader.highwater(tp)
            if highwater is None or await self._reader.position(tp) < highwater:
                return False
        return True

    def _apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        codec = self._runtime.codec
        is_app = record.topic == self._runtime.topics.apps
        try:
            opened = codec.decode(SchemaName.APP, record.value) if is_app else None
            consent = None if is_app else codec.decode(SchemaName.CONSENT, record.value)
        except WireFormatError as error:
            # The matcher dead-letters bad consent records; here they are only skipped.
            log.warning(
                "skipping %s[%d]@%d: %s", record.topic, record.partition, record.offset, error
            )
            return
        if opened is not None:
            app = self._opened(opened)
            self._apps[app["app_id"]] = app
            for app_listener in self._app_listeners:
                app_listener(app)
        elif consent is not None:
            self._apply_consent(consent)

    def _opened(self, app: AppRecord) -> AppRecord:
        """``app`` with its sealed secrets opened into ``signing_secrets`` (memory only)."""
        app_id = app["app_id"]
        sealed = app.get("sealed_signing_secrets") or []
        if not sealed:  # written before secrets were sealed: they are clear already
            self._unopened.pop(app_id, None)
            return app
        try:
            opened = [self._keys.open(value, app_id) for value in sealed]
        except UnsealError as error:
            return self._unopenable(app, error)
        self._unopened.pop(app_id, None)
        return {**app, "signing_secrets": opened, "sealed_signing_secrets": []}

    def _unopenable(self, app: AppRecord, error: UnsealError) -> AppRecord:
        """Keep ``app`` without secrets, and why (logged once per state; while catching
        up, once at the end, for the latest state only)."""
        app_id = app["app_id"]
        reason = (
            f"the signing secrets of app {app_id} (version {app['version']}) cannot be "
            f"opened: {error}; its deliveries wait and are retried"
        )
        if self._caught_up.is_set() and self._unopened.get(app_id) != reason:
            log.error("%s", reason, extra={"app_id": app_id})
        self._unopened[app_id] = reason
        return {**app, "signing_secrets": [], "sealed_signing_secrets": []}

    def _apply_consent(self, consent: ConsentRecord) -> None:
        known = self._consents.get(consent["consent_id"])
        if known is not None and known["version"] > consent["version"]:
            return
        self._consents[consent["consent_id"]] = consent
        if consent["status"] != "active":
            self._notify(consent["consent_id"])

    def _notify(self, consent_id: str) -> None:
        for listener in self._listeners:
            listener(consent_id)
