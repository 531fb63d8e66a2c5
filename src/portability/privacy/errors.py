"""Errors of the privacy policy: a policy file that cannot be used, and why."""

from __future__ import annotations

from pathlib import Path

from portability.errors import PortabilityError

__all__ = ["PolicyError", "PrivacyError"]


class PrivacyError(PortabilityError):
    """Base of the errors of :mod:`portability.privacy`."""


class PolicyError(PrivacyError, ValueError):
    """A privacy policy document that is not valid; the message says where and what to fix.

    Attributes:
        source: The file the document came from, if it came from one.
    """

    def __init__(self, message: str, source: Path | None = None) -> None:
        super().__init__(f"{source}: {message}" if source is not None else message)
        self.source = source
