"""The producer contract checked on arrival, on the real broker: every bad record of
``account.changes`` is dead-lettered exactly once, by the stage that owns its fault, with a
short reason, whoever its user is, and nothing of it reaches any app.

The records are written with a plain aiokafka producer, as a platform's producer would write
them (explicit key, partition and bytes), not through the project's publisher.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from pipeline_harness import APP_A, APP_B, Pipeline, pipeline_settings, running_pipeline
from portability.broker import EmbeddedBroker
from portability.transfers import StateView
from portability.wire import SchemaName
from portability.wire.dead_letters import DeadLetter
from portability.wire.records import AccountChange
from portability.wire.topics import partition_for_user
from transfers.helpers import running_view

# One worker runs the whole module (pytest -n): its tests share the module's pipeline.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.xdist_group("test_ingress")]

CONSENTING = "ada"  # holds a consent of app A for every category
MALLORY = "mallory"  # holds a consent of app B: a mislabelled record must not reach it either
NOBODY = "bob"  # holds no consent


@dataclass(slots=True)
class Door:
    """The pipeline under test, a state view beside it, and a raw producer."""

    p: Pipeline
    view: StateView
    producer: AIOKafkaProducer

    @property
    def partitions(self) -> int:
        return self.p.runtime.settings.partitions

    def value(self, change: AccountChange) -> bytes:
        return self.p.runtime.codec.encode(SchemaName.ACCOUNT_CHANGE, dict(change))

    async def send(self, key: bytes | None, value: bytes | None, partition: int) -> int:
        """Write one record as an outside producer; its offset."""
        topic = self.p.runtime.topics.account_changes
        sent = await self.producer.send_and_wait(topic, value, key=key, partition=partition)
        return int(sent.offset)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def door(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Door]:
    settings = pipeline_settings(tmp_path_factory.mktemp("ingress"))
    async with running_pipeline(settings, broker.bootstrap) as p:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:
            async with running_view(p.runtime, partitions=range(settings.partitions)) as view:
                await p.grant(CONSENTING, APP_A, ["profile", "post", "follow", "activity"])
                await p.grant(MALLORY, APP_B, ["profile", "post", "follow", "activity"])
                await p.wait_matcher_ready()
                yield Door(p, view, producer)
        finally:
            await producer.stop()


_numbers = itertools.count(1)


def _post(user_id: str, **overrides: Any) -> AccountChange:
    number = next(_numbers)
    change: dict[str, Any] = {
        "change_id": f"chg_ingress_{number}",
        "user_id": user_id,
        "category": "post",
        "operation": "upsert",
        "record_id": f"post_{number}",
        "occurred_at": datetime.now(UTC),
        "record": {
            "-type": "portability.v1.Post",
            "caption": "hello",
            "media_url": "https://cdn.example/p.mp4",
            "visibility": "public",
            "created_at": datetime.now(UTC),
        },
        "context": None,
        "audience": None,
    }
    change.update(overrides)
    return change  # type: ignore[return-value]


async def _undecodable(d: Door, user: str) -> int:
    framed = d.value(_post(user))[:5] + b"\xff\xfe garbage after a good frame"
    return await d.send(user.encode(), framed, partition_for_user(user, d.partitions))


async def _unknown_schema_id(d: Door, user: str) -> int:
    value = b"\x00\x7f\xff\xff\xf0" + d.value(_post(user))[5:]
    return await d.send(user.encode(), value, partition_for_user(user, d.partitions))


async def _wrong_schema(d: Door, user: str) -> int:
    """A well-framed record of another schema this registry knows (an App record)."""
    app = {
        "app_id": "app-x",
        "name": "Not a change",
        "webhook_url": "https://app.example/hook",
        "signing_secrets": [],
        "enabled": True,
        "version": 1,
    }
    value = d.p.runtime.codec.encode(SchemaName.APP, app)
    return await d.send(user.encode(), value, partition_for_user(user, d.partitions))


async def _not_framed(d: Door, user: str) -> int:
    return await d.send(user.encode(), b"{'json': 'instead of Avro'}", 0)


async def _no_value(d: Door, user: str) -> int:
    return await d.send(user.encode(), None, partition_for_user(user, d.partitions))


async def _no_key(d: Door, user: str) -> int:
    return await d.send(None, d.value(_post(user)), partition_for_user(user, d.partitions))


async def _bad_key(d: Door, user: str) -> int:
    return await d.send(b"\xff\xfe" + user.encode(), d.value(_post(user)), 0)


async def _wrong_partition(d: Door, user: str) -> int:
    wrong = (partition_for_user(user, d.partitions) + 1) % d.partitions
    return await d.send(user.encode(), d.value(_post(user)), wrong)


async def _key_mismatch(d: Door, user: str) -> int:
    # Keyed (and placed) as ``user``, but the value says it is MALLORY's.
    value = d.value(_post(MALLORY if user != MALLORY else CONSENTING))
    return await d.send(user.encode(), value, partition_for_user(user, d.partitions))


async def _seconds_not_millis(d: Door, user: str) -> int:
    in_seconds = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        milliseconds=int(datetime.now(UTC).timestamp())
    )
    value = d.value(_post(user, occurred_at=in_seconds))
    return await d.send(user.encode(), value, partition_for_user(user, d.partitions))


async def _far_future(d: Door, user: str) -> int:
    value = d.value(_post(user, occurred_at=datetime.now(UTC) + timedelta(days=30)))
    return await d.send(user.encode(), value, partition_for_user(user, d.partitions))


async def _reserved_field(d: Door, user: str) -> int:
    audience = {"source_partition": 0, "entries": []}
    value = d.value(_post(user, audience=audience))
    return await d.send(user.encode(), value, partition_for_user(user, d.partitions))


# Each bad kind: how to write it for a user, and the stage that letters it.
BAD_KINDS = {
    "undecodable": (_undecodable, "state"),
    "unknown_schema_id": (_unknown_schema_id, "matcher"),
    "wrong_schema": (_wrong_schema, "matcher"),
    "not_framed": (_not_framed, "matcher"),
    "no_value": (_no_value, "matcher"),
    "no_key": (_no_key, "matcher"),
    "bad_key": (_bad_key, "matcher"),
    "wrong_partition": (_wrong_partition, "matcher"),
    "key_mismatch": (_key_mismatch, "state"),
    "implausible_time": (_seconds_not_millis, "state"),
    "implausible_time/future": (_far_future, "state"),
    "reserved_field": (_reserved_field, "state"),
}


async def _letters(d: Door, expected: int) -> list[dict[str, str]]:
    records = await d.p.read_topic(d.p.runtime.topics.dead_letters, at_least=expected)
    return [DeadLetter.parse_headers(r.headers) for r in records]


async def test_every_bad_kind_is_dead_lettered_once_by_its_stage_and_reaches_no_app(
    door: Door,
) -> None:
    d = door
    sent: dict[tuple[str, int], tuple[str, str, str]] = {}  # (partition, offset) -> ...
    for user in (CONSENTING, NOBODY):
        for kind, (write, stage) in BAD_KINDS.items():
            offset = await write(d, user)
            fault = kind.split("/")[0]
            partition = _partition_written(d, kind, user)
            sent[(str(partition), offset)] = (fault, stage, user)
    # A good change of each user after them: its delivery shows the partitions moved on.
    good = _post(CONSENTING)
    good_offset = await d.send(
        CONSENTING.encode(), d.value(good), partition_for_user(CONSENTING, d.partitions)
    )
    consent = await _consent_of(d.p, CONSENTING)
    await d.p.wait_for_changes(consent, [good["change_id"]])

    letters = await _letters(d, expected=len(sent))
    sources = [(h["source.partition"], int(h["source.offset"])) for h in letters]
    ours = [source for source in sources if source in sent]
    assert sorted(ours) == sorted(sent), "exactly one letter per bad record"
    good_source = (str(partition_for_user(CONSENTING, d.partitions)), good_offset)
    assert good_source not in sources, "no letter for the good record"
    by_source = {(h["source.partition"], int(h["source.offset"])): h for h in letters}
    for source, (fault, stage, user) in sent.items():
        header = by_source[source]
        assert header["fault"] == fault, (user, header)
        assert header["stage"] == stage, (user, header)
        assert header["reason"].startswith(f"{fault}: ")
        assert len(header["reason"]) < 300

    await d.p.wait_idle()
    delivered = d.p.all_deltas()
    assert [(c, delta.change_id) for c, delta in delivered] == [(consent, good["change_id"])]
    refused = d.p.matcher.stats.refused_by_fault
    # The consenting user's body faults were decoded by the matcher, refused, not lettered.
    assert refused["undecodable"] == refused["key_mismatch"] == refused["reserved_field"] == 1
    assert refused["implausible_time"] == 2


def _partition_written(d: Door, kind: str, user: str) -> int:
    home = partition_for_user(user, d.partitions)
    if kind in ("not_framed", "bad_key"):
        return 0
    if kind == "wrong_partition":
        return (home + 1) % d.partitions
    return home


async def _consent_of(p: Pipeline, user: str) -> str:
    views = await asyncio.to_thread(p.service.list_consents, user_id=user)
    return str(views[0].consent_id)


async def test_a_change_reaches_only_its_own_users_consents(door: Door) -> None:
    """Random keys, values and consents: every delta a consent receives was keyed by, and
    says it is about, that consent's user; every mislabelled record is held back."""
    d = door
    rnd = random.Random(1414)
    users = [CONSENTING, MALLORY, NOBODY, "eve", "u_4"]
    consents = {CONSENTING: await _consent_of(d.p, CONSENTING)}
    consents[MALLORY] = await _consent_of(d.p, MALLORY)
    expected: dict[str, list[str]] = {consent: [] for consent in consents.values()}
    before = {c: len(d.p.receiver.deltas(c)) for c in consents.values()}
    for _ in range(120):
        key_user, value_user = rnd.choice(users), rnd.choice(users)
        change = _post(value_user)
        await d.send(key_user.encode(), d.value(change), partition_for_user(key_user, d.partitions))
        if key_user == value_user and key_user in consents:
            expected[consents[key_user]].append(change["change_id"])
    for consent, ids in expected.items():
        await d.p.wait_for_changes(consent, ids)
    await d.p.wait_idle()
    for user, consent in consents.items():
        got = d.p.receiver.deltas(consent)[before[consent] :]
        assert [delta.change_id for delta in got] == expected[consent], user


