"""The root of every error this project raises on purpose.

Each package subclasses :class:`PortabilityError`; ``retriable`` tells a caller (the delivery
worker above all) whether trying the same thing again can succeed.
"""

__all__ = ["ConfigurationError", "PortabilityError"]


class PortabilityError(Exception):
    """Base of all portability errors."""

    retriable: bool = False


class ConfigurationError(PortabilityError, ValueError):
    """A setting or flag that cannot work, with what to change."""
