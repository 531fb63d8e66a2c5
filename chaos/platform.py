"""The platform: users changing their accounts, published to ``account.changes`` as the
producer contract says (docs/publishing-account-changes.md), through the project's simulated
platform, and recorded as the platform knows them.

Each change acknowledged by the broker is one line of ``published.jsonl`` in the contract's
JSON form (times as ``...Z`` with milliseconds), with when it was first sent (``sent_at``,
what latency is measured from) and when the broker acknowledged it. A batch the broker
refuses (it is down, or restarting) is sent again whole, in order, until it is acknowledged:
a change may then be on the topic twice, with the same ``change_id``, which the contract
allows (the app receives it once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import datetime
from typing import Any

from aiokafka.errors import KafkaError

from chaos.records import JsonLines, iso_millis
from portability.runtime import Runtime
from portability.simulation import ChangeFactory, PlatformPublisher
from portability.wire.records import AccountChange

__all__ = ["Platform"]

log = logging.getLogger("chaos.platform")

_TICK_S = 0.1
_SEND_TIMEOUT_S = 20.0


def as_json(value: Any) -> Any:
    """The change's values in the contract's JSON form."""
    if isinstance(value, datetime):
        return iso_millis(value)
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json(item) for item in value]
    return value


class Platform:
    """Publishes about ``rate`` changes a second for ``users`` until :meth:`stop`."""

    def __init__(
        self, runtime: Runtime, users: list[str], rate: float, seed: int, out: JsonLines
    ) -> None:
        self._runtime = runtime
        self._users = users
        self._rate = rate
        self._random = random.Random(seed)
        self._factory = ChangeFactory(users, seed=seed)
        self._out = out
        self._stopping = asyncio.Event()
        self.deleted: set[str] = set()  # accounts deleted: they change no more
        self.published = 0
        self.refused_batches = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        publisher = await self._publisher()
        owed = 0.0
        try:
            while not self._stopping.is_set():
                began = time.monotonic()
                owed += self._rate * _TICK_S
                count, owed = int(owed), owed - int(owed)
                live = [user for user in self._users if user not in self.deleted]
                batch = [
                    self._factory.random_change(self._random.choice(live)) for _ in range(count)
                ]
                if batch:
                    publisher = await self._publish(publisher, batch)
                with contextlib.suppress(TimeoutError):
                    wait = max(0.0, _TICK_S - (time.monotonic() - began))
                    await asyncio.wait_for(self._stopping.wait(), wait)
        finally:
            await publisher.stop()

    async def _publisher(self) -> PlatformPublisher:
        publisher = PlatformPublisher(self._runtime)
        await publisher.start()
        return publisher

    async def _publish(
        self, publisher: PlatformPublisher, batch: list[AccountChange]
    ) -> PlatformPublisher:
        """Send the batch until the broker acknowledges all of it; record it."""
        sent_at = time.time()
        while True:
            try:
                await asyncio.wait_for(publisher.publish(batch), _SEND_TIMEOUT_S)
                break
            except (KafkaError, TimeoutError, OSError) as error:
                # The broker is away: a fresh producer once it answers again, same changes.
                self.refused_batches += 1
                log.warning("platform: batch refused (%s); sending it again", error)
                with contextlib.suppress(KafkaError, TimeoutError, OSError):
                    await asyncio.wait_for(publisher.stop(), 5.0)
                await asyncio.sleep(0.5)
                publisher = await self._fresh(publisher)
        acked_at = time.time()
        for change in batch:
            self._out.write(as_json(dict(change)) | {"sent_at": sent_at, "acked_at": acked_at})
        self.published += len(batch)
        return publisher

    async def _fresh(self, old: PlatformPublisher) -> PlatformPublisher:
        for _ in range(600):  # bounded: about 5 min of a broker that does not come back
            try:
                return await asyncio.wait_for(self._publisher(), 10.0)
            except (KafkaError, TimeoutError, OSError):
                await asyncio.sleep(0.5)
        raise RuntimeError("platform: the broker did not come back within 5 min")
