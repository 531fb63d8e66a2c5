"""Each consent's ledger, as the worker sends it, recomputed here from the documented formulas.

The recomputation uses only the standard library and the contract (docs/webhooks.md, "The
ledger"), not the pipeline's code: what an app in any language would do.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from delivery.test_delivery_log import Scripted, scripted
from delivery.test_worker_faults import World, wait_until
from portability.delivery import DeliveryWorker
from portability.runtime import Runtime
from running_roles import running


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def recomputed(consent_id: str, deltas: list[dict[str, Any]]) -> list[str]:
    """The chain values of ``deltas`` (in the order received), as the contract defines them."""
    head = _sha("portability.ledger\n" + consent_id)
    values = []
    for delta in deltas:
        rest = {k: v for k, v in delta.items() if k not in ("id", "sequence", "ledger")}
        digest = _sha(f"{delta['id']}\n{delta['sequence']}\n{_sha(_canonical(rest))}")
        head = _sha(head + digest)
        values.append(head)
    return values


def received_deltas(endpoint: Scripted, consent_id: str) -> list[dict[str, Any]]:
    """Each delta the endpoint got for the consent, first arrivals only, in arrival order."""
    seen: dict[str, dict[str, Any]] = {}
    for _, body in endpoint.seen:
        data = json.loads(body)["data"]
        if data["consent_id"] == consent_id:
            for delta in data["deltas"]:
                seen.setdefault(delta["id"], delta)
    return list(seen.values())


async def test_every_delta_carries_the_chain_value_an_app_recomputes(world: World) -> None:
    async with scripted(Scripted(answers=[503])) as endpoint:
        await world.register("app-chain", endpoint.url, None)
        for consent_id in ("cns_a", "cns_b"):
            await world.produce("app-chain", consent_id, 7)
        async with running(DeliveryWorker(world.runtime)) as worker:
            await wait_until(lambda: worker.stats.deltas_delivered == 14, "14 delivered")

    for consent_id in ("cns_a", "cns_b"):
        deltas = received_deltas(endpoint, consent_id)
        assert [d["sequence"] for d in deltas] == list(range(1, 8))
        assert [d["ledger"] for d in deltas] == recomputed(consent_id, deltas)
    # The failed first request and its retry carried the same values (the same bytes).
    assert endpoint.seen[0] in endpoint.seen[1:]


async def test_a_worker_taking_over_continues_the_chain_and_skips_what_was_delivered(
    world: World,
) -> None:
    async with scripted(Scripted(answers=[])) as endpoint:
        await world.register("app-chain", endpoint.url, None)
        await world.produce("app-chain", "cns_c", 5)
        async with running(DeliveryWorker(world.runtime)) as first:
            await wait_until(lambda: first.stats.deltas_delivered == 5, "5 delivered")
        await world.produce("app-chain", "cns_c", 4)
        # As if the first worker had died before committing anything: a group with no
        # offsets reads every delivery again, and the ledger's heads say what went out.
        settings = world.runtime.settings
        rewound = settings.model_copy(update={"delivery_group": settings.delivery_group + "-2"})
        runtime = await Runtime.open(rewound, world.runtime.kafka.bootstrap)
        try:
            async with running(DeliveryWorker(runtime)) as second:
                await wait_until(lambda: second.stats.deltas_delivered == 4, "4 more delivered")
                assert second.stats.dropped_delivered == 5
        finally:
            await runtime.close()

    deltas = received_deltas(endpoint, "cns_c")
    assert [d["sequence"] for d in deltas] == list(range(1, 10))
    assert [d["ledger"] for d in deltas] == recomputed("cns_c", deltas)
    delivered = [json.loads(body)["data"]["deltas"] for _, body in endpoint.seen]
    assert sum(len(batch) for batch in delivered) == 9  # nothing sent twice


async def test_an_unreadable_ledger_head_is_skipped_and_the_partition_still_loads(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    topic = world.runtime.topics.delivery_ledger
    # Not Avro at all, and a frame naming a schema id no one registered: a stray producer.
    await world.produce_raw("cns_d", [b"not a ledger head", b"\x00\x00\x0f\x42\x40garbage"], topic)
    async with scripted(Scripted(answers=[])) as endpoint:
        await world.register("app-chain", endpoint.url, None)
        await world.produce("app-chain", "cns_d", 3)
        async with running(DeliveryWorker(world.runtime)) as worker:
            await wait_until(lambda: worker.stats.deltas_delivered == 3, "3 delivered")
            assert worker.stats.ledger_heads_unreadable == 2
            assert worker.stats.dropped_delivered == 0

    deltas = received_deltas(endpoint, "cns_d")
    assert [d["ledger"] for d in deltas] == recomputed("cns_d", deltas)  # from the start
    skipped = [
        vars(r) for r in caplog.records if vars(r).get("event") == "delivery.ledger_head_unreadable"
    ]
    assert [(r["partition"], r["offset"]) for r in skipped] == [
        (skipped[0]["partition"], 0),
        (skipped[0]["partition"], 1),
    ]
    assert all(r["topic"] == topic for r in skipped)


async def test_a_loaded_worker_does_not_read_its_own_heads_back(world: World) -> None:
    """Once a partition's ledger is loaded, its heads are the worker's own: the worker pauses
    the ledger partition instead of reading a record per consent per commit round back."""

    async def committed(offset: int) -> bool:
        return await world.committed() >= offset

    async with scripted(Scripted(answers=[])) as endpoint:
        await world.register("app-chain", endpoint.url, None)
        await world.produce("app-chain", "cns_d", 3)
        async with running(DeliveryWorker(world.runtime)) as worker:
            await wait_until(lambda: worker.stats.deltas_delivered == 3, "3 delivered")
            # Committed after the round's heads were on the broker (see Partitions.commit).
            await wait_until(lambda: committed(3), "first commit")
            await world.produce("app-chain", "cns_d", 3)
            await wait_until(lambda: worker.stats.deltas_delivered == 6, "3 more")
            await wait_until(lambda: committed(6), "second commit")

            # The fetch that brought the later deltas would have brought the heads too.
            assert worker.stats.ledger_heads_read == 0
