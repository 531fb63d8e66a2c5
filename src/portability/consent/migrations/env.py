"""Alembic environment of the consent store: runs on the connection the caller passes.

:func:`portability.consent.store.init_schema` puts its open connection in
``config.attributes["connection"]``; there is no ``alembic.ini`` and no URL here.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection


def _run() -> None:
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "run the consent store's migrations through portability.consent.init_schema"
        )
    context.configure(
        connection=connection,
        version_table="alembic_version",
    )
    with context.begin_transaction():
        context.run_migrations()


_run()
