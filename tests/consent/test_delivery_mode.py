"""Delivery modes in the store: a poll app needs no webhook URL; switching is checked."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from portability.consent import AppView, ConsentService, InvalidRequestError, NotFoundError
from portability.consent.models import OutboxEvent


def published(engine: Engine, app_id: str) -> list[dict[str, object]]:
    """The app's records in the outbox, oldest first."""
    with Session(engine) as session:
        query = select(OutboxEvent).where(col(OutboxEvent.key) == app_id)
        rows = session.exec(query.order_by(col(OutboxEvent.id))).all()
        return [json.loads(row.payload) for row in rows]


def test_a_poll_app_registers_without_a_webhook_url(
    service: ConsentService, engine: Engine
) -> None:
    app = service.register_app("Poller", "", "app_poll", delivery_mode="poll")

    assert (app.delivery_mode, app.webhook_url) == ("poll", "")
    assert service.get_app("app_poll") == app
    [record] = published(engine, "app_poll")
    assert (record["delivery_mode"], record["webhook_url"]) == ("poll", "")
    assert app.to_sending_record()["delivery_mode"] == "poll"


def test_a_poll_app_may_keep_a_webhook_url_but_only_an_allowed_one(
    service: ConsentService,
) -> None:
    kept = service.register_app("Poller", "https://p.example/h", delivery_mode="poll")
    assert kept.webhook_url == "https://p.example/h"

    with pytest.raises(InvalidRequestError, match="webhook_url"):
        service.register_app("Poller", "ftp://p.example/h", delivery_mode="poll")


def test_apps_are_webhook_apps_by_default(app: AppView, engine: Engine) -> None:
    assert app.delivery_mode == "webhook"
    [record] = published(engine, app.app_id)
    assert record["delivery_mode"] == "webhook"


@pytest.mark.parametrize("url", ["", "not a url"])
def test_a_webhook_app_needs_a_url(service: ConsentService, url: str) -> None:
    with pytest.raises(InvalidRequestError, match="webhook_url"):
        service.register_app("Hooked", url)


def test_an_unknown_mode_is_refused_with_the_modes_to_use(service: ConsentService) -> None:
    with pytest.raises(InvalidRequestError, match=r"use webhook .* or poll"):
        service.apply_for_app("X", "", "Backups.", ["post"], delivery_mode="push")


def test_switching_to_poll_keeps_the_url_and_publishes(
    service: ConsentService, app: AppView, engine: Engine
) -> None:
    switched = service.set_delivery_mode(app.app_id, "poll")

    assert (switched.delivery_mode, switched.webhook_url) == ("poll", app.webhook_url)
    assert switched.version > app.version
    assert published(engine, app.app_id)[-1]["delivery_mode"] == "poll"


def test_switching_to_webhook_needs_a_url(service: ConsentService, engine: Engine) -> None:
    service.register_app("Poller", "", "app_poll", delivery_mode="poll")

    with pytest.raises(InvalidRequestError, match="webhook_url is required"):
        service.set_delivery_mode("app_poll", "webhook")
    assert service.get_app("app_poll").delivery_mode == "poll"  # nothing changed

    switched = service.set_delivery_mode("app_poll", "webhook", "https://p.example/hooks")
    assert (switched.delivery_mode, switched.webhook_url) == ("webhook", "https://p.example/hooks")
    assert published(engine, "app_poll")[-1]["webhook_url"] == "https://p.example/hooks"


def test_switching_to_the_mode_the_app_has_changes_nothing(
    service: ConsentService, app: AppView, engine: Engine
) -> None:
    again = service.set_delivery_mode(app.app_id, "webhook")

    assert again == app
    assert len(published(engine, app.app_id)) == 1


def test_switching_an_unknown_app_is_not_found(service: ConsentService) -> None:
    with pytest.raises(NotFoundError):
        service.set_delivery_mode("app_nope", "poll")
