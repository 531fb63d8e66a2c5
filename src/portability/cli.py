"""The ``portability`` command: run the pipeline's parts, the embedded broker and the demo.

Every command reads the same settings (``PORTABILITY_*`` environment variables); the global
flags override them. With no configuration at all, everything runs embedded.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from portability.errors import PortabilityError
from portability.ops.logs import configure_logging
from portability.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    help="Continuous data portability: account changes to consented apps, signed and in order.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
consents_app = typer.Typer(
    help="Grant, revoke and list consents in the consent store.", no_args_is_help=True
)
apps_app = typer.Typer(help="Register and list receiving apps.", no_args_is_help=True)
app.add_typer(consents_app, name="consents")
app.add_typer(apps_app, name="apps")

console = Console(stderr=True)


class _State:
    settings: Settings


_state = _State()


@app.callback()
def _root(
    bootstrap: Annotated[
        str | None,
        typer.Option(
            "--bootstrap",
            help="Kafka bootstrap servers; default: PORTABILITY_KAFKA_BOOTSTRAP or embedded.",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Consent store URL (SQLite default, or postgresql+psycopg://...).",
        ),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")
    ] = None,
    log_json: Annotated[
        bool, typer.Option("--log-json", help="Log one JSON object per line.")
    ] = False,
) -> None:
    overrides: dict[str, Any] = {}
    if bootstrap:
        overrides["kafka_bootstrap"] = bootstrap
    if database_url:
        overrides["database_url"] = database_url
    if log_level:
        overrides["log_level"] = log_level
    if log_json:
        overrides["log_format"] = "json"
    try:
        _state.settings = Settings(**overrides)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    configure_logging(_state.settings.log_level, _state.settings.log_format)


def _run(coroutine: Any) -> Any:
    try:
        return asyncio.run(coroutine)
    except PortabilityError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


# --- broker and topics ------------------------------------------------------------------------


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 9092,
) -> None:
    """Run the embedded broker (Tansu, in memory) with the pipeline's topics until Ctrl-C."""
    from portability.ops.commands import serve_broker

    _run(serve_broker(_state.settings, port, console))


@app.command()
def topics() -> None:
    """Create the pipeline's topics on the configured Kafka (idempotent) and list them."""
    from portability.ops.commands import create_topics

    table = _run(create_topics(_state.settings))
    Console().print(table)


# --- long-running roles -----------------------------------------------------------------------


def _worker(*roles: str) -> None:
    from portability.ops.commands import run_worker

    run_worker(_state.settings, set(roles))


@app.command()
def matcher() -> None:
    """Run a matcher instance (scale out by starting more, up to the partition count)."""
    _worker("matcher")


@app.command()
def worker() -> None:
    """Run a delivery worker instance (scale out by starting more)."""
    _worker("delivery")


@app.command()
def relay() -> None:
    """Run the outbox relay: consent-store changes to the consents and apps topics."""
    _worker("relay")


@app.command()
def pipeline() -> None:
    """Run relay, matcher and delivery worker in one process."""
    _worker("relay", "matcher", "delivery")


@app.command()
def api() -> None:
    """Serve the consent API (OpenAPI at /docs) on PORTABILITY_API_HOST:PORTABILITY_API_PORT.

    With a broker configured it also runs the outbox relay and follows delivery.status.
    """
    from portability.api.server import serve_api

    _run(serve_api(_state.settings))


# --- the demo ---------------------------------------------------------------------------------


