"""Registry subjects: each schema under the subject of its topic, by Confluent's strategies."""

from __future__ import annotations

import pytest

from portability.wire import (
    AvroCodec,
    InProcessSchemaRegistry,
    SchemaName,
    SubjectStrategy,
    TopicNames,
)
from portability.wire.subjects import record_full_name, subject_for, topic_for

TOPIC_OF = {
    SchemaName.ACCOUNT_CHANGE: "account.changes",
    SchemaName.CONSENT: "consents",
    SchemaName.APP: "apps",
    SchemaName.DELIVERY: "deliveries",
    SchemaName.MATCHER_CHECKPOINT: "matcher.checkpoints",
    SchemaName.DELIVERY_STATUS: "delivery.status",
    SchemaName.NOTIFICATION: "notifications",
    SchemaName.DELIVERY_LOG_ENTRY: "delivery.log",
    SchemaName.LEDGER_HEAD: "delivery.ledger",
}
FULL_NAME_OF = {
    SchemaName.ACCOUNT_CHANGE: "portability.v1.AccountChange",
    SchemaName.CONSENT: "portability.v1.Consent",
    SchemaName.APP: "portability.v1.App",
    SchemaName.DELIVERY: "portability.v1.Delivery",
    SchemaName.MATCHER_CHECKPOINT: "portability.v1.MatcherCheckpoint",
    SchemaName.DELIVERY_STATUS: "portability.v1.DeliveryStatus",
    SchemaName.NOTIFICATION: "portability.v1.Notification",
    SchemaName.DELIVERY_LOG_ENTRY: "portability.v1.DeliveryLogEntry",
    SchemaName.LEDGER_HEAD: "portability.v1.LedgerHead",
}


@pytest.mark.parametrize("name", list(SchemaName))
def test_each_schema_has_its_topic_and_full_name(name: SchemaName) -> None:
    assert topic_for(name, TopicNames.with_prefix("p.")) == f"p.{TOPIC_OF[name]}"
    assert record_full_name(name) == FULL_NAME_OF[name]


@pytest.mark.parametrize("name", list(SchemaName))
def test_subjects_under_each_strategy(name: SchemaName) -> None:
    topics = TopicNames.with_prefix("p.")
    topic, full = f"p.{TOPIC_OF[name]}", FULL_NAME_OF[name]

    assert subject_for(name, topics, SubjectStrategy.TOPIC_NAME) == f"{topic}-value"
    assert subject_for(name, topics, SubjectStrategy.RECORD_NAME) == full
    assert subject_for(name, topics, SubjectStrategy.TOPIC_RECORD_NAME) == f"{topic}-{full}"


def test_the_codec_defaults_to_confluents_topic_name_strategy() -> None:
    codec = AvroCodec(InProcessSchemaRegistry())
    assert codec.subject(SchemaName.ACCOUNT_CHANGE) == "account.changes-value"
    assert AvroCodec(InProcessSchemaRegistry(), "t.").subject(SchemaName.APP) == "t.apps-value"


async def test_start_registers_every_schema_under_its_subject() -> None:
    registry = InProcessSchemaRegistry()
    codec = AvroCodec(
        registry,
        topics=TopicNames.with_prefix("q."),
        subject_strategy=SubjectStrategy.TOPIC_RECORD_NAME,
    )
    await codec.start()

    assert registry._subjects == {
        f"q.{TOPIC_OF[name]}-{FULL_NAME_OF[name]}": [codec.schema_id(name)] for name in SchemaName
    }
