"""The policy in force in this process, for code that is not handed one (snapshots, archives).

The matcher holds the process's :class:`~portability.privacy.loader.PolicySource` of its file
(:func:`policy_source`) and polls it between batches; everything else that ships records
calls :func:`current_policy` (or :func:`apply`) each time it starts shipping, and stamps
``policy.version`` on what it ships (an archive's manifest, a snapshot's deliveries)::

    policy = current_policy(settings)
    for category, record in records_of_the_user:
        shipped = apply(category, record, granted=consent.categories, policy=policy)
        if shipped is not None:
            write(category, shipped)
    manifest["policy_version"] = policy.version

Use one ``policy`` object for one archive or snapshot, so that all of it follows one version.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from portability.privacy import engine
from portability.privacy.loader import PolicySource, default_policy_path
from portability.privacy.model import PrivacyPolicy
from portability.settings import Settings
from portability.wire.records import ChangeContext

__all__ = ["apply", "current_policy", "policy_source", "reset_current_policy"]

_lock = threading.Lock()
# One source per policy file; the first one made is the process's (``settings`` None).
_sources: dict[Path, PolicySource] = {}


def policy_source(settings: Settings | None = None) -> PolicySource:
    """The process's source of ``settings``' policy file, created on first use.

    Everything in a process that reads one file shares its source (the matcher and the
    transfers role of ``portability pipeline``): the file is checked, and a new version or a
    refused edit logged, once. Without ``settings``, the first source made (a process runs
    under one policy file; :func:`reset_current_policy` starts over, for tests), or that of
    ``Settings()`` if there is none yet.

    Raises:
        PolicyError: The policy file cannot be loaded.
    """
    with _lock:
        if settings is None and _sources:
            return next(iter(_sources.values()))
        configured = settings if settings is not None else Settings()
        path = configured.privacy_policy_path or default_policy_path()
        key = path.resolve()
        source = _sources.get(key)
        if source is None:
            source = _sources[key] = PolicySource(path, configured.privacy_policy_reload_s)
        return source


def current_policy(settings: Settings | None = None) -> PrivacyPolicy:
    """The policy in force now, reloading the file if it changed to a new version."""
    return policy_source(settings).poll()


def apply(
    category: str,
    record: Mapping[str, Any] | None,
    *,
    granted: Collection[str] | None = None,
    context: ChangeContext | None = None,
    policy: PrivacyPolicy | None = None,
) -> dict[str, Any] | None:
    """One record of ``category`` as a recipient may receive it, or None if nothing may leave.

    See :func:`portability.privacy.engine.apply`; ``policy`` defaults to the one in force.
    """
    in_force = policy if policy is not None else current_policy()
    return engine.apply(in_force, category, record, granted=granted, context=context)


def reset_current_policy() -> None:
    """Forget the process's policy sources (the next call loads the file again)."""
    with _lock:
        _sources.clear()
