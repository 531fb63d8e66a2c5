"""``portability demo``: the whole pipeline on an embedded broker with a simulated platform
and app (:mod:`portability.demo`), shown live, judged at the end.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.live import Live

from portability.cli import root

__all__ = ["demo"]


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
    with Live(console=root.console, refresh_per_second=4, transient=True) as live:
        report = root.run(run_demo(options, root.state.settings, lambda p: live.update(p.table())))
    root.console.print(report.table())
    if as_json:
        print(json.dumps(report.as_dict(), default=str, indent=2))
    if report.failures:
        root.console.print("[red]FAILED:[/red] " + "; ".join(report.failures))
        raise typer.Exit(1)
    snapshots = "; every snapshot copy equals the platform's state" if late_grants else ""
    root.console.print(
        f"[green]OK[/green]: every expected delta arrived once, verified, in order{snapshots}."
    )
