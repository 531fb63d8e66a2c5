"""Errors of the message log: what its writer, queries and actions refuse, and why.

Every exception defined in :mod:`portability.messages` derives from :class:`MessagesError`.
"""

from __future__ import annotations

from portability.errors import PortabilityError

__all__ = ["MessagesError"]


class MessagesError(PortabilityError):
    """Base of the errors of :mod:`portability.messages`."""
