"""``portability secrets``: the keys that seal apps' signing secrets (:mod:`portability.sealing`).

- ``new-key --file PATH`` makes a key, in a new file readable by its owner only; it never
  prints key material.
- ``status`` names the configured keys (ids only) and counts the live secrets each one sealed
  in the consent store.
- ``reencrypt`` seals every secret with the first key (clear ones too) and publishes each
  changed app again, the step of a key rotation after which the old key can go.

Settings and error handling come from :mod:`portability.cli.root`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from portability.cli import root

__all__ = ["secrets_app"]

secrets_app = typer.Typer(
    help="Keys sealing apps' webhook signing secrets (PORTABILITY_SECRETS_KEY): make one, see "
    "which keys sealed the stored secrets, re-seal them with the first key.",
    no_args_is_help=True,
)


@secrets_app.command("new-key")
def new_key(
    file: Annotated[
        Path,
        typer.Option(
            "--file",
            help="Where to write the key (<id>:<base64url>); must not exist. Mode 0600.",
        ),
    ],
    key_id: Annotated[
        str | None,
        typer.Option("--key-id", help="The key's id (default k and 6 random hex digits)."),
    ] = None,
) -> None:
    """Write a new random AES-256 key to a new file (owner-only); print its id, never the key.

    Put the file's content first in PORTABILITY_SECRETS_KEY to seal with it, after the keys
    already in use, which keep opening what they sealed (see "Rotating the key" in
    docs/webhooks.md).
    """
    from portability.sealing import SecretsKey, write_key_file

    def write() -> str:
        key = SecretsKey.generate(key_id)
        try:
            write_key_file(file, [key])
        except FileExistsError:
            raise typer.BadParameter(f"{file} exists: a key is never overwritten") from None
        return key.key_id

    written = root.guarded(write)
    root.console.print(
        f"wrote key [bold]{written}[/bold] to {file} (mode 0600); to seal with it set "
        f'PORTABILITY_SECRETS_KEY="$(cat {file}),<keys in use>" on the API and the workers'
    )


@secrets_app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The configured keys (ids; the first seals) and how many stored secrets each sealed."""
    from portability.consent import create_store_engine, init_schema
    from portability.consent.resealing import sealing_census
    from portability.sealing import SecretsKeys

    def read() -> dict[str, Any]:
        keys = SecretsKeys.from_settings(root.state.settings)
        engine = create_store_engine(root.state.settings.resolved_database_url())
        try:
            init_schema(engine)
            census = sealing_census(engine)
        finally:
            engine.dispose()
        return {
            "source": keys.source,
            "sealing_key": keys.sealing_key_id,
            "keys": list(keys.key_ids),
            "secrets_by_key": dict(sorted(census.items())),
            "unknown_keys": sorted(set(census) - set(keys.key_ids) - {"clear"}),
        }

    report = root.guarded(read)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    keys = ", ".join(report["keys"])
    print(f"keys ({report['source']}): {keys}; seals with {report['sealing_key']}")
    for key_id, count in report["secrets_by_key"].items():
        print(f"  {key_id}: {count} live secret(s)")
    if report["unknown_keys"]:
        print(f"  not configured, cannot be opened: {', '.join(report['unknown_keys'])}")


@secrets_app.command("reencrypt")
def reencrypt(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Seal every stored signing secret with the first key; publish each app that changed.

    Secrets in the clear (a store from before sealing) are sealed; those another key sealed
    are opened and sealed again. Each changed app goes to the outbox, so that the relay (the
    API process) publishes its record, sealed anew, on the apps topic. Exits 1 if any app's
    secrets could not be opened (a key missing from PORTABILITY_SECRETS_KEY): those are named
    and left as they are.
    """
    from portability.consent import create_store_engine, init_schema
    from portability.consent.resealing import SealReport, seal_stored_secrets
    from portability.sealing import SecretsKeys

    def run() -> SealReport:
        keys = SecretsKeys.from_settings(root.state.settings)
        engine = create_store_engine(root.state.settings.resolved_database_url())
        try:
            init_schema(engine)
            return seal_stored_secrets(engine, keys, renew=True)
        finally:
            engine.dispose()

    report: SealReport = root.guarded(run)
    if as_json:
        document = {
            "sealing_key": report.sealed_key_id,
            "changed": report.changed,
            "unchanged": report.unchanged,
            "failed": [{"app_id": app_id, "reason": why} for app_id, why in report.failed],
        }
        print(json.dumps(document, indent=2))
    else:
        print(
            f"sealed with {report.sealed_key_id}: {len(report.changed)} app(s) rewritten and "
            f"published again, {report.unchanged} already so, {len(report.failed)} failed"
        )
        for app_id, why in report.failed:
            print(f"  {app_id}: {why}")
    if report.failed:
        raise typer.Exit(1)
