"""``portability dlq``: list dead letters, show one, redeliver them to their source topics.
The logic is in :mod:`portability.ops.dead_letters` and the views in
:mod:`portability.ops.dead_letters.view`; this module parses flags, asks before a
redelivery, and prints. ``dlq replay`` is the command's first name, kept as a hidden alias.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console

from portability.cli import root

if TYPE_CHECKING:
    from portability.ops.dead_letters import LetterFilter, RedeliveryPlan

__all__ = ["dlq_app"]

dlq_app = typer.Typer(
    help="Dead letters: list them, show one, redeliver them to their source topics.",
    no_args_is_help=True,
)


_DlqStage = Annotated[
    Literal["matcher", "state", "delivery", "messages"] | None,
    typer.Option(
        "--stage",
        help="Only letters written by the matcher, the current-state view, the delivery worker "
        "or the message log's writer.",
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
        source_topic=resolve_topic(root.state.settings, source_topic) if source_topic else None,
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
    from portability.ops.dead_letters.view import listing_view

    letter_filter = _dlq_filter(stage, source_topic, consent, app_id, since)
    listing = root.run_kafka(
        list_letters(root.state.settings, root.bootstrap(), letter_filter, limit)
    )
    if as_json:
        print(json.dumps(listing.as_dict(), indent=2))
    elif listing.matched == 0:
        matching = "" if letter_filter.empty else " matching the filters"
        root.console.print(f"no dead letters{matching} in {listing.topic}")
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
    from portability.ops.dead_letters.view import letter_detail

    letter = root.run_kafka(show_letter(root.state.settings, root.bootstrap(), offset))
    if as_json:
        print(json.dumps(letter.detail(), indent=2))
    else:
        Console().print(letter_detail(letter))


@dlq_app.command("redeliver")
def dlq_redeliver(
    offsets: Annotated[
        list[int] | None, typer.Argument(help="Offsets of the letters to redeliver.")
    ] = None,
    all_matching: Annotated[
        bool, typer.Option("--all", help="Redeliver every letter the filters match.")
    ] = False,
    stage: _DlqStage = None,
    source_topic: _DlqSourceTopic = None,
    consent: _DlqConsent = None,
    app_id: _DlqApp = None,
    since: _DlqSince = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be redelivered; change nothing.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before redelivering several letters.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Redeliver letters whose value does not decode, too.")
    ] = False,
    again: Annotated[
        bool, typer.Option("--again", help="Redeliver letters redelivered before, too.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the plan and results as JSON.")
    ] = False,
) -> None:
    """Re-produce dead letters' key and value to their source topic, in their source partition.

    Each redelivered record carries the header dlq.replayed_from (the letter's offset), and a
    marker in the dead-letter topic records where it went. Refused unless overridden: letters
    whose value does not decode (--force) and letters redelivered before (--again). Letters
    named by offset are redelivered all together or not at all (exit 1); with --all, refused
    letters are skipped and listed. `dlq replay` is the same command under its first name.
    """
    from portability.ops.dead_letters import Selection, plan_redelivery

    letter_filter = _dlq_filter(stage, source_topic, consent, app_id, since)
    if bool(offsets) == all_matching:
        raise typer.BadParameter("name the letters' offsets, or pass --all (not both)")
    if offsets and not letter_filter.empty:
        raise typer.BadParameter("the filters select letters for --all; leave them out")
    selection = Selection(tuple(offsets or ()), letter_filter, all_matching)
    bootstrap = root.bootstrap()
    plan = root.run_kafka(
        plan_redelivery(root.state.settings, bootstrap, selection, force=force, again=again)
    )
    _dlq_report_plan(plan, dry_run, as_json)
    if plan.blocked or dry_run or not plan.ready:
        raise typer.Exit(1 if plan.blocked else 0)
    if len(plan.ready) > 1 and not yes:
        typer.confirm(
            f"Replay {len(plan.ready)} dead letters to their source topics?", abort=True, err=True
        )
    _dlq_execute(bootstrap, plan, as_json)


# The command's first name; the word "replay" now means replaying deltas to an app.
dlq_app.command("replay", hidden=True)(dlq_redeliver)


def _dlq_report_plan(plan: RedeliveryPlan, dry_run: bool, as_json: bool) -> None:
    from portability.ops.dead_letters.view import plan_table

    if as_json and (plan.blocked or dry_run or not plan.ready):
        print(json.dumps({"plan": plan.as_dict(), "replayed": []}, indent=2))
    elif not as_json:
        Console().print(plan_table(plan, dry_run))
    for reason in plan.not_found:
        root.console.print(f"[red]error:[/red] {reason}")
    if plan.blocked:
        root.console.print(
            "[red]error:[/red] nothing replayed: letters named by offset are replayed all "
            "together or not at all; leave out or override (see the flags) the refused ones"
        )
    elif plan.refused:
        root.console.print(
            f"[yellow]warning:[/yellow] {len(plan.refused)} letter(s) skipped: see above"
        )
    if dry_run and not plan.blocked:
        root.console.print(f"dry run: {len(plan.ready)} letter(s) would be replayed; nothing was")
    elif not plan.ready and not plan.blocked:
        root.console.print("nothing to replay")


def _dlq_execute(bootstrap: str, plan: RedeliveryPlan, as_json: bool) -> None:
    from portability.ops.dead_letters import execute_redelivery
    from portability.ops.dead_letters.view import results_table

    results = root.run_kafka(execute_redelivery(root.state.settings, bootstrap, plan.ready))
    if as_json:
        document = {"plan": plan.as_dict(), "replayed": [r.as_dict() for r in results]}
        print(json.dumps(document, indent=2))
    else:
        Console().print(results_table(results))
    if any(not r.marked and r.error is None for r in results):
        root.console.print(
            "[yellow]warning:[/yellow] some replays could not be recorded in the dead-letter "
            "topic: a later replay will not know they were replayed"
        )
    if any(r.error is not None for r in results):
        root.console.print("[red]error:[/red] some letters could not be replayed: see above")
        raise typer.Exit(1)