def _view_of_post(actor: str, owner: str) -> AccountChange:
    number = next(_numbers)
    return {
        "change_id": f"chg_ingress_{number}",
        "user_id": actor,
        "category": "activity",
        "operation": "upsert",
        "record_id": f"activity_{number}",
        "occurred_at": datetime.now(UTC),
        "record": {
            "-type": "portability.v1.Activity",
            "kind": "view",
            "post_id": f"post_of_{owner}",
            "post_owner_id": owner,
            "text": None,
            "share_target": None,
        },
        "context": {
            "actor_private": False,
            "shares_visible": True,
            "off_platform": False,
            "activity": None,
        },
        "audience": None,
    }


async def test_activity_without_the_audience_header_is_reported_and_still_delivered(
    door: Door,
) -> None:
    """The header is a hint the matcher reads instead of decoding; the view, which decodes
    everything, names each change that lacks it."""
    d = door
    missing_before = d.view.intake.stats.audience_hints_missing
    by_ada = _view_of_post(CONSENTING, NOBODY)
    by_bob = _view_of_post(NOBODY, MALLORY)
    for change in (by_ada, by_bob):  # no header: as a producer that forgot it writes them
        user = change["user_id"]
        await d.send(user.encode(), d.value(change), partition_for_user(user, d.partitions))
    consent = await _consent_of(d.p, CONSENTING)
    await d.p.wait_for_changes(consent, [by_ada["change_id"]])
    await d.p.wait_until(
        lambda: d.view.intake.stats.audience_hints_missing >= missing_before + 2,
        "the view reported both",
    )
    assert d.view.intake.stats.audience_hints_missing == missing_before + 2
