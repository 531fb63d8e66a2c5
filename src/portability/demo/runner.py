"""``portability demo``: the whole pipeline on one machine, with a check of every delivery.

It starts (or uses) a broker, a consent store in a temporary folder, the outbox relay, the
matcher, the delivery worker, a receiving app that verifies every signature, and a simulated
platform; grants consents, streams changes, grants a few more mid-stream with a snapshot,
revokes some consents mid-stream, injects a few undecodable records, then reports what arrived
against what had to, whether each late consent's copy (snapshot, then deltas) equals the
platform's state, and whether each consent's ledger head at the app equals the platform's.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from portability.demo.copies import Copy, CopyCheck, check_copy
from portability.demo.errors import DemoError
from portability.demo.ledgers import LedgerCheck, check_ledger_heads
from portability.demo.local import LocalPipeline, local_pipeline
from portability.demo.report import DemoReport, Progress
from portability.demo.scenario import Oracle, choose_grants
from portability.privacy import current_policy, is_audience_record_id
from portability.settings import Settings
from portability.simulation import ChangeFactory, user_ids
from portability.wire.records import CATEGORIES, Category

__all__ = ["DemoOptions", "run_demo"]

_TICK_S = 0.25
# The simulated platform publishes this much time's worth of changes at once. It shares the
# event loop with the pipeline: a burst of 0.25 s (1,000 changes at the default rate) held the
# loop for ~150 ms while it encoded, and every change in it waited for the whole burst.
_CHUNK_S = 0.05
# A Confluent frame naming schema id 99, which no registry knows.
_UNDECODABLE = b"\x00\x00\x00\x00\x63not avro"
# How long the report waits for the message log's writer to store the last deliveries' heads.
_LEDGER_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """The scenario's size; the defaults finish in well under a minute."""

    users: int = 2_000
    events: int = 20_000
    rate: float = 4_000.0
    apps: int = 3
    consent_fraction: float = 0.1
    revoke_fraction: float = 0.05
    late_grants: int = 5  # consents granted mid-stream with a snapshot, to users with history
    bad_records: int = 3
    drain_timeout_s: float = 30.0
    seed: int = 7


ProgressCallback = Callable[[Progress], None]


async def run_demo(
    options: DemoOptions, settings: Settings, on_progress: ProgressCallback
) -> DemoReport:
    """Run the scenario and return its report; ``on_progress`` is called a few times a second."""
    with tempfile.TemporaryDirectory(prefix="portability-demo-") as folder:
        settings = settings.model_copy(update={"data_dir": Path(folder)})
        async with local_pipeline(settings, transfers=options.late_grants > 0) as pipeline:
            return await _Scenario(pipeline, options, on_progress).run()


