"""The error of the matching package, the root of any error the matcher raises on purpose.

The matcher raises none of its own today: a change or consent it cannot read is dead-lettered
(a :class:`~portability.wire.errors.WireFormatError`), and Kafka's and the registry's failures
stop it as they are. An error added here subclasses :class:`MatchingError`, so that every
package's errors are found the same way (``<package>.errors``) and ``retriable`` says whether
the matcher may try again.
"""

from portability.errors import PortabilityError

__all__ = ["MatchingError"]


class MatchingError(PortabilityError):
    """The matcher cannot match account changes against consents; the message says why."""
