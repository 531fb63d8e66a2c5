"""A user's archive: a zip of one JSON file per granted category, and a manifest.

Layout (entries in this order)::

    post.json        [{"record_id": ..., "category": "post", "occurred_at": "...Z",
                       "change_id": ..., "record": {...}}, ...]   one line per record
    profile.json     ...one file per granted category, in the order of the grant
    manifest.json    {"format", "user_id", "categories", "record_counts", "policy_version",
                      "generated_at", "source_positions", "files": [{"name", "category",
                      "records", "size_bytes", "sha256"}]}

Records are rendered as the webhook contract renders a delta's record (ISO-8601 UTC timestamps
with milliseconds and ``Z``), sorted by ``record_id``; ``occurred_at`` and ``change_id`` are
those of the change that produced the record's current state. Given a privacy policy, each
record is shipped as ``portability.privacy.engine.apply`` lets it through (the same rules as
deltas), and the manifest states that policy's version. ``source_positions`` says which
changes the archive reflects: every change of ``topic[partition]`` before ``next_offset``, none
after (an ongoing transfer's deltas continue from there).

Memory stays bounded whatever the record count: records stream from the snapshot's database
cursor through a small buffer into the zip entry (``ZipFile.open(name, "w")`` compresses as it
goes), and each file is hashed as it is written. The output is deterministic apart from
``generated_at``: fixed entry times and attributes, fixed order, no randomness.

Building is synchronous (SQLite and zlib); from async code run it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO, Any, Final

from portability.privacy.engine import apply as apply_policy
from portability.privacy.model import PrivacyPolicy
from portability.transfers.render import StoredRecord, render_record
from portability.transfers.store import Snapshot
from portability.webhooks.payload import UNVERSIONED
from portability.wire.records import CATEGORIES, format_timestamp

__all__ = [
    "ARCHIVE_FORMAT",
    "MANIFEST_NAME",
    "ArchiveResult",
    "archive_entry_name",
    "shipped_record_json",
    "write_archive",
]

ARCHIVE_FORMAT: Final = "portability.archive.v1"
MANIFEST_NAME: Final = "manifest.json"
_ENTRY_TIME: Final = (1980, 1, 1, 0, 0, 0)  # the zip epoch: the same bytes on every run
_BUFFER_BYTES: Final = 64 * 1024
_HASH_CHUNK: Final = 1024 * 1024
# A JSON string literal, as json.dumps(..., ensure_ascii=False) writes it, without its overhead.
_string: Final = encode_basestring


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """The archive written, and what a ``portability.download.ready`` event states about it.

    Attributes:
        sha256: Hex SHA-256 of the whole zip file.
        manifest: The manifest, as written into the archive.
    """

    path: Path
    size_bytes: int
    sha256: str
    manifest: dict[str, Any]

    @property
    def record_counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.manifest["record_counts"]
        return counts


def archive_entry_name(category: str) -> str:
    """The zip entry holding ``category``'s records."""
    return f"{category}.json"


def write_archive(
    snapshot: Snapshot,
    destination: Path,
    *,
    policy: PrivacyPolicy | None = None,
    policy_version: str | None = None,
    generated_at: datetime | None = None,
    compresslevel: int = 6,
) -> ArchiveResult:
    """Write the archive of ``snapshot`` (its user, its categories: the grant) to ``destination``.

    The zip is written beside ``destination`` and renamed into place when complete, so a
    reader never sees half an archive.

    Args:
        snapshot: An open snapshot; its categories are the ones the consent grants.
        policy: The privacy rules to ship the records under (one version for the whole
            archive: ``portability.privacy.current_policy()`` once, before building). Each
            record goes through ``portability.privacy.engine.apply`` with the record's stored
            context; a record the rules withhold is left out and not counted. None: records
            as stored.
        policy_version: The version stated in the manifest; by default the policy's, or
            ``"unversioned"`` without one.
        generated_at: When it was generated (now by default), stated in the manifest.
        compresslevel: zlib level of the entries (1 fast .. 9 small).

    Raises:
        ValueError: A category of the snapshot is not one of the platform's, or
            ``policy_version`` contradicts ``policy``.
    """
    unknown = [c for c in snapshot.categories if c not in CATEGORIES]
    if unknown:
        raise ValueError(
            f"unknown categories {unknown}: an archive holds only {', '.join(CATEGORIES)}"
        )
    if policy is not None and policy_version not in (None, policy.version):
        raise ValueError(
            f"policy_version {policy_version!r} is not the version of the policy applied "
            f"({policy.version!r}): leave policy_version out to state the policy's"
        )
    version = policy_version or (policy.version if policy is not None else UNVERSIONED)
    moment = generated_at or datetime.now(UTC)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    try:
        with zipfile.ZipFile(partial, "w", allowZip64=True) as archive:
            files = [
                _write_category(archive, snapshot, category, compresslevel, policy)
                for category in snapshot.categories
            ]
            manifest = _manifest(snapshot, files, version, moment)
            text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
            archive.writestr(_entry_info(MANIFEST_NAME, compresslevel), text.encode())
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    size, digest = _file_digest(destination)
    return ArchiveResult(destination, size, digest, manifest)


