"""Errors of the broker package."""

from portability.errors import PortabilityError

__all__ = ["BrokerError"]


class BrokerError(PortabilityError):
    """The broker could not be started, reached, or set up."""

    retriable = True
