"""Errors of the wire format: every decode or registry failure is a :class:`WireError`."""

from portability.errors import PortabilityError

__all__ = [
    "IncompatibleSchemaError",
    "SchemaRegistryError",
    "UnknownSchemaIdError",
    "WireError",
    "WireFormatError",
]


class WireError(PortabilityError):
    """Bytes that cannot be read as a record, or a schema registry that cannot help."""


class WireFormatError(WireError, ValueError):
    """Bytes on a topic that are not a record we can read; the message says why."""


class SchemaRegistryError(WireError):
    """The registry does not know a schema, or could not be reached."""


class IncompatibleSchemaError(SchemaRegistryError):
    """The registry refuses a schema: it breaks its subject's compatibility level."""

    def __init__(self, message: str, subject: str) -> None:
        super().__init__(message)
        self.subject = subject


class UnknownSchemaIdError(WireFormatError):
    """A frame names a schema id that neither this process nor the registry knows."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"unknown schema id {schema_id}")
        self.schema_id = schema_id
