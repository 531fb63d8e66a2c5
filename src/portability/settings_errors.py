"""Loading the settings for a command: a setting that cannot work is one line, never a value.

pydantic's own message of a validation error repeats the input: for a model-wide check (an
unknown ``PORTABILITY_*`` variable) that is every setting read, tokens and database URL
included. :func:`load_settings` says instead, per error, which setting (as the variable and,
where there is one, the flag an operator sets) and what is wrong with it, and leaves any
secret value out, even one a message happened to quote.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from portability.errors import ConfigurationError
from portability.settings import Settings
from portability.settings_types import is_secret

__all__ = ["describe_settings_error", "load_settings"]

_PREFIX: Final = "PORTABILITY_"
_MASK: Final = "***"
# Secrets this short could also be ordinary words of a message; they are not looked for.
_SHORTEST_SCRUBBED: Final = 4
_PARSED_FIELD = re.compile(r'field "(\w+)"')


def load_settings(overrides: Mapping[str, Any], flags: Mapping[str, str] | None = None) -> Settings:
    """The settings from the environment, with ``overrides`` (from flags) on top.

    Args:
        overrides: Field values given on the command line.
        flags: The flag that sets each field, to name it beside the variable.

    Raises:
        ConfigurationError: One line naming each setting that cannot work and why.
    """
    try:
        return Settings(**overrides)
    except (ValidationError, SettingsError) as error:
        # from None: the chained error's message would print the values after all.
        raise ConfigurationError(describe_settings_error(error, overrides, flags)) from None


def describe_settings_error(
    error: ValidationError | SettingsError,
    overrides: Mapping[str, Any] | None = None,
    flags: Mapping[str, str] | None = None,
) -> str:
    """One line: each setting in error and what is wrong, without the values given."""
    if isinstance(error, ValidationError):
        details = error.errors(include_url=False, include_context=False, include_input=False)
        parts = [_describe(detail["loc"], detail["msg"], flags or {}) for detail in details]
        line = "; ".join(parts)
    else:
        # pydantic-settings could not parse a complex value (a list, as JSON).
        match = _PARSED_FIELD.search(str(error))
        name = _setting_name((match.group(1),) if match else (), flags or {})
        line = f"{name}: cannot be parsed; give it as JSON, e.g. [0,5,300]"
    return _scrub(" ".join(line.split()), overrides or {})


def _describe(loc: tuple[int | str, ...], message: str, flags: Mapping[str, str]) -> str:
    message = message.removeprefix("Value error, ")
    if not loc:
        return message  # a check of the whole model; its message names what it is about
    return f"{_setting_name(loc, flags)}: {message}"


def _setting_name(loc: tuple[int | str, ...], flags: Mapping[str, str]) -> str:
    if not loc:
        return "a setting"
    field = str(loc[0])
    name = f"{_PREFIX}{field.upper()}"
    if field in flags:
        name = f"{name} (or {flags[field]})"
    return name + "".join(f"[{step}]" for step in loc[1:])


def _scrub(line: str, overrides: Mapping[str, Any]) -> str:
    """``line`` without any value of a secret setting given (or any password in one)."""
    for secret in _secret_values(overrides):
        if len(secret) >= _SHORTEST_SCRUBBED:
            line = line.replace(secret, _MASK)
    return line


def _secret_values(overrides: Mapping[str, Any]) -> list[str]:
    values: list[str] = []
    for field, info in Settings.model_fields.items():
        if not is_secret(info.annotation):
            continue
        given: list[Any] = [os.environ.get(f"{_PREFIX}{field.upper()}"), overrides.get(field)]
        for value in given:
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if isinstance(text, str) and text:
                values.append(text)
                values.extend(_password_of(text))
    # Longest first: a URL is masked whole before the password inside it.
    return sorted(values, key=len, reverse=True)


def _password_of(text: str) -> list[str]:
    try:
        password = urlsplit(text).password
    except ValueError:
        return []
    return [password] if password else []
