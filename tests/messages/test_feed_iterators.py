"""Feed iterators: opaque, bound to their app, and refused when the feed moved past them."""

from __future__ import annotations

import base64
import json

import pytest

from portability.messages.feed_iterators import (
    FeedIterator,
    InvalidIteratorError,
    IteratorExpiredError,
    check_position,
)


def forged(document: object) -> str:
    return "fi1." + base64.urlsafe_b64encode(json.dumps(document).encode()).decode()


def test_an_iterator_round_trips_and_is_opaque() -> None:
    iterator = FeedIterator("app_1", 2, 17)

    text = iterator.encode()

    assert text.startswith("fi1.")
    assert "app_1" not in text
    assert "=" not in text
    assert FeedIterator.decode(text, "app_1") == iterator


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "fi1.",
        "fi1.!!!!",
        "fi1." + base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        forged([1, 2]),
        forged({"v": 2, "a": "app_1", "p": 0, "o": 0}),
        forged({"v": 1, "a": "app_1", "p": -1, "o": 0}),
        forged({"v": 1, "a": "app_1", "p": 0, "o": "3"}),
        forged({"v": 1, "a": "app_1", "p": 0, "o": True}),
        forged({"v": 1, "p": 0, "o": 3}),
        "fi1." + "A" * 500,
    ],
)
def test_a_malformed_iterator_is_refused_with_what_to_do(text: str) -> None:
    with pytest.raises(InvalidIteratorError, match="pass the `iterator` of the feed's last"):
        FeedIterator.decode(text, "app_1")


def test_another_apps_iterator_is_refused() -> None:
    theirs = FeedIterator("app_2", 0, 5).encode()

    with pytest.raises(InvalidIteratorError, match="another app's feed"):
        FeedIterator.decode(theirs, "app_1")


def test_a_position_the_feed_still_holds_passes() -> None:
    iterator = FeedIterator("app_1", 1, 10)

    check_position(iterator, 1, 0, None)
    check_position(iterator, 1, 10, 10)  # at the start, and at the end: the next event


@pytest.mark.parametrize(
    ("partition", "start", "end", "why"),
    [
        (1, 11, None, "keeps events from offset 11 on"),
        (1, 0, 9, "ends at offset 9"),
        (0, 0, None, "re-partitioned"),
    ],
)
def test_a_position_the_feed_moved_past_is_expired_with_what_to_do(
    partition: int, start: int, end: int | None, why: str
) -> None:
    with pytest.raises(IteratorExpiredError, match=why) as raised:
        check_position(FeedIterator("app_1", 1, 10), partition, start, end)

    message = str(raised.value)
    assert "without an iterator" in message
    assert "/snapshots" in message
    assert "/replay" in message
