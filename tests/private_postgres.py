"""A PostgreSQL server of a test's own, to stop and start: the consent store's outages.

The server itself is the chaos suite's (``chaos.postgres``, shared so that there is one copy);
here, :func:`private_postgres_or_skip` skips the test, saying why, where none can run.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

import pytest
from chaos.postgres import PrivatePostgres

__all__ = ["PrivatePostgres", "private_postgres_or_skip"]


@contextlib.contextmanager
def private_postgres_or_skip() -> Iterator[PrivatePostgres]:
    """A started server, stopped and removed on the way out; skips the test where none can
    run here."""
    try:
        server = PrivatePostgres()
    except RuntimeError as error:
        pytest.skip(f"no private PostgreSQL server here: {error}")
    except subprocess.CalledProcessError as error:
        pytest.skip(f"no private PostgreSQL server here: initdb failed: {error.stderr!r}")
    try:
        server.start()
        yield server
    finally:
        server.remove()
