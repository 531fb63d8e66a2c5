"""Errors of the reference receiving app: what it refuses in a request, and why.

Every exception defined in :mod:`portability.receiver` derives from :class:`ReceiverError`.
"""

from __future__ import annotations

from portability.errors import PortabilityError

__all__ = ["ReceiverError", "RejectedRequestError", "SnapshotPageError"]


class ReceiverError(PortabilityError):
    """Base of the errors of :mod:`portability.receiver`."""


class SnapshotPageError(ReceiverError, ValueError):
    """A ``portability.snapshot`` body without the fields a page must have, or out of order.

    Not retriable: the same page is refused the same way.
    """


class RejectedRequestError(ReceiverError):
    """Ends a webhook request with an error answer; carries what the log line and body say.

    Raised while a request is handled and answered there, never to the receiver's caller.
    Not retriable as such: whether the sender tries again is the answer's ``status``'s to say.

    Attributes:
        status: The HTTP status of the answer (400, 401, 404).
        reason: The stable code in the answer's ``error`` field.
        detail: What was wrong, in the answer's ``detail`` field.
    """

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