def _entry_info(name: str, compresslevel: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ENTRY_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    # ZipFile.open(info, "w") takes the level only from the ZipInfo; its public name
    # (compress_level) appeared in Python 3.13, the slot behind it exists since 3.7.
    info._compresslevel = compresslevel  # type: ignore[attr-defined]
    info.create_system = 3  # Unix, whatever the platform that builds it
    info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
    return info


class _Entry:
    """A zip entry being written: buffered, hashed and measured as it goes."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._buffer = bytearray()
        self._sha256 = hashlib.sha256()
        self.size = 0

    def write(self, text: str) -> None:
        self._buffer += text.encode()
        if len(self._buffer) >= _BUFFER_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._raw.write(self._buffer)
            self._sha256.update(self._buffer)
            self.size += len(self._buffer)
            self._buffer.clear()

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()


def _write_category(
    archive: zipfile.ZipFile,
    snapshot: Snapshot,
    category: str,
    compresslevel: int,
    policy: PrivacyPolicy | None,
) -> dict[str, Any]:
    name = archive_entry_name(category)
    count = 0
    # force_zip64: the size is unknown until the end, and may pass 2 GiB for a huge user.
    with archive.open(_entry_info(name, compresslevel), "w", force_zip64=True) as raw:
        entry = _Entry(raw)
        entry.write("[")
        for record in snapshot.records(category):
            text = (
                _record_json(record, record.record_json)
                if policy is None
                else shipped_record_json(record, policy, snapshot.categories)
            )
            if text is None:
                continue
            entry.write((",\n" if count else "\n") + text)
            count += 1
        entry.write("\n]\n" if count else "]\n")
        entry.flush()
    return {
        "name": name,
        "category": category,
        "records": count,
        "size_bytes": entry.size,
        "sha256": entry.hexdigest(),
    }


def _record_json(record: StoredRecord, record_text: str) -> str:
    """One archive record around ``record_text``, the record's JSON, embedded as is."""
    return (
        f'{{"record_id":{_string(record.record_id)},'
        f'"category":{_string(record.category)},'
        f'"occurred_at":{_string(record.occurred_at)},'
        f'"change_id":{_string(record.change_id)},'
        f'"record":{record_text}}}'
    )


def shipped_record_json(
    record: StoredRecord, policy: PrivacyPolicy, granted: Sequence[str]
) -> str | None:
    """The archive (and snapshot) record as the privacy rules let it through; None if nothing
    may leave."""
    shipped = apply_policy(
        policy, record.category, record.record(), granted=granted, context=record.context()
    )
    return None if shipped is None else _record_json(record, render_record(shipped))


def _manifest(
    snapshot: Snapshot, files: list[dict[str, Any]], policy_version: str, moment: datetime
) -> dict[str, Any]:
    return {
        "format": ARCHIVE_FORMAT,
        "user_id": snapshot.user_id,
        "categories": list(snapshot.categories),
        "record_counts": {file["category"]: file["records"] for file in files},
        "policy_version": policy_version,
        "generated_at": format_timestamp(moment),
        "source_positions": [snapshot.position.as_dict()],
        "files": files,
    }


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
