"""``portability topics`` (create, list, describe the pipeline's topics) and ``portability
lag`` (the consumer groups' lag, with a status per group): what an operator reads of Kafka.
The logic is in :mod:`portability.ops.topics_view` and :mod:`portability.ops.lag`; this module
parses flags, prints, and exits by status.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.live import Live

from portability.cli import root

if TYPE_CHECKING:
    from portability.ops.lag import LagOptions, LagReport

__all__ = ["lag", "topics_app"]

topics_app = typer.Typer(
    help="The pipeline's topics: create them, list them, describe one.", no_args_is_help=True
)


@topics_app.command("create")
def topics_create() -> None:
    """Create the pipeline's topics on the configured Kafka (idempotent) and list them."""
    from portability.ops.topics_view import create_pipeline_topics

    table = root.run_kafka(create_pipeline_topics(root.state.settings))
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

    bootstrap = root.bootstrap()
    listing = root.run_kafka(list_topics(root.state.settings, bootstrap))
    if as_json:
        print(json.dumps(listing.as_dict(), indent=2))
    else:
        Console().print(listing_table(listing, per_partition=partitions))
    if listing.missing:
        root.console.print(f"[red]error:[/red] {MissingTopicsError(listing.missing, bootstrap)}")
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

    topic = root.run_kafka(describe_topic(root.state.settings, root.bootstrap(), name))
    if as_json:
        print(json.dumps(topic.as_dict(), indent=2))
    else:
        Console().print(topic_detail(topic))


# --- consumer lag -----------------------------------------------------------------------------


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
    6 STOPPED, 7 UNKNOWN; 1 when Kafka cannot be read, 2 on a usage error. See
    "Reading lag" in docs/operations.md.
    """
    from portability.ops.lag import LagOptions

    options = LagOptions(
        groups=tuple(dict.fromkeys(groups or ())),
        samples=samples if samples is not None or watch else 3,
        interval_s=interval if interval is not None else (2.0 if watch else 1.0),
        window=window,
        stop_after_s=stop_after,
        parked_overdue_s=(
            parked_overdue
            if parked_overdue is not None
            else root.state.settings.lag_parked_overdue_s
        ),
    )
    if watch:
        _lag_watch(root.bootstrap(), options, as_json)
    else:
        _lag_once(root.bootstrap(), options, as_json)


def _lag_once(bootstrap: str, options: LagOptions, as_json: bool) -> None:
    from portability.ops.lag import sample_lag
    from portability.ops.lag_view import lag_table

    reports: list[LagReport] = []
    root.run_kafka(sample_lag(root.state.settings, bootstrap, options, reports.append))
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

        root.run_kafka(sample_lag(root.state.settings, bootstrap, options, emit), interrupted=0)
    else:
        with Live(console=Console(), auto_refresh=False) as live:

            def show(report: LagReport) -> None:
                reports[:] = [report]
                live.update(lag_table(report), refresh=True)

            root.run_kafka(sample_lag(root.state.settings, bootstrap, options, show), interrupted=0)
    if reports:
        _exit_by_status(reports[-1])


def _exit_by_status(report: LagReport) -> None:
    """Exit with the code of the worst group's status (0 for OK and PARKED): see
    :data:`portability.ops.lag_rules.EXIT_CODES`."""
    code = report.status.exit_code
    if code:
        raise typer.Exit(code)
