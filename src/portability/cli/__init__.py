"""The ``portability`` command: run the pipeline's parts, the embedded broker and the demo.

Every command reads the same settings (``PORTABILITY_*`` environment variables); the global
flags override them (:mod:`portability.cli.root`). With no configuration at all, everything
runs embedded. One module per command group; this one puts the tree together, in the order
``--help`` lists it.
"""

from __future__ import annotations

from portability.cli import consents, demo, disclosures, dlq, receiver, roles, topics
from portability.cli.changes import changes_app
from portability.cli.root import app
from portability.cli.secrets import secrets_app

__all__ = ["app", "main"]

app.add_typer(consents.consents_app, name="consents")
app.add_typer(consents.apps_app, name="apps")
app.add_typer(topics.topics_app, name="topics")
app.add_typer(dlq.dlq_app, name="dlq")
app.add_typer(changes_app, name="changes")
app.add_typer(secrets_app, name="secrets")

app.command()(roles.broker)
app.command()(topics.lag)
app.command()(roles.matcher)
app.command()(roles.worker)
app.command()(roles.relay)
app.command()(roles.transfers)
app.command()(roles.messages)
app.command()(roles.pipeline)
app.command()(roles.api)
app.command()(receiver.receiver)
app.command()(disclosures.disclosures)
app.command()(demo.demo)


def main() -> None:
    """The console script ``portability`` (and ``python -m portability``)."""
    app(prog_name="portability")
