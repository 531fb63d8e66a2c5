"""Reading, inspecting and redelivering the dead-letter topic (``portability dlq``).

One room per step of an operator's work on dead letters:

- :mod:`.letters`: one letter and one redelivery marker as read back, and their JSON;
- :mod:`.reading`: the topic read once, whole, decoded, markers linked to their letters;
- :mod:`.listing`: filters, counts, and ``dlq list`` / ``dlq show``;
- :mod:`.redelivery`: ``dlq redeliver``: plan (refusals), re-produce, mark;
- :mod:`.view`: the rich tables those commands print;
- :mod:`.counts`: letters counted as they arrive, for the status page and metrics (headers
  only, never a decode).

"Redeliver" is the code's word for re-producing a dead letter ("replay" is the replay of
delivered deltas to an app, :mod:`portability.delivery.replay`). Header names, JSON keys and
operator messages keep the "replay" they were published with.

This package exports the commands' API; :mod:`.view` and :mod:`.counts` are imported by
their own names (they are the CLI's and the API's).
"""

from portability.ops.dead_letters.letters import Attempt, Decoded, Letter, RedeliveryMark
from portability.ops.dead_letters.listing import (
    LetterFilter,
    Listing,
    Summary,
    list_letters,
    parse_since,
    reason_class,
    resolve_topic,
    show_letter,
)
from portability.ops.dead_letters.redelivery import (
    RedeliveryDecision,
    RedeliveryPlan,
    RedeliveryResult,
    Selection,
    execute_redelivery,
    plan_redelivery,
)

__all__ = [
    "Attempt",
    "Decoded",
    "Letter",
    "LetterFilter",
    "Listing",
    "RedeliveryDecision",
    "RedeliveryMark",
    "RedeliveryPlan",
    "RedeliveryResult",
    "Selection",
    "Summary",
    "execute_redelivery",
    "list_letters",
    "parse_since",
    "plan_redelivery",
    "reason_class",
    "resolve_topic",
    "show_letter",
]
