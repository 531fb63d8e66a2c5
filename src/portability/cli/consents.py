"""``portability apps`` and ``portability consents``: register apps, grant, revoke and list
consents, straight on the consent store (:class:`portability.consent.ConsentService`, with the
same webhook URL rules and secret sealing as the API).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console

from portability.cli import root

__all__ = ["apps_app", "consents_app"]

consents_app = typer.Typer(
    help="Grant, revoke and list consents in the consent store.", no_args_is_help=True
)
apps_app = typer.Typer(help="Register and list receiving apps.", no_args_is_help=True)


def _service() -> Any:
    from portability.consent import ConsentService, create_store_engine, init_schema
    from portability.sealing import SecretsKeys
    from portability.webhooks.egress import EgressPolicy

    engine = create_store_engine(root.state.settings.resolved_database_url())
    init_schema(engine)
    # `apps register` must meet the same webhook URL rules as the API (https in production),
    # and seal the secret with the same keys.
    return ConsentService(
        engine,
        webhook_policy=EgressPolicy.from_settings(root.state.settings),
        secrets=SecretsKeys.from_settings(root.state.settings),
    )


def _print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
        return
    from portability.ops.tables import record_table

    out = Console()  # its width: the terminal's, COLUMNS, or 80 on a pipe
    out.print(record_table(rows, out.width))


@apps_app.command("register")
def apps_register(
    name: Annotated[str, typer.Argument(help="Display name.")],
    webhook_url: Annotated[
        str,
        typer.Argument(help="Where deliveries are POSTed (optional with --delivery-mode poll)."),
    ] = "",
    app_id: Annotated[str | None, typer.Option("--id", help="Choose the app id.")] = None,
    delivery_mode: Annotated[
        str,
        typer.Option(
            help="webhook (events POSTed to WEBHOOK_URL) or poll (the app reads them from "
            "GET /v1/apps/{app_id}/feed)."
        ),
    ] = "webhook",
) -> None:
    """Register an app; prints its id, delivery mode and webhook signing secret (shown once)."""
    view = root.guarded(
        lambda: _service().register_app(name, webhook_url, app_id, delivery_mode=delivery_mode)
    )
    print(
        json.dumps(
            {
                "app_id": view.app_id,
                "webhook_url": view.webhook_url,
                "delivery_mode": view.delivery_mode,
                "signing_secret": view.signing_secret,
            }
        )
    )


@apps_app.command("list")
def apps_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List registered apps."""
    views = root.guarded(lambda: _service().list_apps())
    _print_rows(
        [
            {
                "app_id": v.app_id,
                "name": v.name,
                "delivery_mode": v.delivery_mode,
                "webhook_url": v.webhook_url,
            }
            for v in views
        ],
        as_json,
    )


@consents_app.command("grant")
def consents_grant(
    user_id: Annotated[str, typer.Argument(help="The data subject.")],
    app_id: Annotated[str, typer.Argument(help="The receiving app.")],
    categories: Annotated[
        str,
        typer.Option(
            help="Comma-separated: profile, post, follow, activity, direct_message, or all."
        ),
    ] = "all",
    mode: Annotated[str, typer.Option(help="ongoing or one_time.")] = "ongoing",
    expires_at: Annotated[
        datetime | None,
        typer.Option(
            help="ISO time the consent ends (UTC if no offset).",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"],
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            help="The user's country (ISO 3166-1 alpha-2); only EEA and UK users qualify."
        ),
    ] = None,
    snapshot: Annotated[
        bool | None,
        typer.Option(
            "--snapshot/--no-snapshot",
            help="Send the user's current records first (portability.snapshot pages, built "
            "by the transfers role), then the deltas. Default: on for ongoing consents.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Grant APP_ID a consent over USER_ID's data."""
    from datetime import UTC

    expiry = (
        expires_at.replace(tzinfo=UTC) if expires_at and expires_at.tzinfo is None else expires_at
    )
    names = [c.strip() for c in categories.split(",") if c.strip()]
    initial_snapshot = mode == "ongoing" if snapshot is None else snapshot
    view = root.guarded(
        lambda: _service().grant(
            user_id,
            app_id,
            names,
            mode,
            expiry,
            user_region=region,
            initial_snapshot=initial_snapshot,
        )
    )
    _print_rows([_consent_row(view)], as_json)


@consents_app.command("revoke")
def consents_revoke(
    consent_id: Annotated[str, typer.Argument(help="The consent to revoke.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Revoke a consent; the app receives nothing more once the pipeline applies it."""
    view = root.guarded(lambda: _service().revoke(consent_id))
    _print_rows([_consent_row(view)], as_json)


@consents_app.command("list")
def consents_list(
    user_id: Annotated[str | None, typer.Option("--user", help="Only this user's.")] = None,
    app_id: Annotated[str | None, typer.Option("--app", help="Only this app's.")] = None,
    status: Annotated[str | None, typer.Option(help="active, revoked or expired.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List consents."""
    views = root.guarded(
        lambda: _service().list_consents(user_id=user_id, app_id=app_id, status=status)
    )
    _print_rows([_consent_row(v) for v in views], as_json)


def _consent_row(view: Any) -> dict[str, Any]:
    return {
        "consent_id": view.consent_id,
        "user_id": view.user_id,
        "app_id": view.app_id,
        "categories": list(view.categories),
        "mode": view.mode,
        "status": view.status,
        "granted_at": view.granted_at.isoformat(),
        "expires_at": view.expires_at.isoformat() if view.expires_at else None,
    }
