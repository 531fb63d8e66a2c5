"""The transfer builder with real parts: a running view, the consent store, archives on disk.

A one-time consent's transfer goes pending → in progress → ready with the user's current
records of the granted categories (deleted ones absent), the app's download.ready event in
the outbox, and the archive's checksum in the store; a transfer of a user held elsewhere
waits; a failure is recorded with its reason.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from portability.consent import ConsentService, create_store_engine, init_schema
from portability.consent.models import OutboxEvent
from portability.consent.transfer_requests import TransferStore
from portability.runtime import Runtime
from portability.simulation import ChangeFactory
from portability.transfers.builder import TransferBuilder
from portability.wire.records import CATEGORIES
from portability.wire.topics import partition_for_user

from .helpers import expected_state, of_user, publish, running_view

APP = "app-archive"


@pytest.fixture
def engine(runtime: Runtime) -> Iterator[Engine]:
    created = create_store_engine(runtime.settings.resolved_database_url())
    init_schema(created)
    yield created
    created.dispose()


def user_in(runtime: Runtime, partition: int, prefix: str = "archive-user") -> str:
    partitions = runtime.settings.partitions
    return next(
        f"{prefix}-{i}"
        for i in range(1000)
        if partition_for_user(f"{prefix}-{i}", partitions) == partition
    )


def one_time_transfer(engine: Engine, user: str, categories: list[str]) -> str:
    service = ConsentService(engine)
    if not any(app.app_id == APP for app in service.list_apps()):
        service.register_app("Archive app", "https://archive.example/hook", APP)
    consent = service.grant(user, APP, categories, mode="one_time")
    return TransferStore(engine).request(consent.consent_id).transfer_id


async def test_transfer_becomes_a_ready_archive_of_the_users_current_records(
    runtime: Runtime, engine: Engine
) -> None:
    user = user_in(runtime, 1)
    factory = ChangeFactory([user], seed=21)
    changes = [factory.random_change(user, c) for _ in range(8) for c in CATEGORIES]
    await publish(runtime, changes)
    transfer_id = one_time_transfer(engine, user, ["post", "follow"])

    async with running_view(runtime, [1]) as view:
        builder = TransferBuilder(runtime, engine, view)
        await view.wait_applied(1, len(changes), 30)
        assert await builder.build_pending() == 1

    transfer = TransferStore(engine).get(transfer_id)
    assert transfer.state == "ready", transfer.failure_reason
    path = runtime.settings.archive_dir() / (transfer.archive_file or "")
    assert transfer.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert transfer.size_bytes == path.stat().st_size
    assert transfer.position == f"1:{len(changes)}"
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        shipped = {
            (user, category, item["record_id"])
            for category in ("post", "follow")
            for item in json.loads(archive.read(f"{category}.json"))
        }
    want = of_user(expected_state(changes), user, ["post", "follow"])
    assert manifest["categories"] == ["post", "follow"]
    assert sum(manifest["record_counts"].values()) == len(want) == transfer.record_count
    assert shipped == set(want)  # current records only: deleted ones are absent
    with Session(engine) as session:
        query = (
            select(OutboxEvent)
            .where(col(OutboxEvent.kind) == "notification")
            .order_by(col(OutboxEvent.id))
        )
        event, removed = session.exec(query).all()
    ready = json.loads(event.payload)
    assert ready["event_type"] == "portability.download.ready"
    assert ready["attributes"]["sha256"] == transfer.sha256
    # The one-time consent is used up by its archive: the app hears of that next.
    assert json.loads(removed.payload)["attributes"] == {"reason": "completed"}


async def test_users_held_elsewhere_wait_and_failures_say_why(
    runtime: Runtime, engine: Engine
) -> None:
    here, elsewhere = user_in(runtime, 1), user_in(runtime, 2)
    waiting = one_time_transfer(engine, elsewhere, ["post"])
    failing = one_time_transfer(engine, here, ["post"])

    async with running_view(runtime, [1]) as view:
        builder = TransferBuilder(runtime, engine, view)
        await view.wait_applied(1, 0, 30)
        runtime.settings.archive_dir().parent.mkdir(parents=True, exist_ok=True)
        runtime.settings.archive_dir().write_text("not a folder")  # the archive cannot be written
        assert await builder.build_pending() == 1

    store = TransferStore(engine)
    assert store.get(waiting).state == "pending"  # its partition is another builder's
    failed = store.get(failing)
    assert failed.state == "failed"
    assert failed.failure_reason
    assert builder.stats.failed == 1
