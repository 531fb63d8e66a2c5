"""The documented examples, published with ``portability changes publish``, go all the way:
a real broker, the outbox relay, the matcher, the delivery worker, and a receiving app over
HTTP that verifies every signature (``tests/pipeline_harness.py``).

The examples' ``occurred_at`` lie in the past, and a consent without a snapshot delivers only
changes made after it was granted: the test publishes each example as written except for that
time, set to now (after the grant).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from typer.testing import CliRunner

from pipeline_harness import APP_A, Pipeline, pipeline_settings, running_pipeline
from portability.broker import EmbeddedBroker
from portability.cli import app
from portability.wire.records import CATEGORIES, format_timestamp

# One worker runs the whole module (pytest -n): its tests share the module's pipeline.
pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.usefixtures("cli_environment"),
    pytest.mark.xdist_group("test_changes_pipeline"),
]

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "account-changes"
# One example per file; the removal of the share comes after the share.
ORDER = ("profile", "post", "follow", "activity-on-others-post", "direct_message", "delete")
USER = "u00000042"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipeline(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    settings = pipeline_settings(tmp_path_factory.mktemp("changes-pipeline"))
    async with running_pipeline(settings, broker.bootstrap) as running:
        yield running


def examples_made_now() -> list[dict[str, Any]]:
    """Each example as documented, its occurred_at moved to now (a millisecond apart)."""
    now = datetime.now(UTC)
    documents = []
    for index, name in enumerate(ORDER):
        lines = (EXAMPLES / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) == 1, f"{name}.jsonl holds one example"
        document = json.loads(lines[0])
        document["occurred_at"] = format_timestamp(now + timedelta(milliseconds=index))
        documents.append(document)
    return documents


async def test_every_example_is_delivered_to_the_users_consent(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    p = pipeline
    settings = p.runtime.settings
    consent = await p.grant(USER, APP_A, list(CATEGORIES))
    await p.wait_matcher_ready()
    examples = examples_made_now()
    source = tmp_path / "examples.jsonl"
    source.write_text("".join(json.dumps(document) + "\n" for document in examples))
    monkeypatch.setenv("PORTABILITY_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("PORTABILITY_PARTITIONS", str(settings.partitions))
    bootstrap = p.runtime.kafka.bootstrap

    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["--bootstrap", bootstrap, "changes", "publish", str(source)],
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    assert "sent 6, rejected 0" in " ".join(result.stderr.split())
    await p.wait_for_changes(consent.consent_id, [e["change_id"] for e in examples])
    await p.wait_idle()
    got = p.receiver.deltas(consent.consent_id)
    assert [d.change_id for d in got] == [e["change_id"] for e in examples]
    assert [d.sequence for d in got] == [1, 2, 3, 4, 5, 6]
    assert [(d.category, d.operation, d.record_id) for d in got] == [
        (e["category"], e["operation"], e["record_id"]) for e in examples
    ]
    by_category = {d.category: d for d in got if d.operation == "upsert"}
    for example in examples[:5]:
        # What the app receives is the record as published (every field here is one the
        # privacy policy lets through to the user's own app).
        assert by_category[example["category"]].record == example["record"]
    stats = p.receiver.stats()
    assert (stats.verification_failures, stats.duplicates, stats.gaps_detected) == (0, 0, 0)
    # The share and its removal carried the audience hint onto the topic.
    on_topic = await p.read_topic(p.runtime.topics.account_changes, at_least=6)
    mine = [r for r in on_topic if r.key == USER.encode()]
    assert [dict(r.headers).get("portability.audience") for r in mine] == [
        None, None, None, b"share", None, b"share",
    ]  # fmt: skip
