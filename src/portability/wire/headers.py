"""Every Kafka header name the pipeline writes or reads, defined here once.

Headers are part of the wire like topics and schemas: a writer and its reader sit in
different packages (often different processes), so a name spelled twice is a name that can
drift. Every module that writes or reads a header imports its name from here.

==========================  =================================  ============================
header                      written by                         read by
==========================  =================================  ============================
``dlq.<field>`` (every      ``wire.dead_letters.DeadLetter``:  ``ops.dead_letters`` (list,
:class:`LetterField`)       each stage that dead-letters       show, redeliver, counts)
``dlq.marker``,             ``ops.dead_letters``, on the       ``ops.dead_letters`` (a
``dlq.replayed_to.*``       marker after a redelivery          letter's history), counts
``dlq.replayed_from``,      ``ops.dead_letters``, on each      the delivery worker, which
``dlq.replayed_at``         redelivered record                 forwards ``replayed_from``
                                                               onto a parked copy or letter
``retry.kind``,             ``delivery.parking``               the delivery worker (retry
``retry.failures``,         (``ParkingTicket``), on a copy     intake), ``ops.lag_parked``
``retry.not_before``,       parked in ``deliveries.retry``
``retry.history``
``portability.audience``    platform producers                 the matcher
                            (``privacy.audience``), the        (``privacy.audience``)
                            matcher on an audience update
``source.offset``           ``transfers.changelog``, on each   ``transfers.changelog``, on
                            change of the state changelog      restore
``webhook-id``,             ``delivery.feed`` (``FeedWriter``) ``messages.feed_reader``
``consent-id``,             on each event of the pull feed     (the feed route's events)
``event-type``
==========================  =================================  ============================
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "AUDIENCE_HEADER",
    "DEAD_LETTER_HEADER_PREFIX",
    "FEED_CONSENT_ID_HEADER",
    "FEED_EVENT_TYPE_HEADER",
    "FEED_WEBHOOK_ID_HEADER",
    "MARKED_AT_HEADER",
    "MARKER_HEADER",
    "REDELIVERY_MARKER",
    "REPLAYED_AT_HEADER",
    "REPLAYED_FROM_HEADER",
    "REPLAYED_TO_OFFSET_HEADER",
    "REPLAYED_TO_PARTITION_HEADER",
    "REPLAYED_TO_TOPIC_HEADER",
    "RETRY_FAILURES_HEADER",
    "RETRY_HEADER_PREFIX",
    "RETRY_HISTORY_HEADER",
    "RETRY_KIND_HEADER",
    "RETRY_NOT_BEFORE_HEADER",
    "SOURCE_OFFSET_HEADER",
    "LetterField",
]

DEAD_LETTER_HEADER_PREFIX: Final = "dlq."


class LetterField(enum.StrEnum):
    """A dead letter's fields: each is written as the header ``dlq.<field>``.

    ``DeadLetter.parse_headers`` reads them back without the prefix, so readers look a
    field up by its member (a ``StrEnum`` member is its string: it hashes and compares as
    one), and writers name the whole header with :attr:`header`.
    """

    # Every letter has these (DeadLetter.headers).
    SOURCE_TOPIC = "source.topic"
    SOURCE_PARTITION = "source.partition"
    SOURCE_OFFSET = "source.offset"
    REASON = "reason"
    STAGE = "stage"
    AT = "at"
    # Some stages add these (a DeadLetter's extra).
    FAULT = "fault"
    ATTEMPTS = "attempts"
    HISTORY = "history"  # JSON list of {at, status, reason}
    CONSENT_ID = "consent_id"
    APP_ID = "app_id"
    STORED_AT = "stored_at"  # where the delivery worker held it: topic[partition]@offset
    # On a redelivered record, and forwarded onto a letter born of it. The wire names say
    # "replayed" (what the command was once called): they stay, for letters already written.
    REPLAYED_FROM = "replayed_from"
    REPLAYED_AT = "replayed_at"
    # On a redelivery marker.
    MARKER = "marker"

    @property
    def header(self) -> str:
        """The whole header name, ``dlq.<field>``."""
        return DEAD_LETTER_HEADER_PREFIX + self.value


MARKER_HEADER: Final = LetterField.MARKER.header
REDELIVERY_MARKER: Final = "replay"  # the value of MARKER_HEADER on a redelivery marker
MARKED_AT_HEADER: Final = LetterField.AT.header  # on a marker: when the redelivery was marked
REPLAYED_FROM_HEADER: Final = LetterField.REPLAYED_FROM.header
REPLAYED_AT_HEADER: Final = LetterField.REPLAYED_AT.header
# Where a redelivery went, on its marker.
REPLAYED_TO_TOPIC_HEADER: Final = f"{DEAD_LETTER_HEADER_PREFIX}replayed_to.topic"
REPLAYED_TO_PARTITION_HEADER: Final = f"{DEAD_LETTER_HEADER_PREFIX}replayed_to.partition"
REPLAYED_TO_OFFSET_HEADER: Final = f"{DEAD_LETTER_HEADER_PREFIX}replayed_to.offset"

RETRY_HEADER_PREFIX: Final = "retry."
RETRY_KIND_HEADER: Final = f"{RETRY_HEADER_PREFIX}kind"
RETRY_FAILURES_HEADER: Final = f"{RETRY_HEADER_PREFIX}failures"
RETRY_NOT_BEFORE_HEADER: Final = f"{RETRY_HEADER_PREFIX}not_before"
RETRY_HISTORY_HEADER: Final = f"{RETRY_HEADER_PREFIX}history"

AUDIENCE_HEADER: Final = "portability.audience"
SOURCE_OFFSET_HEADER: Final = "source.offset"

# On each record of the pull feed: what a webhook's headers and body would say of the event,
# so the reader answers without parsing bodies. Named as Standard Webhooks names webhook-id.
FEED_WEBHOOK_ID_HEADER: Final = "webhook-id"
FEED_CONSENT_ID_HEADER: Final = "consent-id"  # "" for an event of no consent
FEED_EVENT_TYPE_HEADER: Final = "event-type"
