"""The Kafka client library's repeated lines are cut to one a window, with a count."""

from __future__ import annotations

import logging

from portability.ops.logs import ClientRepeats


def _record(name: str, message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, args, None)


def test_repeats_of_a_client_message_pass_once_a_window_with_a_count() -> None:
    now = [0.0]
    repeats = ClientRepeats(window_s=10.0, clock=lambda: now[0])
    unable = "Unable connect to node with id %s: %s"

    passed = [repeats.filter(_record("aiokafka", unable, 111, f"try {n}")) for n in range(50)]
    assert passed == [True] + [False] * 49
    # Another message of the library is its own.
    assert repeats.filter(_record("aiokafka.consumer.fetcher", "Failed fetch messages from %s"))

    now[0] = 10.5
    later = _record("aiokafka", unable, 111, "again")
    assert repeats.filter(later)
    assert later.__dict__["repeats_left_out"] == 49
    assert not repeats.filter(_record("aiokafka", unable, 111, "and again"))


def test_the_pipelines_own_lines_always_pass() -> None:
    repeats = ClientRepeats(window_s=10.0, clock=lambda: 0.0)
    line = "delivery commit held: %s"

    assert all(repeats.filter(_record("portability.delivery", line, n)) for n in range(20))
