"""Errors of the broker package, and the one way to bound a call to the broker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from aiokafka.errors import KafkaError

from portability.errors import PortabilityError

__all__ = ["BrokerError", "bounded"]

_T = TypeVar("_T")


class BrokerError(PortabilityError):
    """The broker could not be started, reached, or set up."""

    retriable = True


async def bounded(call: Awaitable[_T], bootstrap: str, timeout_s: float, what: str) -> _T:
    """Await ``call`` for at most ``timeout_s``; a timeout or a Kafka error becomes a
    :class:`BrokerError` naming the broker and ``what`` was being done."""
    try:
        return await asyncio.wait_for(call, timeout_s)
    except TimeoutError as error:
        raise BrokerError(
            f"Kafka at {bootstrap} did not answer within {timeout_s:g} s ({what})"
        ) from error
    except KafkaError as error:
        raise BrokerError(f"cannot reach Kafka at {bootstrap} ({what}): {error}") from error
