"""The fault schedule: which fault, when, drawn from the seed so a run can be repeated.

Kinds (``KINDS``): SIGKILL of each role (a replacement starts a second later, as a
supervisor restarts a crashed container), SIGSTOP of each role for ``PAUSE_S`` then SIGCONT
(a stalled machine: its group session expires meanwhile), matchers and workers scaled up by
one and down again (a graceful SIGTERM of the oldest), the consent store's PostgreSQL server
stopped at once for ``OUTAGE_S`` and started, the broker paused, and the broker killed and
restarted on durable storage (only where the broker has it: otherwise the kind is left out
and the table says why).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = [
    "BROKER_RESTART",
    "DURABLE_KINDS",
    "KINDS",
    "OUTAGE_S",
    "PAUSE_S",
    "SHORT_KINDS",
    "Planned",
    "schedule",
]

PAUSE_S = 5.0
OUTAGE_S = 6.0
BROKER_RESTART = "broker restart"

KINDS = (
    "kill matcher",
    "kill worker",
    "kill transfers",
    "kill api",
    "pause matcher",
    "pause worker",
    "pause transfers",
    "pause api",
    "scale matchers",
    "scale workers",
    "postgres outage",
    "broker pause",
)
# On durable storage only (the durable phase): the broker killed twice, paused, and a worker
# killed while the broker's log is on S3.
DURABLE_KINDS = (BROKER_RESTART, "broker pause", BROKER_RESTART, "kill worker")
SHORT_KINDS = ("kill matcher", "pause worker", "postgres outage", "kill worker")


@dataclass(frozen=True, slots=True)
class Planned:
    at_s: float  # seconds after the traffic began
    kind: str


def schedule(
    kinds: tuple[str, ...], seed: int, start_s: float, end_s: float, repeat: int = 1
) -> list[Planned]:
    """Each kind ``repeat`` times, in a seeded order, evenly spread over [start_s, end_s)."""
    rnd = random.Random(seed)
    order = [kind for kind in kinds for _ in range(repeat)]
    rnd.shuffle(order)
    if not order:
        return []
    step = (end_s - start_s) / len(order)
    return [Planned(round(start_s + i * step, 1), kind) for i, kind in enumerate(order)]
