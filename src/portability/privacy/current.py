"""The policy in force in this process, for code that is not handed one (snapshots, archives).

The matcher holds its own :class:`~portability.privacy.loader.PolicySource`; everything else
that ships records calls :func:`current_policy` (or :func:`apply`) each time it starts
shipping, and stamps ``policy.version`` on what it ships (an archive's manifest, a snapshot's
deliveries)::

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
from typing import Any

from portability.privacy import engine
from portability.privacy.loader import PolicySource
from portability.privacy.model import PrivacyPolicy
from portability.settings import Settings
from portability.wire.records import ChangeContext

__all__ = ["apply", "current_policy", "policy_source", "reset_current_policy"]

_lock = threading.Lock()
_source: PolicySource | None = None


def policy_source(settings: Settings | None = None) -> PolicySource:
    """The process's policy source, created on first use from ``settings``.

    Later calls return the same source whatever ``settings`` they pass: a process runs under
    one policy file (:func:`reset_current_policy` starts over, for tests).

    Raises:
        PolicyError: The policy file cannot be loaded.
    """
    global _source
    with _lock:
        if _source is None:
            configured = settings if settings is not None else Settings()
            _source = PolicySource(
                configured.privacy_policy_path, configured.privacy_policy_reload_s
            )
        return _source


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
    """Forget the process's policy source (the next call loads it again)."""
    global _source
    with _lock:
        _source = None
