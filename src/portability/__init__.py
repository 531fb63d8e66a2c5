"""Continuous data portability: account changes to consented apps, signed, in order."""

__all__ = ["__version__"]

__version__ = "0.1.0"
