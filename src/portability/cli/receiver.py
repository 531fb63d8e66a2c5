"""``portability receiver``: run the reference receiver (:mod:`portability.receiver`), what an
app's webhook endpoint must do, working. This module checks the flags and reports a port it
cannot listen on.
"""

from __future__ import annotations

from typing import Annotated

import typer

from portability.cli import root

__all__ = ["receiver"]


def receiver(
    app_id: Annotated[str, typer.Option("--app-id", help="Your app's id (the webhook path).")],
    secret: Annotated[
        str,
        typer.Option(
            "--secret",
            envvar="RECEIVER_SECRET",
            help="Your app's whsec_ signing secret (better from the environment).",
        ),
    ],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on; 0 picks a free one.")
    ] = 9000,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            envvar="RECEIVER_API_URL",
            help="The consent API's base URL: gaps that do not fill are replayed from it.",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="RECEIVER_API_KEY",
            help="Your app's pk_ API key, to ask the API for replays.",
        ),
    ] = None,
    tolerance_s: Annotated[
        float,
        typer.Option(
            "--tolerance-s",
            min=1.0,
            max=300.0,
            help="Refuse a webhook-timestamp further than this from now (5 min at most).",
        ),
    ] = 300.0,
    gap_grace_s: Annotated[
        float,
        typer.Option(
            "--gap-grace-s", min=0.0, help="How long a gap may stay open before a replay."
        ),
    ] = 2.0,
    print_events: Annotated[
        bool, typer.Option("--print-events", help="Print each verified body on stdout.")
    ] = False,
    stats_interval_s: Annotated[
        float, typer.Option("--stats-interval-s", min=0.1, help="Seconds between counter lines.")
    ] = 30.0,
) -> None:
    """Run the reference receiver: what your app's webhook endpoint must do, working.

    Register your app with webhook_url http://HOST:PORT/webhooks (or .../webhooks/APP_ID),
    then start this with the app id and secret it got. Every request is verified with the
    standardwebhooks package (signature, timestamp within --tolerance-s), deltas are
    deduplicated by id and their sequence checked per consent; a gap that does not fill
    within --gap-grace-s is replayed through the API (with --api-url and --api-key). Each
    verified event is logged as one line, the counters every --stats-interval-s and on exit
    (Ctrl-C). Use it to try the pipeline before writing your own endpoint, or as the model
    for it (portability.receiver.ReceivingApp).
    """
    from portability.receiver.command import ReceiverOptions, serve_receiver

    try:
        options = ReceiverOptions(
            app_id=app_id,
            secret=secret,
            host=host,
            port=port,
            api_url=api_url,
            api_key=api_key,
            tolerance_s=tolerance_s,
            gap_grace_s=gap_grace_s,
            print_events=print_events,
            stats_interval_s=stats_interval_s,
        )
        options.recovery()  # checks the API URL
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    try:
        root.run(serve_receiver(options))
    except OSError as error:  # the port is taken, or the host is not this machine's
        root.console.print(f"[red]error:[/red] cannot listen on {host}:{port}: {error}")
        raise typer.Exit(1) from error
