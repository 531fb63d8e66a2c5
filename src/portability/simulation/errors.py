"""The error of the simulation package, the root of any error the simulated platform raises.

It raises none of its own today (a wrong argument is a ``KeyError`` or ``ValueError`` of the
caller's making). An error added here subclasses :class:`SimulationError`, so that every
package's errors are found the same way (``<package>.errors``).
"""

from portability.errors import PortabilityError

__all__ = ["SimulationError"]


class SimulationError(PortabilityError):
    """The simulated platform cannot publish what was asked; the message says why."""
