"""Why a resend or a test event is not made: each refusal names its code and what to do.

The API answers :class:`MessageRefusedError` with 409 and its ``code``,
:class:`RecordsGoneError` with 410 and :class:`ActionUnavailableError` with 503.
"""

from __future__ import annotations

from portability.messages.errors import MessagesError
from portability.wire.delivery_log import DELTA_EVENT
from portability.wire.notifications import SNAPSHOT

__all__ = [
    "ActionUnavailableError",
    "MessageRefusedError",
    "RecordsGoneError",
    "what_instead",
]


class MessageRefusedError(MessagesError):
    """The message, its app or its consent is not in a state that allows the action.

    Not retriable as such: the state must change first (the app enabled, a webhook URL set,
    the key that sealed the app's secrets given to the API).

    Attributes:
        code: ``app_disabled``, ``no_webhook_url``, ``consent_ended``,
            ``secrets_unavailable``, ``not_resendable``, ``source_unreadable`` or
            ``body_mismatch``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RecordsGoneError(MessagesError):
    """The records a message was built from are no longer on their topics (retention, or
    compaction, removed them): the message cannot be rebuilt, byte for byte."""

    code = "records_gone"


class ActionUnavailableError(MessagesError):
    """This server cannot make the attempt now: it runs without Kafka, or the broker did not
    answer in time (``retriable`` then)."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


def what_instead(event_type: str, consent_id: str) -> str:
    """What an app can ask for when a message cannot be sent again as it was."""
    if event_type == DELTA_EVENT:
        return (
            f"ask for a replay of consent {consent_id!r} (POST /v1/consents/{consent_id}/replay) "
            "to receive its deltas still kept, with their ids"
        )
    if event_type == SNAPSHOT:
        return (
            f"ask for a fresh snapshot of consent {consent_id!r} "
            f"(POST /v1/consents/{consent_id}/snapshots) instead"
        )
    return f"the consent's current state is at GET /v1/consents/{consent_id}"
