"""The test event: a signed ``portability.ping`` an app asks for to check its endpoint.

An app calls ``POST /v1/apps/{app_id}/test-event`` before consents flow; the API posts this
event to the app's webhook, signed like every other, and answers with the attempt's outcome.
It carries no user's data, and its id is new each time (a ping is never a redelivery)::

    {"type": "portability.ping", "timestamp": "2026-12-06T12:00:00.000Z",
     "data": {"app_id": "...", "ping_id": "..."}}
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Final

import orjson

from portability.wire.records import format_timestamp

__all__ = ["PING_EVENT_TYPE", "ping_event"]

PING_EVENT_TYPE: Final = "portability.ping"


def ping_event(app_id: str, now: datetime) -> tuple[str, bytes]:
    """A new test event for ``app_id``: its webhook message id and its JSON body."""
    ping_id = "ping_" + secrets.token_hex(16)
    body = orjson.dumps(
        {
            "type": PING_EVENT_TYPE,
            "timestamp": format_timestamp(now),
            "data": {"app_id": app_id, "ping_id": ping_id},
        }
    )
    return "msg_" + ping_id, body
