"""The ``portability`` command."""

from __future__ import annotations

import typer

__all__ = ["app", "main"]

app = typer.Typer(help="Continuous data portability pipeline.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Continuous data portability pipeline."""


def main() -> None:
    app()