class _Scenario:
    def __init__(
        self, pipeline: LocalPipeline, options: DemoOptions, on_progress: ProgressCallback
    ):
        self.p = pipeline
        self.options = options
        self.on_progress = on_progress
        self.rnd = random.Random(options.seed)
        self.oracle = Oracle()
        self.users = user_ids(options.users)
        self.app_ids = [f"demo-app-{i}" for i in range(1, options.apps + 1)]
        self.progress = Progress(phase="starting")
        self.started = time.monotonic()
        # The platform's state for each late consent, once the stream has ended.
        self.platform_copies: dict[str, Copy] = {}

    async def run(self) -> DemoReport:
        await self._grant()
        await self._wait_ready()
        await self._stream()
        await self._drain()
        consent_ids = {*self.oracle.consents, *self.oracle.late}
        self._tick("comparing ledger heads")
        ledgers = await check_ledger_heads(
            self.p.engine, self.p.receiver, consent_ids, _LEDGER_WAIT_S
        )
        return self._report(ledgers)

    async def _grant(self) -> None:
        self._tick("granting consents")
        for app_id in self.app_ids:
            app = await asyncio.to_thread(
                self.p.service.register_app,
                f"Demo app {app_id[-1]}",
                f"{self.p.receiver_url}/webhooks/{app_id}",
                app_id,
            )
            self.p.receiver.add_app(app_id, app.signing_secret)
        grants = choose_grants(self.users, self.app_ids, self.options.consent_fraction, self.rnd)
        for user, app_id, categories in grants:
            view = await asyncio.to_thread(self.p.service.grant, user, app_id, categories)
            self.oracle.add_consent(view)

    async def _wait_ready(self, timeout_s: float = 60.0) -> None:
        self._tick("waiting for the matcher and worker to join")
        want = len(self.oracle.consents)
        deadline = time.monotonic() + timeout_s
        while not (self.p.matcher.ready and self.p.matcher.consents_held >= want):
            if time.monotonic() > deadline:
                raise DemoError(
                    f"matcher not ready after {timeout_s}s "
                    f"({self.p.matcher.consents_held}/{want} consents loaded)"
                )
            await asyncio.sleep(0.05)
            self._tick("waiting for the matcher and worker to join")

    async def _stream(self) -> None:
        options = self.options
        factory = ChangeFactory(self.users, seed=options.seed)
        chunk = max(1, int(options.rate * _CHUNK_S))
        revoke_at = options.events // 2
        late_at = options.events // 2
        bad_at = {
            int(options.events * (i + 1) / (options.bad_records + 1))
            for i in range(options.bad_records)
        }
        sent = 0
        begun = time.monotonic()
        while sent < options.events:
            size = min(chunk, options.events - sent)
            changes = [factory.random_change() for _ in range(size)]
            self.oracle.record(changes)
            await self.p.publisher.publish(changes)
            for marker in sorted(m for m in bad_at if sent <= m < sent + size):
                user = self.rnd.choice(self._consenting_users())
                await self.p.publisher.publish_raw(user, _UNDECODABLE)
                self.progress.bad_records_sent += 1
                bad_at.discard(marker)
            if sent < late_at <= sent + size:
                await self._grant_late()
            if sent < revoke_at <= sent + size:
                await self._revoke_some()
            sent += size
            self.progress.produced = sent
            self._tick("streaming changes")
            # Pace to the requested rate without drifting.
            await asyncio.sleep(max(0.0, begun + sent / options.rate - time.monotonic()))

    async def _grant_late(self) -> None:
        """Grant consents with a snapshot to users who have history but no consent yet.

        Each covers at least one category the user already has changes in, so that most
        snapshots hold records; changes keep flowing while the snapshots are taken.
        """
        consenting = {c.user_id for c in self.oracle.consents.values()}
        history = self.oracle.changed_categories()
        candidates = sorted(user for user in history if user not in consenting)
        count = min(self.options.late_grants, len(candidates))
        for user in self.rnd.sample(candidates, count):
            had = sorted(history[user])
            categories: set[Category] = {self.rnd.choice(had)}
            categories.update(self.rnd.sample(list(CATEGORIES), self.rnd.randint(0, 2)))
            view = await asyncio.to_thread(
                self.p.service.grant,
                user,
                self.rnd.choice(self.app_ids),
                sorted(categories),
                initial_snapshot=True,
            )
            self.oracle.add_late_consent(view)
            self.progress.late_grants += 1

    def _consenting_users(self) -> list[str]:
        """Users with a consent still active: only their records are decoded (and checked)."""
        revoked = self.oracle.revoked_at
        return sorted(
            {c.user_id for c in self.oracle.consents.values() if c.consent_id not in revoked}
        )

    async def _revoke_some(self) -> None:
        # Only initial consents: the late ones are checked by their copy, kept active.
        consents = sorted(self.oracle.consents)
        count = int(len(consents) * self.options.revoke_fraction)
        for consent_id in self.rnd.sample(consents, count):
            await asyncio.to_thread(self.p.service.revoke, consent_id)
            self.progress.revoked += 1
            # Acknowledged = published and seen by the pipeline's last gate (the worker); from
            # then on nothing that occurs may reach the app.
            await self._until(partial(self.p.worker.directory.is_stopped, consent_id), 10.0)
            self.oracle.revoked(consent_id, datetime.now(UTC))

    async def _drain(self) -> None:
        self._tick("draining")
        # Nothing changes on the platform any more: its state is known once and for all.
        policy = current_policy(self.p.runtime.settings)
        self.platform_copies = {c: self.oracle.platform_copy(c, policy) for c in self.oracle.late}
        deadline = time.monotonic() + self.options.drain_timeout_s
        while time.monotonic() < deadline:
            comparison = self.oracle.compare(self._received())
            if (
                comparison.missing == 0
                and self._removals_missing() == 0
                and self.p.worker.pending == 0
                and all(check.equal for check in self._copy_checks().values())
            ):
                return
            await asyncio.sleep(_TICK_S)
            self._tick("draining")

    async def _until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise DemoError("the pipeline did not acknowledge a revocation in time")
            await asyncio.sleep(0.01)

    def _removals_missing(self) -> int:
        """Revoked consents whose app has not yet received ``authorization.removed``."""
        return sum(1 for c in self.oracle.revoked_at if self.p.receiver.removal(c) is None)

    def _received(self) -> dict[str, str]:
        """Each delta id the app accepted, with its consent (but the late consents': their
        copies are checked instead, see :meth:`_copy_checks`).

        A post's audience figures are the pipeline's own aggregate, not a platform change the
        oracle knows: they are checked by the privacy tests, not here.
        """
        receiver = self.p.receiver
        return {
            d.id: c
            for c in receiver.consent_ids()
            if c not in self.oracle.late
            for d in receiver.deltas(c)
            if not is_audience_record_id(d.record_id)
        }

    def _copy_checks(self) -> dict[str, CopyCheck]:
        """Each late consent's snapshot and copy against the platform's state (from the
        drain on, when that state is known)."""
        return {
            consent_id: check_copy(self.p.receiver, consent_id, self.platform_copies[consent_id])
            for consent_id in self.oracle.late
        }

    def _tick(self, phase: str) -> None:
        self.p.check_alive()
        stats = self.p.receiver.stats()
        self.progress.phase = phase
        self.progress.elapsed_s = time.monotonic() - self.started
        self.progress.matched = self.p.matcher.stats.changes_matched
        self.progress.deltas_emitted = self.p.matcher.stats.deltas_emitted
        self.progress.delivered = self.p.worker.stats.deltas_delivered
        self.progress.verified = stats.deltas_received
        self.progress.duplicates = stats.duplicates
        view = self.p.state_view
        self.progress.dead_lettered = (
            self.p.matcher.stats.dead_lettered
            + self.p.worker.stats.dead_lettered
            + (0 if view is None else view.intake.stats.dead_lettered)
        )
        self.progress.snapshots_completed = sum(
            1
            for consent_id in self.oracle.late
            if (snapshot := self.p.receiver.snapshot(consent_id)) is not None and snapshot.complete
        )
        self.on_progress(self.progress)

    def _report(self, ledgers: LedgerCheck) -> DemoReport:
        self._tick("done")
        stats = self.p.receiver.stats()
        comparison = self.oracle.compare(self._received())
        checks = list(self._copy_checks().values())
        return DemoReport(
            progress=self.progress,
            consents=len(self.oracle.consents),
            users=self.options.users,
            apps=self.options.apps,
            expected=comparison.expected,
            missing=comparison.missing,
            unexpected=comparison.unexpected,
            leaks=comparison.leaks,
            revoked_in_flight=comparison.revoked_allowed,
            removals_missing=self._removals_missing(),
            deltas_after_removal=stats.deltas_after_removal,
            verification_failures=stats.verification_failures,
            gaps=stats.missing_sequences,
            snapshot_records=sum(c.records for c in checks if c.complete),
            copies_equal=sum(1 for c in checks if c.equal),
            snapshot_doubled=sum(c.doubled for c in checks),
            late_deltas=sum(c.deltas for c in checks),
            retries=self.p.worker.stats.retries,
            latency_p50_ms=stats.latency_p50_ms,
            latency_p95_ms=stats.latency_p95_ms,
            latency_p99_ms=stats.latency_p99_ms,
            ledger_consents=ledgers.consents,
            ledgers_equal=ledgers.equal,
            ledger_events=ledgers.events,
            ledger_mismatches=stats.ledger_mismatches,
        )
