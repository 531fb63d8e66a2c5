"""The disclosure report against what a receiving app really got, record id by record id.

A real worker delivers to a real receiver (one app failing its first request, so the log holds
a failed attempt too), the message log's writer stores what the worker logged, and each
user's report names exactly the records their app received: no more (not the failed attempt
counted twice), no fewer.
"""

from __future__ import annotations

import sqlalchemy as sa

from delivery.test_worker_faults import Endpoint, World, serving, wait_until
from messages.writer_helpers import running_writer
from portability.delivery import DeliveryWorker
from portability.messages.disclosures import disclosure_report
from portability.messages.models import DisclosedRecordRow
from running_roles import running


def _disclosed(world: World) -> int:
    with world.engine.connect() as connection:
        count = connection.execute(
            sa.select(sa.func.count()).select_from(DisclosedRecordRow)
        ).scalar_one()
    return int(count)


async def test_each_users_report_lists_exactly_the_records_their_app_received(
    world: World,
) -> None:
    async with serving(Endpoint()) as first, serving(Endpoint(answer=503)) as second:
        await world.register("app-x", first.url, first.receiver)
        await world.register("app-y", second.url, second.receiver)
        await world.produce("app-x", "cx", 6)
        await world.produce("app-y", "cy", 4)
        async with (
            running_writer(world.runtime, world.engine),
            running(DeliveryWorker(world.runtime)) as worker,
        ):
            await wait_until(lambda: worker.stats.failures > 0, "app-y refused once")
            second.answer = None  # app-y takes the retry
            await wait_until(lambda: worker.stats.deltas_delivered == 10, "10 delivered")
            await wait_until(lambda: _disclosed(world) == 10, "10 records disclosed")

    for user, app, consent, receiver in (
        ("user-cx", "app-x", "cx", first.receiver),
        ("user-cy", "app-y", "cy", second.receiver),
    ):
        report = disclosure_report(world.engine, world.service, user, records=True, limit=100)
        assert [disclosure.app_id for disclosure in report.apps] == [app]
        (summary,) = report.apps
        got = receiver.deltas(consent)
        assert summary.record_count == len({delta.record_id for delta in got})
        assert summary.delivery_count == len(got)
        assert report.records is not None
        assert sorted(
            (item.app_id, item.consent_id, item.delta_id, item.record_id, item.sequence)
            for item in report.records.items
        ) == sorted((app, consent, delta.id, delta.record_id, delta.sequence) for delta in got)
