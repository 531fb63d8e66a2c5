"""What the transfers tests share: the platform's expected state, running views, waiting."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from portability.demo.copies import as_delivered
from portability.runtime import Runtime
from portability.simulation import PlatformPublisher
from portability.transfers import Snapshot, StateView
from portability.wire.records import AccountChange
from portability.wire.topics import partition_for_user

Key = tuple[str, str, str]
# What a record's current state is, as the webhook contract renders it.
Expected = dict[Key, dict[str, Any]]


def expected_state(changes: Iterable[AccountChange]) -> Expected:
    """The platform's state after ``changes`` in order: upserts replace, deletes remove."""
    state: Expected = {}
    for change in changes:
        key = (change["user_id"], change["category"], change["record_id"])
        if change["operation"] == "delete":
            state.pop(key, None)
        else:
            state[key] = as_delivered(change)
    return state


def of_user(state: Expected, user_id: str, categories: Sequence[str] | None = None) -> Expected:
    return {
        key: value
        for key, value in state.items()
        if key[0] == user_id and (categories is None or key[1] in categories)
    }


def snapshot_state(snapshot: Snapshot) -> Expected:
    """What a snapshot holds, in the same shape as :func:`expected_state`."""
    return {
        (r.user_id, r.category, r.record_id): {
            "record": r.record(),
            "occurred_at": r.occurred_at,
            "change_id": r.change_id,
        }
        for r in snapshot
    }


def ends_per_partition(changes: Iterable[AccountChange], partitions: int) -> dict[int, int]:
    """The end offset of each partition of a fresh topic after publishing ``changes``."""
    ends = dict.fromkeys(range(partitions), 0)
    for change in changes:
        ends[partition_for_user(change["user_id"], partitions)] += 1
    return ends


async def publish(runtime: Runtime, changes: Sequence[AccountChange]) -> None:
    publisher = PlatformPublisher(runtime)
    await publisher.start()
    try:
        await publisher.publish(changes)
    finally:
        await publisher.stop()


@contextlib.asynccontextmanager
async def running_view(
    runtime: Runtime,
    partitions: Sequence[int] | None = None,
    data_dir: Path | None = None,
    client_id: str = "test-state",
) -> AsyncIterator[StateView]:
    """A started view with its loop running; ``run`` failing fails the test at exit."""
    view = StateView(runtime, client_id, partitions=partitions, data_dir=data_dir)
    await view.start()
    task = asyncio.create_task(view.run(), name="state-view")
    try:
        yield view
    finally:
        await view.stop()
        await asyncio.wait_for(task, 10)


async def wait_applied(view: StateView, ends: dict[int, int], timeout_s: float = 30.0) -> None:
    for partition, end in ends.items():
        await view.wait_applied(partition, end, timeout_s)
