"""The operator side: logging, the Faust worker shell, status views."""

from portability.ops.logs import configure_logging

__all__ = ["configure_logging"]
