"""The outbox relay across a consent store outage: it waits, logs, and resumes; nothing lost.

On a PostgreSQL server of the test's own (see ``private_postgres``), stopped at once while the
relay runs against the real broker: the relay's rounds fail and are logged with a growing
delay, the loop does not end; once the server is back, what was granted before and after the
outage is on the consents topic, each once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import Engine

from consent.test_consent_outbox import NOW, USERS, read_topic, unpublished
from portability.consent import ConsentService, OutboxRelay, create_store_engine, init_schema
from portability.runtime import Runtime
from portability.wire import SchemaName
from private_postgres import PrivatePostgres, private_postgres_or_skip
from waiting import wait_until


@dataclass(frozen=True)
class _Store:
    server: PrivatePostgres
    engine: Engine
    service: ConsentService
    app_id: str


@contextlib.contextmanager
def _store_with_an_app() -> Iterator[_Store]:
    """A consent store on a server of the test's own, with one app registered."""
    with private_postgres_or_skip() as server:
        engine = create_store_engine(server.url)
        try:
            init_schema(engine)
            service = ConsentService(engine)
            app = service.register_app("Example Recipient", "https://recipient.example/hooks")
            yield _Store(server, engine, service, app.app_id)
        finally:
            engine.dispose()


async def test_the_relay_waits_out_a_store_outage_and_publishes_what_follows(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    with _store_with_an_app() as store:
        before = store.service.grant(USERS[0], store.app_id, ["post"], now=NOW)
        stop = asyncio.Event()
        async with OutboxRelay(store.engine, runtime) as relay:
            task = asyncio.create_task(relay.run(stop, poll_interval_s=0.01, max_backoff_s=0.2))
            await wait_until(lambda: not unpublished(store.engine), "the first grant published")

            store.server.stop()
            await wait_until(lambda: len(_failed_rounds(caplog)) >= 3, "three failed rounds logged")
            assert not task.done()  # the outage did not end the loop

            store.server.start()
            after = await asyncio.to_thread(
                store.service.grant, USERS[1], store.app_id, ["post"], now=NOW
            )
            await wait_until(lambda: not unpublished(store.engine), "the second grant published")
            stop.set()
            await asyncio.wait_for(task, timeout=10)

    reads = await read_topic(
        runtime, runtime.topics.consents, runtime.settings.partitions, SchemaName.CONSENT, 2
    )
    assert sorted(read.record["consent_id"] for read in reads if read.record) == sorted(
        [before.consent_id, after.consent_id]
    )
    assert len(reads) == 2  # each once
    assert "cannot" in _failed_rounds(caplog)[0]


async def test_a_change_written_after_the_outage_is_published_without_waiting_out_the_backoff(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the store is back, a change written in the relay's process (a revocation the API
    just answered) wakes the relay: it does not wait out the delay its failed rounds grew."""
    with _store_with_an_app() as store:
        stop = asyncio.Event()
        async with OutboxRelay(store.engine, runtime) as relay:
            # A failed round is retried after 4 s (twice the 2 s poll).
            task = asyncio.create_task(relay.run(stop, poll_interval_s=2.0, max_backoff_s=60))
            await wait_until(lambda: not unpublished(store.engine), "the app published")
            store.server.stop()
            await wait_until(lambda: len(_failed_rounds(caplog)) >= 1, "a failed round")
            store.server.start()
            granted = await asyncio.to_thread(
                store.service.grant, USERS[0], store.app_id, ["post"], now=NOW
            )
            await wait_until(
                lambda: not unpublished(store.engine), "the grant published", timeout_s=1.5
            )
            assert len(_failed_rounds(caplog)) == 1  # no round failed since: not retried
            stop.set()
            await asyncio.wait_for(task, timeout=10)

    reads = await read_topic(
        runtime, runtime.topics.consents, runtime.settings.partitions, SchemaName.CONSENT, 1
    )
    assert [read.record["consent_id"] for read in reads if read.record] == [granted.consent_id]


def _failed_rounds(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("outbox relay:")]
