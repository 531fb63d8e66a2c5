"""The ``portability`` command: run the pipeline's parts, the embedded broker and the demo.

Every command reads the same settings (``PORTABILITY_*`` environment variables); the global
flags override them. With no configuration at all, everything runs embedded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from portability.errors import ConfigurationError, PortabilityError
from portability.ops.changes_command import changes_app
from portability.ops.logs import configure_logging
from portability.ops.secrets_command import secrets_app
from portability.settings import Settings
from portability.settings_errors import load_settings

if TYPE_CHECKING:
    from portability.ops.dead_letters import LetterFilter, ReplayPlan
    from portability.ops.lag import LagOptions, LagReport

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
topics_app = typer.Typer(
    help="The pipeline's topics: create them, list them, describe one.", no_args_is_help=True
)
app.add_typer(consents_app, name="consents")
app.add_typer(apps_app, name="apps")
app.add_typer(topics_app, name="topics")
dlq_app = typer.Typer(
    help="Dead letters: list them, show one, replay them to their source topics.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")
app.add_typer(changes_app, name="changes")
app.add_typer(secrets_app, name="secrets")

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
        _state.settings = load_settings(overrides, _SETTING_FLAGS)
    except ConfigurationError as error:
        _error_line(str(error))  # one line naming the setting; never its value
        raise typer.Exit(2) from None
    configure_logging(_state.settings.log_level, _state.settings.log_format)


# The global flags that set a field, named with its variable when the field is wrong.
_SETTING_FLAGS = {
    "kafka_bootstrap": "--bootstrap",
    "database_url": "--database-url",
    "log_level": "--log-level",
}


def _error_line(message: str) -> None:
    """An expected failure as one line on stderr (not wrapped, not read as markup)."""
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)


def _serve(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a long-running command until SIGINT or SIGTERM (see portability.ops.lifecycle)."""
    from portability.ops.lifecycle import run_until_signalled

    code = run_until_signalled(serve, _error_line)
    if code:
        raise typer.Exit(code)


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
    """Run the embedded broker (Tansu, in memory) with the pipeline's topics until Ctrl-C.

    SIGTERM stops it as Ctrl-C does: the Tansu process goes with it.
    """
    from portability.ops.commands import serve_broker

    _serve(lambda stop: serve_broker(_state.settings, port, console, stop))


def _run_kafka(coroutine: Any, interrupted: int = 130) -> Any:
    """Run an operator command that reads Kafka; an expected failure is one line, no traceback.

    A missing setting exits 2 (a usage error, like a bad flag); a broker that cannot be
    reached or does not answer in time, or a missing topic, exits 1; Ctrl-C exits
    ``interrupted``.
    """
    from portability.errors import ConfigurationError

    try:
        return asyncio.run(coroutine)
    except ConfigurationError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    except PortabilityError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    except KeyboardInterrupt:
        raise typer.Exit(interrupted) from None


def _bootstrap() -> str:
    from portability.ops.commands import _require_bootstrap

    bootstrap: str = _guarded(lambda: _require_bootstrap(_state.settings))
    return bootstrap


@topics_app.command("create")
def topics_create() -> None:
    """Create the pipeline's topics on the configured Kafka (idempotent) and list them."""
    from portability.ops.topics_view import create_pipeline_topics

    table = _run_kafka(create_pipeline_topics(_state.settings))
    Console().print(table)


@topics_app.command("list")
def topics_list(
    partitions: Annotated[
        bool, typer.Option("--partitions", help="Show each partition's end offset too.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (always with per-partition offsets).")
    ] = False,
) -> None:
    """List the pipeline's topics: partitions, cleanup policy, retention, end offsets.

    Exits 1 if any is missing (create them with: portability topics create).
    """
    from portability.ops.errors import MissingTopicsError
    from portability.ops.topics_view import list_topics, listing_table

    bootstrap = _bootstrap()
    listing = _run_kafka(list_topics(_state.settings, bootstrap))
    if as_json:
        print(json.dumps(listing.as_dict(), indent=2))
    else:
        Console().print(listing_table(listing, per_partition=partitions))
    if listing.missing:
        console.print(f"[red]error:[/red] {MissingTopicsError(listing.missing, bootstrap)}")
        raise typer.Exit(1)


