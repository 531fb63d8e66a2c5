"""The transfer builder: turns pending transfers into archives and snapshots.

It runs beside a :class:`~portability.transfers.state.StateView` and builds only the transfers
of users whose partition that view holds, so every instance builds its own users' archives
from local state. For each transfer it waits until the view has applied the user's partition
up to where it stood when the transfer was taken (so the archive holds every change the
platform had published by then), writes the zip with the current privacy policy, and marks
the transfer ready in the consent store, which in the same transaction writes the app's
``portability.download.ready`` event to the outbox.

A snapshot (an ongoing consent's, see :mod:`portability.transfers.snapshots`) is published
as pages on the notifications topic instead; one that cannot be taken yet (the matcher or
the relay is behind) goes back to pending and is tried again, since the consent's deltas
wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Container
from dataclasses import dataclass

from aiokafka.errors import KafkaError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from portability.broker import BrokerError
from portability.consent.transfer_requests import ArchiveFacts, TransferStore, TransferView
from portability.privacy import current_policy
from portability.runtime import Runtime
from portability.transfers.archive import write_archive
from portability.transfers.errors import TransfersError
from portability.transfers.snapshots import SnapshotPublisher
from portability.transfers.state import StateView

__all__ = ["BuilderStats", "TransferBuilder"]

log = logging.getLogger(__name__)

_WAIT_APPLIED_S = 60.0


@dataclass(slots=True)
class BuilderStats:
    built: int = 0
    failed: int = 0
    cancelled_while_built: int = 0
    snapshots_published: int = 0
    snapshots_retried: int = 0


class _HeldUsers(Container[str]):
    """``user in held``: whether the view holds (and can read) the user's partition now."""

    def __init__(self, view: StateView) -> None:
        self._view = view
        self._held = set(view.held_partitions)

    def __contains__(self, user_id: object) -> bool:
        return isinstance(user_id, str) and self._view.partition_of(user_id) in self._held


class TransferBuilder:
    """Builds archives for the users of one state view; ``run`` until the stop event."""

    def __init__(self, runtime: Runtime, engine: Engine, view: StateView) -> None:
        self._settings = runtime.settings
        self._store = TransferStore(engine, expiry_s=self._settings.transfer_expiry_s)
        self._view = view
        self._snapshots = SnapshotPublisher(runtime, self._store, view)
        self.stats = BuilderStats()

    async def run(self, stop: asyncio.Event, poll_interval_s: float = 0.5) -> None:
        """Take and build pending transfers until ``stop`` is set; a failed round is logged."""
        try:
            while not stop.is_set():
                try:
                    await self.build_pending()
                except SQLAlchemyError as error:
                    log.warning(
                        "transfer builder cannot read the consent store (retried): %s", error
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_interval_s)
        finally:
            await self._snapshots.close()

    async def build_pending(self) -> int:
        """Build what is pending for the users held here; returns how many were taken."""
        if not self._view.ready:
            return 0
        claimed = await asyncio.to_thread(self._store.claim, _HeldUsers(self._view))
        for transfer in claimed:
            await self.build(transfer)
        return len(claimed)

    async def build(self, transfer: TransferView) -> TransferView:
        """Build one claimed transfer; a failure is recorded on the transfer, not raised."""
        if transfer.kind == "snapshot":
            return await self._publish_snapshot(transfer)
        started = asyncio.get_running_loop().time()
        try:
            facts = await self._write(transfer)
        except (TransfersError, TimeoutError, OSError, ValueError) as error:
            self.stats.failed += 1
            log.error(  # noqa: TRY400 - an expected failure: its reason, not a traceback
                "transfer %s for consent %s failed: %s",
                transfer.transfer_id,
                transfer.consent_id,
                error,
                extra={"transfer_id": transfer.transfer_id, "consent_id": transfer.consent_id},
            )
            return await asyncio.to_thread(self._store.fail, transfer.transfer_id, str(error))
        view = await asyncio.to_thread(
            self._store.mark_ready, transfer.transfer_id, facts, self._settings.public_api_url()
        )
        if view.state != "ready":  # cancelled while it was built: the file is not kept
            self.stats.cancelled_while_built += 1
            (self._settings.archive_dir() / facts.archive_file).unlink(missing_ok=True)
            return view
        self.stats.built += 1
        log.info(
            "transfer %s ready: %d records, %d bytes, in %.2f s",
            transfer.transfer_id,
            facts.record_count,
            facts.size_bytes,
            asyncio.get_running_loop().time() - started,
            extra={"transfer_id": transfer.transfer_id, "consent_id": transfer.consent_id},
        )
        return view

    async def _publish_snapshot(self, transfer: TransferView) -> TransferView:
        try:
            facts = await self._snapshots.publish(transfer)
        except (TransfersError, TimeoutError, BrokerError, KafkaError, OSError) as error:
            # Retried even when not ``retriable`` (a state file that cannot be used): the
            # snapshot waits for an operator's fix rather than stopping the whole builder.
            self.stats.snapshots_retried += 1
            log.warning(
                "snapshot %s for consent %s not taken yet (retried): %s",
                transfer.transfer_id,
                transfer.consent_id,
                error,
                extra={"transfer_id": transfer.transfer_id, "consent_id": transfer.consent_id},
            )
            return await asyncio.to_thread(
                self._store.retry_later, transfer.transfer_id, str(error)
            )
        self.stats.snapshots_published += 1
        return await asyncio.to_thread(
            self._store.mark_snapshot_published, transfer.transfer_id, facts
        )

    async def _write(self, transfer: TransferView) -> ArchiveFacts:
        partition = self._view.partition_of(transfer.user_id)
        target = await self._view.source_end(partition)
        # Everything the platform had published when the transfer was taken is in the archive.
        await self._view.wait_applied(partition, target, _WAIT_APPLIED_S)
        policy = current_policy()
        name = f"{transfer.transfer_id}.zip"
        destination = self._settings.archive_dir() / name
        snapshot = self._view.snapshot(transfer.user_id, transfer.categories)
        with snapshot:
            result = await asyncio.to_thread(write_archive, snapshot, destination, policy=policy)
            position = f"{snapshot.position.partition}:{snapshot.position.offset}"
        return ArchiveFacts(
            archive_file=name,
            size_bytes=result.size_bytes,
            sha256=result.sha256,
            record_count=sum(result.record_counts.values()),
            policy_version=policy.version,
            position=position,
        )
