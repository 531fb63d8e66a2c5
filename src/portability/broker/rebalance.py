"""One rebalance listener for every consumer group: two typed callbacks, nothing else.

aiokafka calls a group consumer's listener before the group takes partitions away and after
it gives some; ``subscribe`` accepts only an instance of its ``ConsumerRebalanceListener``.
Each stage that consumes in a group (the matcher, the delivery worker, the state view) has
the two coroutines already, so this adapter is all that subclasses aiokafka's class.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

__all__ = ["PartitionsChanged", "RebalanceListener"]

PartitionsChanged = Callable[[set[TopicPartition]], Awaitable[None]]

if TYPE_CHECKING:
    # aiokafka ships no type information, so its class is ``Any`` to mypy, and strict mypy
    # refuses to subclass ``Any``. The type checker sees a plain object (the methods below
    # are the whole interface); at run time the base is aiokafka's class, which
    # ``subscribe`` checks with isinstance.
    _ListenerBase = object
else:
    _ListenerBase = ConsumerRebalanceListener


class RebalanceListener(_ListenerBase):
    """Calls ``on_revoked`` before the group takes partitions away, ``on_assigned`` after
    it gives some (each with the set of partitions concerned)."""

    def __init__(self, *, on_revoked: PartitionsChanged, on_assigned: PartitionsChanged) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._on_assigned(assigned)
