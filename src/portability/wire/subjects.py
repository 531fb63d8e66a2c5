"""Registry subjects: under which name each schema is registered with a schema registry.

Confluent's serializers pick a subject with a *subject name strategy*; a platform producer
using one of them with its defaults registers under ``<topic>-value`` (TopicNameStrategy).
The codec registers each of this build's schemas under the subject of the topic it is written
to, by the same rule, so both sides meet under one subject and the registry's compatibility
check covers every writer of a topic.

Which schema a topic carries is looked up here both ways: :func:`topic_for` (a schema's
topic, which names its subject) and :func:`schemas_for_topic` (what a record read off a
topic may be, e.g. a dead letter's source).
"""

from __future__ import annotations

import enum
import json

from portability.wire.schemas import SchemaName, schema_text
from portability.wire.topics import TopicNames

__all__ = [
    "SubjectStrategy",
    "record_full_name",
    "schemas_for_topic",
    "subject_for",
    "topic_for",
]


class SubjectStrategy(enum.StrEnum):
    """Confluent's subject name strategies (``value.subject.name.strategy``), for values."""

    TOPIC_NAME = "topic_name"  # <topic>-value (TopicNameStrategy, Confluent's default)
    RECORD_NAME = "record_name"  # <record full name> (RecordNameStrategy)
    TOPIC_RECORD_NAME = "topic_record_name"  # <topic>-<record full name> (TopicRecordName...)


def topic_for(name: SchemaName, topics: TopicNames) -> str:
    """The topic whose values are records of schema ``name`` (prefix included).

    Delivery records are also copied to ``deliveries.retry``; they are registered under
    ``deliveries``, where they are first written.
    """
    by_schema = {
        SchemaName.ACCOUNT_CHANGE: topics.account_changes,
        SchemaName.CONSENT: topics.consents,
        SchemaName.APP: topics.apps,
        SchemaName.DELIVERY: topics.deliveries,
        SchemaName.MATCHER_CHECKPOINT: topics.matcher_checkpoints,
        SchemaName.DELIVERY_STATUS: topics.delivery_status,
        SchemaName.NOTIFICATION: topics.notifications,
        SchemaName.DELIVERY_LOG_ENTRY: topics.delivery_log,
        SchemaName.LEDGER_HEAD: topics.delivery_ledger,
    }
    return by_schema[name]


def schemas_for_topic(names: TopicNames, topic: str | None) -> tuple[SchemaName, ...]:
    """The schemas the records of a pipeline topic may have (the frame says which); none for
    a topic whose records are not decoded by schema, or not a pipeline topic."""
    return {
        names.account_changes: (SchemaName.ACCOUNT_CHANGE,),
        names.consents: (SchemaName.CONSENT,),
        names.deliveries: (SchemaName.DELIVERY,),
        names.notifications: (SchemaName.NOTIFICATION,),
        names.deliveries_retry: (SchemaName.DELIVERY, SchemaName.NOTIFICATION),
        names.apps: (SchemaName.APP,),
        names.delivery_log: (SchemaName.DELIVERY_LOG_ENTRY,),
        names.delivery_ledger: (SchemaName.LEDGER_HEAD,),
    }.get(topic or "", ())


def record_full_name(name: SchemaName) -> str:
    """The full name (``namespace.Name``) of the record schema ``name``."""
    schema = json.loads(schema_text(name))
    short: str = schema["name"]
    namespace = schema.get("namespace")
    if "." in short or not namespace:
        return short
    return f"{namespace}.{short}"


def subject_for(name: SchemaName, topics: TopicNames, strategy: SubjectStrategy) -> str:
    """The registry subject of schema ``name`` under ``strategy``."""
    if strategy is SubjectStrategy.RECORD_NAME:
        return record_full_name(name)
    if strategy is SubjectStrategy.TOPIC_RECORD_NAME:
        return f"{topic_for(name, topics)}-{record_full_name(name)}"
    return f"{topic_for(name, topics)}-value"
