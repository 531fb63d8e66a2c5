"""The JSON Schema of webhook bodies: where the package keeps it, and loading it.

Every body :mod:`portability.webhooks.payload` builds is described by
``schemas/webhooks/events.schema.json``, installed with the package next to the Avro schemas;
the contract tests validate what is built against it, and app developers may validate what
they receive.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Final

from portability.wire.schemas import schema_dir

__all__ = ["EVENT_SCHEMA_FILE", "event_schema", "event_schema_path"]

# Relative to the schema folder (``schemas/`` in a checkout, ``wire/avro/`` when installed).
EVENT_SCHEMA_FILE: Final = "webhooks/events.schema.json"


def event_schema_path() -> Path:
    """Where the JSON Schema of webhook bodies is: beside the Avro schemas.

    That is ``schemas/webhooks/`` in a checkout and ``portability/wire/avro/webhooks/`` when
    installed from a wheel, which ships the whole ``schemas/`` folder.
    """
    return schema_dir() / EVENT_SCHEMA_FILE


def event_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of every webhook body this build sends.

    Returns:
        The parsed schema; a fresh object on every call, so the caller may modify it.

    Raises:
        FileNotFoundError: The schema file is not where the package keeps it (a broken install).
    """
    schema: dict[str, Any] = json.loads(_event_schema_text())
    return schema


@functools.cache
def _event_schema_text() -> str:
    path = event_schema_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"webhook event schema not found at {path}: reinstall the package, whose wheel "
            f"ships it as portability/wire/avro/{EVENT_SCHEMA_FILE}"
        )
    return path.read_text(encoding="utf-8")
