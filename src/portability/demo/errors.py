"""The error of the demo package: the demo (or a benchmark) could not run to the end."""

from portability.errors import PortabilityError

__all__ = ["DemoError"]


class DemoError(PortabilityError):
    """The demo (or a benchmark) could not run to the end, e.g. a pipeline loop died."""
