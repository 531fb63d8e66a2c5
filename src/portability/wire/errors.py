"""Errors of the wire format: every decode or registry failure is one of these."""

from portability.errors import PortabilityError

__all__ = [
    "IncompatibleSchemaError",
    "SchemaRegistryError",
    "UnknownSchemaIdError",
    "WireFormatError",
]


class WireFormatError(PortabilityError, ValueError):
    """Bytes on a topic that are not a record we can read; the message says why."""


class SchemaRegistryError(PortabilityError):
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
