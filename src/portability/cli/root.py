"""The root of the ``portability`` command: the app, its global flags, and what every command
group shares (the settings the flags load, the error console, and how a command runs a
coroutine and turns an expected failure into one line and an exit code).

The command groups import this module; it imports none of them (``portability.cli`` puts the
tree together), so a group can be read without the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from portability.errors import ConfigurationError, PortabilityError
from portability.ops.logs import configure_logging
from portability.settings import Settings
from portability.settings_errors import load_settings

__all__ = [
    "app",
    "bootstrap",
    "console",
    "error_line",
    "guarded",
    "run",
    "run_kafka",
    "serve",
    "state",
]

app = typer.Typer(
    help="Continuous data portability: account changes to consented apps, signed and in order.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

console = Console(stderr=True)


class _State:
    """What the root callback loaded, for the command that runs after it."""

    settings: Settings


state = _State()


@app.callback()
def _root(
    bootstrap: Annotated[
        str | None,
        typer.Option(
            "--bootstrap",
            help="Kafka bootstrap servers; default: PORTABILITY_KAFKA_BOOTSTRAP or embedded.",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Consent store URL (SQLite default, or postgresql+psycopg://...).",
        ),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")
    ] = None,
    log_json: Annotated[
        bool, typer.Option("--log-json", help="Log one JSON object per line.")
    ] = False,
) -> None:
    overrides: dict[str, Any] = {}
    if bootstrap:
        overrides["kafka_bootstrap"] = bootstrap
    if database_url:
        overrides["database_url"] = database_url
    if log_level:
        overrides["log_level"] = log_level
    if log_json:
        overrides["log_format"] = "json"
    try:
        state.settings = load_settings(overrides, _SETTING_FLAGS)
    except ConfigurationError as error:
        error_line(str(error))  # one line naming the setting; never its value
        raise typer.Exit(2) from None
    configure_logging(state.settings.log_level, state.settings.log_format)


# The global flags that set a field, named with its variable when the field is wrong.
_SETTING_FLAGS = {
    "kafka_bootstrap": "--bootstrap",
    "database_url": "--database-url",
    "log_level": "--log-level",
}


def error_line(message: str) -> None:
    """An expected failure as one line on stderr (not wrapped, not read as markup)."""
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)


def serve(command: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a long-running command until SIGINT or SIGTERM (see portability.ops.lifecycle)."""
    from portability.ops.lifecycle import run_until_signalled

    code = run_until_signalled(command, error_line)
    if code:
        raise typer.Exit(code)


def run(coroutine: Any) -> Any:
    """Run a command's coroutine; a pipeline error is one line and exit 2, Ctrl-C exit 130."""
    try:
        return asyncio.run(coroutine)
    except PortabilityError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def run_kafka(coroutine: Any, interrupted: int = 130) -> Any:
    """Run an operator command that reads Kafka; an expected failure is one line, no traceback.

    A missing setting exits 2 (a usage error, like a bad flag); a broker that cannot be
    reached or does not answer in time, or a missing topic, exits 1; Ctrl-C exits
    ``interrupted``.
    """
    try:
        return asyncio.run(coroutine)
    except ConfigurationError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    except PortabilityError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    except KeyboardInterrupt:
        raise typer.Exit(interrupted) from None


def guarded(action: Any) -> Any:
    """Call ``action``; a pipeline error is one line and exit 2 (the store commands' way)."""
    try:
        return action()
    except PortabilityError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error


def bootstrap() -> str:
    """The configured Kafka bootstrap servers, or exit 2 saying how to set them."""
    from portability.ops.commands import require_bootstrap

    servers: str = guarded(lambda: require_bootstrap(state.settings))
    return servers
