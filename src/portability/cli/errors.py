"""The error of the cli package, the root of any error the command line raises of its own.

It raises none today: a command turns every other package's error into a message and an exit
code (``typer.Exit``), and a wrong flag is typer's ``BadParameter``. An error added here
subclasses :class:`CliError`, so that every package's errors are found the same way
(``<package>.errors``).
"""

from portability.errors import PortabilityError

__all__ = ["CliError"]


class CliError(PortabilityError):
    """A command cannot run as asked; the message says what to change."""
