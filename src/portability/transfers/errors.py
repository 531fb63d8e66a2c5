"""Errors of the current-state view and the archives built from it."""

from __future__ import annotations

from portability.errors import PortabilityError

__all__ = [
    "PartitionNotHeldError",
    "StateGapError",
    "StateNotReadyError",
    "StateStoreError",
    "TransfersError",
]


class TransfersError(PortabilityError):
    """Base of the errors of :mod:`portability.transfers`."""


class StateStoreError(TransfersError):
    """A state file that cannot be used (another topic's, a newer layout, unreadable)."""


class PartitionNotHeldError(TransfersError):
    """The user's partition is assigned to another instance of the view (or to none yet).

    Attributes:
        partition: The partition of ``account.changes`` the user's records are in.
    """

    retriable = True

    def __init__(self, partition: int) -> None:
        super().__init__(
            f"partition {partition} of the current-state view is not held by this instance; "
            "ask the instance that holds it, or retry after the group's rebalance"
        )
        self.partition = partition


class StateNotReadyError(TransfersError):
    """The partition is held but still being restored, so its state is not yet consistent."""

    retriable = True

    def __init__(self, partition: int, why: str) -> None:
        super().__init__(f"partition {partition} of the current-state view is not ready: {why}")
        self.partition = partition


class StateGapError(TransfersError):
    """Changes the view never applied are gone from the source (retention deleted them).

    The view would silently lack records, and archives built from it would be incomplete, so
    the view stops instead.
    """

    def __init__(self, topic: str, partition: int, applied: int, log_start: int) -> None:
        super().__init__(
            f"{topic}[{partition}] now starts at offset {log_start}, but the current-state view "
            f"has applied it only up to offset {applied}: changes {applied}..{log_start - 1} were "
            "deleted by retention before the view read them. The view of this partition would "
            "be incomplete; restore it from a complete state.changelog (or from a backup of "
            "data_dir/state/) instead of rebuilding it from the source"
        )
        self.topic = topic
        self.partition = partition
        self.applied = applied
        self.log_start = log_start