@topics_app.command("describe")
def topics_describe(
    name: Annotated[
        str, typer.Argument(help="The topic; a pipeline topic may be named without the prefix.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One topic in full: each partition's earliest and end offsets, leader, replicas, configs."""
    from portability.ops.topics_view import describe_topic, topic_detail

    topic = _run_kafka(describe_topic(_state.settings, _bootstrap(), name))
    if as_json:
        print(json.dumps(topic.as_dict(), indent=2))
    else:
        Console().print(topic_detail(topic))


# --- consumer lag -----------------------------------------------------------------------------


@app.command()
def lag(
    groups: Annotated[
        list[str] | None,
        typer.Option(
            "--group",
            help="A consumer group to read (repeat for more); default: every pipeline group, "
            "the matcher's, the delivery worker's and the current-state view's "
            "(PORTABILITY_MATCHER_GROUP, PORTABILITY_DELIVERY_GROUP, PORTABILITY_STATE_GROUP).",
        ),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh every --interval seconds until Ctrl-C.")
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option(min=0.1, help="Seconds between samples; default 2 with --watch, else 1."),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Samples to take: default 3 (the status needs movement to judge; 1 reports "
            "at once), or, with --watch, until Ctrl-C.",
        ),
    ] = None,
    window: Annotated[
        int, typer.Option(min=2, help="How many recent samples the status is judged over.")
    ] = 10,
    stop_after: Annotated[
        float,
        typer.Option(
            "--stop-after",
            min=0.0,
            help="Seconds a lagging partition's committed offset may stand still before it "
            "is STOPPED even though the group has members.",
        ),
    ] = 300.0,
    parked_overdue: Annotated[
        float | None,
        typer.Option(
            "--parked-overdue",
            min=0.0,
            help="Seconds a parked retry holding a deliveries.retry partition may be overdue "
            "before it is a WARNING; default PORTABILITY_LAG_PARKED_OVERDUE_S (900).",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print JSON (with --watch: one document per line)."),
    ] = False,
) -> None:
    """Lag of the pipeline's consumer groups per partition, with a status for each group.

    Statuses: OK, PARKED (retries parked on purpose, not due yet), WARNING (lag growing, or
    a parked retry overdue), REWOUND (committed offset went back), STALLED (offset not
    moving, lag > 0), STOPPED (no members, or not moving for --stop-after), UNKNOWN (no such
    group). Exits by the worst group: 0 OK or PARKED, 3 WARNING, 4 REWOUND, 5 STALLED,
    6 STOPPED, 7 UNKNOWN; 1 when Kafka cannot be read, 2 on a usage error. See the
    README's "Reading lag".
    """
    from portability.ops.lag import LagOptions

    options = LagOptions(
        groups=tuple(dict.fromkeys(groups or ())),
        samples=samples if samples is not None or watch else 3,
        interval_s=interval if interval is not None else (2.0 if watch else 1.0),
        window=window,
        stop_after_s=stop_after,
        parked_overdue_s=(
            parked_overdue if parked_overdue is not None else _state.settings.lag_parked_overdue_s
        ),
    )
    if watch:
        _lag_watch(_bootstrap(), options, as_json)
    else:
        _lag_once(_bootstrap(), options, as_json)


def _lag_once(bootstrap: str, options: LagOptions, as_json: bool) -> None:
    from portability.ops.lag import sample_lag
    from portability.ops.lag_view import lag_table

    reports: list[LagReport] = []
    _run_kafka(sample_lag(_state.settings, bootstrap, options, reports.append))
    if as_json:
        print(json.dumps(reports[-1].as_dict(), indent=2))
    else:
        Console().print(lag_table(reports[-1]))
    _exit_by_status(reports[-1])


def _lag_watch(bootstrap: str, options: LagOptions, as_json: bool) -> None:
    """Ctrl-C is how a watch ends, so it exits 0; one that ends after --samples exits by its
    last report's status, as a run does."""
    from portability.ops.lag import sample_lag
    from portability.ops.lag_view import lag_table

    reports: list[LagReport] = []
    if as_json:

        def emit(report: LagReport) -> None:
            reports[:] = [report]
            print(json.dumps(report.as_dict()), flush=True)

        _run_kafka(sample_lag(_state.settings, bootstrap, options, emit), interrupted=0)
    else:
        with Live(console=Console(), auto_refresh=False) as live:

            def show(report: LagReport) -> None:
                reports[:] = [report]
                live.update(lag_table(report), refresh=True)

            _run_kafka(sample_lag(_state.settings, bootstrap, options, show), interrupted=0)
    if reports:
        _exit_by_status(reports[-1])


def _exit_by_status(report: LagReport) -> None:
    """Exit with the code of the worst group's status (0 for OK and PARKED): see
    :data:`portability.ops.lag_rules.EXIT_CODES`."""
    code = report.status.exit_code
    if code:
        raise typer.Exit(code)


# --- dead letters -----------------------------------------------------------------------------

_DlqStage = Annotated[
    Literal["matcher", "state", "delivery"] | None,
    typer.Option(
        "--stage",
        help="Only letters written by the matcher, the current-state view or the delivery worker.",
    ),
]
_DlqSourceTopic = Annotated[
    str | None,
    typer.Option(
        "--source-topic", help="Only letters from this topic (a pipeline topic without prefix)."
    ),
]
_DlqConsent = Annotated[str | None, typer.Option("--consent", help="Only this consent's letters.")]
_DlqApp = Annotated[str | None, typer.Option("--app", help="Only this app's letters.")]
_DlqSince = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only letters dead-lettered since an ISO time (UTC if no offset) or a duration "
        "ago (30m, 2h, 7d).",
    ),
]


def _dlq_filter(
    stage: str | None,
    source_topic: str | None,
    consent: str | None,
    app_id: str | None,
    since: str | None,
) -> LetterFilter:
    from portability.ops.dead_letters import LetterFilter, parse_since, resolve_topic

    try:
        moment = parse_since(since) if since else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--since") from error
    return LetterFilter(
        stage=stage,
        source_topic=resolve_topic(_state.settings, source_topic) if source_topic else None,
        consent_id=consent,
        app_id=app_id,
        since=moment,
    )


@dlq_app.command("list")
def dlq_list(
    stage: _DlqStage = None,
    source_topic: _DlqSourceTopic = None,
    consent: _DlqConsent = None,
    app_id: _DlqApp = None,
    since: _DlqSince = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Show the newest N matching letters (the counts cover all)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Dead letters, oldest first, then counts per stage and per reason.

    Exits 1 if the dead-letter topic does not exist (create it: portability topics create).
    """
    from portability.ops.dead_letters import list_letters
    from portability.ops.dlq_view import listing_view

    letter_filter = _dlq_filter(stage, source_topic, consent, app_id, since)
    listing = _run_kafka(list_letters(_state.settings, _bootstrap(), letter_filter, limit))
    if as_json:
        print(json.dumps(listing.as_dict(), indent=2))
    elif listing.matched == 0:
        matching = "" if letter_filter.empty else " matching the filters"
        console.print(f"no dead letters{matching} in {listing.topic}")
    else:
        out = Console()
        out.print(listing_view(listing, out.width))


@dlq_app.command("show")
def dlq_show(
    offset: Annotated[
        int, typer.Argument(min=0, help="The letter's offset in the dead-letter topic.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One dead letter in full: headers, reason, delivery history, key and value.

    The value is decoded with its source topic's schema when it can be; otherwise a hex and
    UTF-8 preview is shown with the decode error.
    """
    from portability.ops.dead_letters import show_letter
    from portability.ops.dlq_view import letter_detail

    letter = _run_kafka(show_letter(_state.settings, _bootstrap(), offset))
    if as_json:
        print(json.dumps(letter.detail(), indent=2))
    else:
        Console().print(letter_detail(letter))


@dlq_app.command("replay")
def dlq_replay(
    offsets: Annotated[
        list[int] | None, typer.Argument(help="Offsets of the letters to replay.")
    ] = None,
    all_matching: Annotated[
        bool, typer.Option("--all", help="Replay every letter the filters match.")
    ] = False,
    stage: _DlqStage = None,
    source_topic: _DlqSourceTopic = None,
    consent: _DlqConsent = None,
    app_id: _DlqApp = None,
    since: _DlqSince = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be replayed; change nothing.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before replaying several letters.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replay letters whose value does not decode, too.")
    ] = False,
    again: Annotated[
        bool, typer.Option("--again", help="Replay letters that were replayed before, too.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the plan and results as JSON.")
    ] = False,
) -> None:
    """Re-produce dead letters' key and value to their source topic, in their source partition.

    Each replayed record carries the header dlq.replayed_from (the letter's offset), and a
    replay marker in the dead-letter topic records where it went. Refused unless overridden:
    letters whose value does not decode (--force) and letters replayed before (--again).
    Letters named by offset are replayed all together or not at all (exit 1); with --all,
    refused letters are skipped and listed.
    """
    from portability.ops.dead_letters import Selection, plan_replay

    letter_filter = _dlq_filter(stage, source_topic, consent, app_id, since)
    if bool(offsets) == all_matching:
        raise typer.BadParameter("name the letters' offsets, or pass --all (not both)")
    if offsets and not letter_filter.empty:
        raise typer.BadParameter("the filters select letters for --all; leave them out")
    selection = Selection(tuple(offsets or ()), letter_filter, all_matching)
    bootstrap = _bootstrap()
    plan = _run_kafka(plan_replay(_state.settings, bootstrap, selection, force=force, again=again))
    _dlq_report_plan(plan, dry_run, as_json)
    if plan.blocked or dry_run or not plan.ready:
        raise typer.Exit(1 if plan.blocked else 0)
    if len(plan.ready) > 1 and not yes:
        typer.confirm(
            f"Replay {len(plan.ready)} dead letters to their source topics?", abort=True, err=True
        )
    _dlq_execute(bootstrap, plan, as_json)


def _dlq_report_plan(plan: ReplayPlan, dry_run: bool, as_json: bool) -> None:
    from portability.ops.dlq_view import plan_table

    if as_json and (plan.blocked or dry_run or not plan.ready):
        print(json.dumps({"plan": plan.as_dict(), "replayed": []}, indent=2))
    elif not as_json:
        Console().print(plan_table(plan, dry_run))
    for reason in plan.not_found:
        console.print(f"[red]error:[/red] {reason}")
    if plan.blocked:
        console.print(
            "[red]error:[/red] nothing replayed: letters named by offset are replayed all "
            "together or not at all; leave out or override (see the flags) the refused ones"
        )
    elif plan.refused:
        console.print(f"[yellow]warning:[/yellow] {len(plan.refused)} letter(s) skipped: see above")
    if dry_run and not plan.blocked:
        console.print(f"dry run: {len(plan.ready)} letter(s) would be replayed; nothing was")
    elif not plan.ready and not plan.blocked:
        console.print("nothing to replay")


def _dlq_execute(bootstrap: str, plan: ReplayPlan, as_json: bool) -> None:
    from portability.ops.dead_letters import execute_replay
    from portability.ops.dlq_view import results_table

    results = _run_kafka(execute_replay(_state.settings, bootstrap, plan.ready))
    if as_json:
        document = {"plan": plan.as_dict(), "replayed": [r.as_dict() for r in results]}
        print(json.dumps(document, indent=2))
    else:
        Console().print(results_table(results))
    if any(not r.marked and r.error is None for r in results):
        console.print(
            "[yellow]warning:[/yellow] some replays could not be recorded in the dead-letter "
            "topic: a later replay will not know they were replayed"
        )
    if any(r.error is not None for r in results):
        console.print("[red]error:[/red] some letters could not be replayed: see above")
        raise typer.Exit(1)


# --- long-running roles -----------------------------------------------------------------------


def _worker(*roles: str) -> None:
    from portability.ops.commands import serve_worker

    _serve(lambda stop: serve_worker(_state.settings, set(roles), stop))


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
def transfers() -> None:
    """Run the current-state view and build one-time transfer archives for its users.

    Scale out by starting more (up to the partition count): each instance holds some
    partitions of the view and builds the archives of those partitions' users. Archives go
    to DATA_DIR/archives, which the API process must also see (a shared volume).
    """
    _worker("transfers")


@app.command()
def pipeline() -> None:
    """Run relay, matcher, delivery worker and transfers in one process."""
    _worker("relay", "matcher", "delivery", "transfers")


@app.command()
def api() -> None:
    """Serve the consent API (OpenAPI at /docs) on PORTABILITY_API_HOST:PORTABILITY_API_PORT.

    With a broker configured it also runs the outbox relay and follows delivery.status.
    """
    from portability.api.server import serve_api

    _serve(lambda stop: serve_api(_state.settings, stop))


# --- the reference receiver -------------------------------------------------------------------


@app.command()
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
        _run(serve_receiver(options))
    except OSError as error:  # the port is taken, or the host is not this machine's
        console.print(f"[red]error:[/red] cannot listen on {host}:{port}: {error}")
        raise typer.Exit(1) from error


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
    late_grants: Annotated[
        int,
        typer.Option(
            min=0,
            help="Consents granted mid-stream with a snapshot, to users with history; each "
            "app's copy (snapshot, then deltas) is checked against the platform's state.",
        ),
    ] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the simulation.")] = 7,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout.")
    ] = False,
) -> None:
    """Run the whole pipeline on an embedded broker with a simulated platform and app.

    Exits non-zero if any delivery failed verification, leaked after a revocation, or went
    missing, or if a late grant's copy (snapshot, then deltas) differs from the platform's.
    """
    from portability.demo import DemoOptions, run_demo

    options = DemoOptions(
        users=users,
        events=int(rate * duration) if duration else events,
        rate=rate,
        apps=apps,
        consent_fraction=consent_fraction,
        revoke_fraction=revoke_fraction,
        late_grants=late_grants,
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
    snapshots = "; every snapshot copy equals the platform's state" if late_grants else ""
    console.print(
        f"[green]OK[/green]: every expected delta arrived once, verified, in order{snapshots}."
    )


# --- apps and consents ------------------------------------------------------------------------


def _service() -> Any:
    from portability.consent import ConsentService, create_store_engine, init_schema
    from portability.sealing import SecretsKeys
    from portability.webhooks.egress import EgressPolicy

    engine = create_store_engine(_state.settings.resolved_database_url())
    init_schema(engine)
    # `apps register` must meet the same webhook URL rules as the API (https in production),
    # and seal the secret with the same keys.
    return ConsentService(
        engine,
        webhook_policy=EgressPolicy.from_settings(_state.settings),
        secrets=SecretsKeys.from_settings(_state.settings),
    )


def _print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
        return
    from portability.ops.tables import record_table

    out = Console()  # its width: the terminal's, COLUMNS, or 80 on a pipe
    out.print(record_table(rows, out.width))


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
    view = _guarded(
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
        "expires_at": view.expires_at.isoformat() if view.expires_at else None,
    }


def main() -> None:
    app(prog_name="portability")


if __name__ == "__main__":
    main()
