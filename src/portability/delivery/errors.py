"""Errors of delivery: what the delivery stage and replays on request raise on purpose.

Every exception defined in :mod:`portability.delivery` derives from :class:`DeliveryError`.
None of them subclasses another package's error: the API decides how each becomes an HTTP
answer (a refused replay is a 409 there, as a conflict with the consent's state is).
"""

from __future__ import annotations

from portability.errors import PortabilityError

__all__ = [
    "DeliveryError",
    "ReplayFailedError",
    "ReplayRefusedError",
    "ReplayUnavailableError",
]


class DeliveryError(PortabilityError):
    """Base of the errors of :mod:`portability.delivery`."""


class ReplayUnavailableError(DeliveryError):
    """This process has no Kafka, so it cannot read the deliveries topic.

    Not retriable: the same process answers the same until it is configured with Kafka.
    """


class ReplayRefusedError(DeliveryError):
    """The consent or its app is not in a state that allows a replay.

    Not retriable as such: the state must change first (the consent granted again, the app
    enabled, the key that sealed the app's secrets given to the API).

    Attributes:
        code: ``consent_not_active``, ``app_cannot_receive`` or ``secrets_unavailable``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ReplayFailedError(DeliveryError):
    """Ends a running replay as failed; the message is what the app reads in ``last_error``.

    Raised and caught inside a replay's background task, never to a caller. Not retriable:
    the replay has already retried what it could, and the app requests a new one.
    """
