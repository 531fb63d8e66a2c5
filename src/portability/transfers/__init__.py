"""Transfers of a user's current data: the current-state view and the archives built from it.

- :mod:`~portability.transfers.state`: the view, kept from ``account.changes`` per partition
  in SQLite, with ``state.changelog`` to restore it anywhere;
- :mod:`~portability.transfers.store`: its files, snapshots and positions;
- :mod:`~portability.transfers.archive`: a user's archive (a zip of JSON files per category
  and a manifest), streamed from a snapshot.
"""

from portability.transfers.archive import ArchiveResult, write_archive
from portability.transfers.errors import (
    PartitionNotHeldError,
    StateGapError,
    StateNotReadyError,
    StateStoreError,
    TransfersError,
)
from portability.transfers.render import Deletion, StoredRecord
from portability.transfers.state import StateView
from portability.transfers.state_stats import StateStats
from portability.transfers.store import PartitionStore, Position, Snapshot, state_path

__all__ = [
    "ArchiveResult",
    "Deletion",
    "PartitionNotHeldError",
    "PartitionStore",
    "Position",
    "Snapshot",
    "StateGapError",
    "StateNotReadyError",
    "StateStats",
    "StateStoreError",
    "StateView",
    "StoredRecord",
    "TransfersError",
    "state_path",
    "write_archive",
]
