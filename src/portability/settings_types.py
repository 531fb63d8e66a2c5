"""Types and checks of :mod:`portability.settings`: secret URLs, Kafka and database addresses.

A URL setting may carry a password (the consent store's, a schema registry's): it is a
:class:`SecretUrl`, printed with its password masked, read with ``get_secret_value()``. The
checks run when the settings load, so that a setting that cannot work stops every command with
one line naming it (see :mod:`portability.settings_errors`) instead of failing later, deep in a
client library, with a traceback that may show the value.
"""

from __future__ import annotations

import re
from typing import Any, Final, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import SecretStr

__all__ = [
    "SecretUrl",
    "check_bootstrap",
    "check_broker_storage",
    "check_database_url",
    "check_s3_endpoint",
    "is_secret",
    "masked_url",
]

_MASK: Final = "***"
# Query parameters that carry credentials (libpq's password=, a token=, an api_key=...).
_SECRET_PARAMETER = re.compile(r"pass|secret|token|key", re.IGNORECASE)
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)$")


class SecretUrl(SecretStr):
    """A URL that may carry a password: ``str`` and ``repr`` show it with the password masked."""

    def _display(self) -> str:
        return masked_url(self.get_secret_value())


def masked_url(url: str) -> str:
    """``url`` with the password of its user info and credential query parameters masked.

    The rest is left as written (rebuilding the URL would change ``sqlite:////path``).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _MASK  # not even a URL: show nothing of it
    masked = url
    if parts.password is not None:
        userinfo = parts.netloc.rpartition("@")[0]
        user = userinfo.partition(":")[0]
        masked = masked.replace(f"{userinfo}@", f"{user}:{_MASK}@", 1)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(_SECRET_PARAMETER.search(name) for name, _ in pairs):
        query = urlencode(
            [(name, _MASK if _SECRET_PARAMETER.search(name) else value) for name, value in pairs],
            safe="*/",
        )
        masked = masked.replace(f"?{parts.query}", f"?{query}", 1)
    return masked


def is_secret(annotation: Any) -> bool:
    """Whether a settings field of type ``annotation`` holds a secret (SecretStr, possibly None)."""
    candidates = get_args(annotation) or (annotation,)
    return any(isinstance(c, type) and issubclass(c, SecretStr) for c in candidates)


def check_bootstrap(value: str) -> str:
    """``value`` if it is a comma-separated list of ``host:port`` (or ``host``) entries.

    Raises:
        ValueError: Naming the entry that is not one; Kafka clients would fail on it later
            with a traceback, or look up a host name with a space in it.
    """
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if not entries:
        raise ValueError("is empty: give host:port of one or more brokers, e.g. kafka:9092")
    for entry in entries:
        host, port = _host_and_port(entry)
        valid_port = port is None or (port.isdigit() and 0 < int(port) < 65536)
        if not _HOST.match(host) or not valid_port:
            raise ValueError(
                f"{entry!r} is not host:port with a port from 1 to 65535 "
                "(a comma-separated list, e.g. kafka:9092,kafka-2:9092)"
            )
    return value


def _host_and_port(entry: str) -> tuple[str, str | None]:
    if entry.startswith("["):  # an IPv6 address: [::1]:9092
        host, _, rest = entry.partition("]")
        return f"{host}]", rest[1:] if rest.startswith(":") else (rest or None)
    host, colon, port = entry.partition(":")
    return host, port if colon else None


def check_database_url(url: SecretUrl) -> SecretUrl:
    """``url`` if SQLAlchemy can parse it as a database URL.

    Raises:
        ValueError: Without the URL (it may carry a password): SQLAlchemy's own message would
            print all of it.
    """
    from sqlalchemy.engine import make_url  # here: only commands with a URL set pay for it
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url.get_secret_value())
    except (ArgumentError, ValueError):
        raise ValueError(
            "is not a database URL; give e.g. postgresql+psycopg://user:password@host/db or "
            "sqlite:///path/to/consents.db"
        ) from None
    return url


_BROKER_STORAGE_HELP = "give memory://tansu/ or s3://BUCKET/ (credentials go in the S3 settings)"


def check_broker_storage(value: str) -> str:
    """``value`` if the embedded broker can store there: ``memory://...`` or ``s3://BUCKET/``.

    Raises:
        ValueError: Naming what is wrong but not the value past its scheme, which could hold
            credentials typed into it; Tansu's own error (FeatureNotEnabled for postgres:// or
            sqlite://, which this build lacks) would come only once it runs.
    """
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        raise ValueError(f"is not a URL; {_BROKER_STORAGE_HELP}") from None
    if parts.scheme not in ("memory", "s3"):
        raise ValueError(
            f"scheme {parts.scheme or '(none)'!r} is not supported by the embedded broker "
            f"(memory or s3); {_BROKER_STORAGE_HELP}"
        )
    if "@" in parts.netloc or parts.query:
        raise ValueError(f"must not carry credentials or parameters; {_BROKER_STORAGE_HELP}")
    if parts.scheme == "s3" and not parts.hostname:
        raise ValueError(f"names no bucket; {_BROKER_STORAGE_HELP}")
    return value.strip()


def check_s3_endpoint(value: str) -> str:
    """``value`` if it is an ``http(s)://host[:port]`` URL without credentials in it.

    Raises:
        ValueError: Without the value (it could carry a key typed into it).
    """
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - a bad port raises only when read
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an http(s)://host[:port] URL, e.g. http://127.0.0.1:9000")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials: use the S3 access key settings")
    return value.strip().rstrip("/")
