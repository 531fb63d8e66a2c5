"""The last hop of a poll-mode app: its events appended to the pull feed, not POSTed.

Everything before this hop is the same as for a webhook app (matcher, lanes, order per
consent, snapshot hand-over, revocation): the worker builds the same body with the same
``webhook-id`` and, for an app whose record says ``delivery_mode: "poll"``, appends it to the
``feed`` topic instead of posting it. The app reads it with ``GET /v1/apps/{app_id}/feed``
(:mod:`portability.messages.feed_reader`).

A record of the feed: key the app id, placed in the app's partition
(:func:`~portability.wire.topics.partition_for_app`), so one app's events keep the order they
were appended in, and a consent's lane appends one message at a time, in sequence; value the
webhook body, byte for byte; headers ``webhook-id``, ``consent-id`` and ``event-type``
(:mod:`portability.wire.headers`), so that the reader answers without parsing bodies.

The answer is an :class:`~portability.delivery.sender.Outcome` as a POST's would be: ok once
the broker acknowledged the record (``acks=all``: durable), retriable when it did not, so the
worker's retry schedule, parking and dead letters apply unchanged. A body too large for the
broker can never be appended: not retriable, so it is dead-lettered with the reason, not
retried forever. A worker that dies after the append and before committing appends it again
on restart: the feed, like webhooks, is at least once (apps deduplicate on ``webhook-id``).
"""

from __future__ import annotations

import logging

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from portability.delivery.sender import Outcome
from portability.wire.headers import (
    FEED_CONSENT_ID_HEADER,
    FEED_EVENT_TYPE_HEADER,
    FEED_WEBHOOK_ID_HEADER,
)
from portability.wire.records import AppRecord
from portability.wire.topics import partition_for_app

__all__ = ["FeedWriter"]

# The role's logger, whichever part of the worker writes: operators filter its lines by one name.
log = logging.getLogger("portability.delivery.worker")

_APPENDED = Outcome(True, None, "", retriable=False)


class FeedWriter:
    """Appends poll-mode apps' events to the feed topic.

    Args:
        producer: A started producer (``acks=all``, as ``KafkaClients.producer`` makes); the
            caller starts and stops it.
        topic: The feed topic (``TopicNames.feed``).
        partitions: The feed topic's partition count (``settings.partitions``, as
            ``pipeline_topics`` creates it).
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, partitions: int) -> None:
        self._producer = producer
        self._topic = topic
        self._partitions = partitions

    async def append(
        self,
        app: AppRecord,
        message_id: str,
        body: bytes,
        *,
        consent_id: str | None = None,
        event_type: str | None = None,
    ) -> Outcome:
        """Append one event (its ``webhook-id`` and body) to the app's feed.

        Args:
            app: The app (its id is the record's key).
            message_id: The ``webhook-id`` a POST would carry.
            body: The webhook body, exactly.
            consent_id: The event's consent (``""`` for none); default read from the body.
            event_type: The event's ``type``; default read from the body.

        Returns:
            ok once the broker acknowledged the record; otherwise why, retriable unless the
            body can never fit.
        """
        if consent_id is None or event_type is None:
            consent_id, event_type = _described(body, consent_id, event_type)
        app_id = app["app_id"]
        headers = [
            (FEED_WEBHOOK_ID_HEADER, message_id.encode()),
            (FEED_CONSENT_ID_HEADER, consent_id.encode()),
            (FEED_EVENT_TYPE_HEADER, event_type.encode()),
        ]
        try:
            await self._producer.send_and_wait(
                self._topic,
                body,
                key=app_id.encode(),
                partition=partition_for_app(app_id, self._partitions),
                headers=headers,
            )
        except MessageSizeTooLargeError as error:
            return Outcome(
                False,
                None,
                f"the event ({len(body)} bytes) is too large for the feed topic ({error}): "
                "raise the broker's and producer's message size limits",
                retriable=False,
            )
        except KafkaError as error:
            log.warning(
                "appending message %s to app %s's feed failed: %r",
                message_id,
                app_id,
                error,
                extra={"app_id": app_id, "message_id": message_id},
            )
            return Outcome(False, None, f"appending to the feed failed: {error!r}", retriable=True)
        return _APPENDED


def _described(body: bytes, consent_id: str | None, event_type: str | None) -> tuple[str, str]:
    """The consent id and event type the body states, where the caller gave none."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        document = {}
    data = document.get("data")
    stated = data.get("consent_id") if isinstance(data, dict) else None
    if consent_id is None:
        consent_id = stated if isinstance(stated, str) else ""
    if event_type is None:
        kind = document.get("type")
        event_type = kind if isinstance(kind, str) else ""
    return consent_id, event_type