@app.command()
def demo(
    users: Annotated[int, typer.Option(min=10, help="Simulated users.")] = 2_000,
    events: Annotated[int, typer.Option(min=1, help="Account changes to produce.")] = 20_000,
    rate: Annotated[float, typer.Option(min=1, help="Changes per second.")] = 4_000.0,
    duration: Annotated[
        float | None,
        typer.Option(
            min=0.1, help="Seconds to produce for; overrides --events (events = rate x duration)."
        ),
    ] = None,
    apps: Annotated[int, typer.Option(min=1, max=20, help="Receiving apps.")] = 3,
    consent_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of users with consents.")
    ] = 0.1,
    revoke_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of consents revoked mid-stream.")
    ] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the simulation.")] = 7,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout.")
    ] = False,
) -> None:
    """Run the whole pipeline on an embedded broker with a simulated platform and app.

    Exits non-zero if any delivery failed verification, leaked after a revocation, or went
    missing.
    """
    from portability.demo import DemoOptions, run_demo

    options = DemoOptions(
        users=users,
        events=int(rate * duration) if duration else events,
        rate=rate,
        apps=apps,
        consent_fraction=consent_fraction,
        revoke_fraction=revoke_fraction,
        seed=seed,
    )
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        report = _run(run_demo(options, _state.settings, lambda p: live.update(p.table())))
    console.print(report.table())
    if as_json:
        print(json.dumps(report.as_dict(), default=str, indent=2))
    if report.failures:
        console.print("[red]FAILED:[/red] " + "; ".join(report.failures))
        raise typer.Exit(1)
    console.print("[green]OK[/green]: every expected delta arrived once, verified, in order.")


# --- apps and consents ------------------------------------------------------------------------


def _service() -> Any:
    from portability.consent import ConsentService, create_store_engine, init_schema

    engine = create_store_engine(_state.settings.resolved_database_url())
    init_schema(engine)
    return ConsentService(engine)


def _print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
        return
    table = Table()
    for column in rows[0] if rows else ["(none)"]:
        table.add_column(column)
    for row in rows:
        table.add_row(
            *(", ".join(v) if isinstance(v, (list, tuple)) else str(v) for v in row.values())
        )
    Console().print(table)


def _guarded(action: Any) -> Any:
    try:
        return action()
    except PortabilityError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error


@apps_app.command("register")
def apps_register(
    name: Annotated[str, typer.Argument(help="Display name.")],
    webhook_url: Annotated[str, typer.Argument(help="Where deliveries are POSTed.")],
    app_id: Annotated[str | None, typer.Option("--id", help="Choose the app id.")] = None,
) -> None:
    """Register an app; prints its id and webhook signing secret (shown once)."""
    view = _guarded(lambda: _service().register_app(name, webhook_url, app_id))
    print(
        json.dumps(
            {
                "app_id": view.app_id,
                "webhook_url": view.webhook_url,
                "signing_secret": view.signing_secret,
            }
        )
    )


@apps_app.command("list")
def apps_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List registered apps."""
    views = _guarded(lambda: _service().list_apps())
    _print_rows(
        [{"app_id": v.app_id, "name": v.name, "webhook_url": v.webhook_url} for v in views], as_json
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
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Grant APP_ID a consent over USER_ID's data."""
    from datetime import UTC

    expiry = (
        expires_at.replace(tzinfo=UTC) if expires_at and expires_at.tzinfo is None else expires_at
    )
    names = [c.strip() for c in categories.split(",") if c.strip()]
    view = _guarded(
        lambda: _service().grant(user_id, app_id, names, mode, expiry, user_region=region)
    )
    _print_rows([_consent_row(view)], as_json)


@consents_app.command("revoke")
def consents_revoke(
    consent_id: Annotated[str, typer.Argument(help="The consent to revoke.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Revoke a consent; the app receives nothing more once the pipeline applies it."""
    view = _guarded(lambda: _service().revoke(consent_id))
    _print_rows([_consent_row(view)], as_json)


@consents_app.command("list")
def consents_list(
    user_id: Annotated[str | None, typer.Option("--user", help="Only this user's.")] = None,
    app_id: Annotated[str | None, typer.Option("--app", help="Only this app's.")] = None,
    status: Annotated[str | None, typer.Option(help="active, revoked or expired.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List consents."""
    views = _guarded(
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
        "expires_at": view.expires_at.isoformat() if view.expires_at else "",
    }


def main() -> None:
    app(prog_name="portability")


if __name__ == "__main__":
    main()
