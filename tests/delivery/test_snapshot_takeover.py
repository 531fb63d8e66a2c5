"""A worker taking over a consent whose resync is published goes on from the last owner's
ledger head: the deltas of the snapshot delivered before, then the new snapshot, then after."""

from __future__ import annotations

import json

from delivery.test_delivery_log import Scripted, scripted
from delivery.test_worker_faults import World, wait_until
from portability.delivery import DeliveryWorker
from portability.wire import SchemaName
from portability.wire.notifications import SnapshotPage
from running_roles import running
from wire.samples import consent

_APP, _CONSENT = "app-t", "cns_t"
_RESYNC_POSITION = 1_005  # the deltas' source offsets are 1,000 + sequence - 1


async def _publish_resync(world: World) -> None:
    """What a resync leaves for the worker: the consent at epoch 2, its snapshot published
    (its last page's offset on the consent, as the builder records it), and the page."""
    record = consent(
        consent_id=_CONSENT,
        app_id=_APP,
        user_id=f"user-{_CONSENT}",
        categories=["post"],
        expires_at=None,
        snapshot_epoch=2,
        snapshot_position=_RESYNC_POSITION,
        snapshot_last_page_offset=10**9,  # past anything committed: not delivered yet
    )
    topics = world.runtime.topics
    await world.produce_raw(
        _CONSENT, [world.runtime.codec.encode(SchemaName.CONSENT, dict(record))], topics.consents
    )
    await world.produce_last_snapshot_page(
        _APP, _CONSENT, SnapshotPage("trf_resync", 2, 1, True, 0, _RESYNC_POSITION)
    )


def _events(endpoint: Scripted) -> list[str]:
    """What the app got, in order: ``snapshot N`` or the delta's sequence."""
    events = []
    for _, body in endpoint.seen:
        event = json.loads(body)
        if event["type"] == "portability.snapshot":
            events.append(f"snapshot {event['data']['epoch']}")
        else:
            events += [str(delta["sequence"]) for delta in event["data"]["deltas"]]
    return events


async def test_a_new_owner_delivers_the_old_epoch_then_the_resync_snapshot(world: World) -> None:
    async with scripted(Scripted(answers=[])) as endpoint:
        await world.register(_APP, endpoint.url, None)
        await world.produce_last_snapshot_page(_APP, _CONSENT)
        await world.produce(_APP, _CONSENT, 3, snapshot_epoch=1)
        async with running(DeliveryWorker(world.runtime)) as first:
            await wait_until(lambda: first.stats.deltas_delivered == 3, "3 delivered")

        # The first worker is gone (its ledger head recorded by its stop); the consent is
        # resynced while two deltas of its first epoch are still to go.
        await _publish_resync(world)
        await world.produce(_APP, _CONSENT, 2, snapshot_epoch=1)
        await world.produce(_APP, _CONSENT, 1, snapshot_epoch=2)
        async with running(DeliveryWorker(world.runtime)) as second:
            await wait_until(lambda: second.stats.deltas_delivered == 3, "4, 5 and 6 delivered")
            assert second.stats.snapshots_delivered == 1

    assert _events(endpoint) == ["snapshot 1", "1", "2", "3", "4", "5", "snapshot 2", "6"]
