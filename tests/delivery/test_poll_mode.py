"""A poll-mode app gets, on its feed, exactly the events a webhook app would be POSTed.

Same matcher records, same lanes and order, same bodies and webhook-ids, the same ledger
values; only the last hop differs. Across a worker restart nothing is missing, nothing is
appended twice, and the chain goes on.
"""

from __future__ import annotations

import asyncio
import json

from delivery.test_ledger_chain import recomputed
from delivery.test_worker_faults import World, wait_until
from portability.delivery import DeliveryWorker
from portability.messages.feed_reader import FeedEvent, FeedReader
from portability.webhooks.payload import delivery_head, head_delta_event
from running_roles import running


async def register_poll_app(world: World, app_id: str) -> None:
    from portability.consent import OutboxRelay

    await asyncio.to_thread(world.service.register_app, app_id, "", app_id, delivery_mode="poll")
    async with OutboxRelay(world.engine, world.runtime) as relay:
        await relay.publish_pending()


async def read_feed(reader: FeedReader, app_id: str, deltas: int) -> list[FeedEvent]:
    """The app's events, read page by page until they carry ``deltas`` deltas (bounded)."""
    events: list[FeedEvent] = []
    iterator: str | None = None
    for _ in range(20):  # bounded: each read long-polls at most a second
        page = await reader.read(app_id, iterator, wait_s=1.0)
        events += page.events
        iterator = page.iterator
        if sum(len(json.loads(event.body)["data"]["deltas"]) for event in events) >= deltas:
            break
    return events


async def test_a_poll_app_reads_what_a_webhook_would_carry_across_a_restart(
    world: World,
) -> None:
    await register_poll_app(world, "app-poll")
    produced = {consent: await world.produce("app-poll", consent, 4) for consent in ("c1", "c2")}
    async with running(DeliveryWorker(world.runtime)) as first:
        await wait_until(lambda: first.stats.deltas_delivered == 8, "8 appended")
    for consent in ("c1", "c2"):
        produced[consent] += await world.produce("app-poll", consent, 3)
    async with running(DeliveryWorker(world.runtime)) as second:
        await wait_until(lambda: second.stats.deltas_delivered == 6, "6 more appended")

    reader = FeedReader(world.runtime)
    try:
        events = await read_feed(reader, "app-poll", 14)
    finally:
        await reader.stop()

    for consent in ("c1", "c2"):
        mine = [event for event in events if event.consent_id == consent]
        deltas = [d for event in mine for d in json.loads(event.body)["data"]["deltas"]]
        # Every delta once, in sequence, with the ids the matcher gave them.
        assert [d["sequence"] for d in deltas] == list(range(1, 8))
        assert [d["id"] for d in deltas] == [r["delta_id"] for r in produced[consent]]
        assert [d["ledger"] for d in deltas] == recomputed(consent, deltas)
        # Each event's id and bytes are those a webhook would have carried for its deltas.
        for event in mine:
            ids = [d["id"] for d in json.loads(event.body)["data"]["deltas"]]
            records = [r for r in produced[consent] if r["delta_id"] in ids]
            heads = [delivery_head(r) for r in records]
            values = [d["ledger"] for d in deltas if d["id"] in ids]
            assert (event.webhook_id, event.body) == head_delta_event(heads, values)
            assert event.event_type == "portability.delta"
