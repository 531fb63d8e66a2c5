"""The demo end to end, small: it must report every expected delta and nothing else."""

from __future__ import annotations

from portability.broker import EmbeddedBroker
from portability.demo import DemoOptions, Progress, run_demo
from portability.settings import Settings


async def test_small_demo_delivers_everything_it_should(
    broker: EmbeddedBroker, settings: Settings
) -> None:
    seen: list[str] = []

    def on_progress(progress: Progress) -> None:
        if not seen or seen[-1] != progress.phase:
            seen.append(progress.phase)

    options = DemoOptions(users=300, events=1_500, rate=3_000, revoke_fraction=0.1, bad_records=2)
    report = await run_demo(
        options, settings.model_copy(update={"kafka_bootstrap": broker.bootstrap}), on_progress
    )

    assert report.failures == []
    assert report.progress.produced == 1_500
    assert report.expected > 0
    assert report.missing == 0
    assert report.leaks == 0
    assert report.unexpected == 0
    assert report.verification_failures == 0
    assert report.gaps == 0
    assert report.progress.verified == report.expected + report.revoked_in_flight
    assert report.progress.dead_lettered == report.progress.bad_records_sent == 2
    assert report.progress.revoked > 0
    # Every revoked consent's app was told, and no delta of it came after the event.
    assert report.removals_missing == 0
    assert report.deltas_after_removal == 0
    assert report.latency_p99_ms is not None
    assert seen[0] == "granting consents"
    assert "streaming changes" in seen
    assert seen[-1] == "done"
