"""Reading the policy file, and noticing a new version of it while the pipeline runs.

The file is YAML (JSON is YAML too). The default is the policy shipped with the package:
``policies/privacy-policy.yaml`` in a checkout, ``portability/privacy/policies/`` when
installed from a wheel (see ``pyproject.toml``).

:class:`PolicySource` holds the policy in force and checks the file at most every
``check_every_s`` seconds (one ``stat``); when the file changed it is loaded and validated, and
only a valid file with a new version replaces the policy in force. A broken file, or one whose
rules changed under the same version, is refused with an error log, and the old version stays:
the pipeline never stops, and never runs without rules, because of an edit.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import yaml

from portability.privacy.errors import PolicyError
from portability.privacy.model import PrivacyPolicy, policy_from_document

__all__ = ["POLICY_FILE", "PolicySource", "default_policy_path", "load_policy"]

log = logging.getLogger(__name__)

POLICY_FILE: Final = "privacy-policy.yaml"
_Stamp = tuple[int, int, int]  # inode, size, mtime in ns


def default_policy_path() -> Path:
    """The policy shipped with the package (installed copy first, then the checkout's)."""
    installed = Path(__file__).parent / "policies" / POLICY_FILE
    if installed.is_file():
        return installed
    return Path(__file__).resolve().parents[3] / "policies" / POLICY_FILE


def load_policy(path: Path | None = None) -> PrivacyPolicy:
    """Load and validate the policy at ``path`` (default: the shipped one).

    Raises:
        PolicyError: The file is missing, unreadable, not YAML, or not a valid policy; the
            message names the file and what to fix.
    """
    source = default_policy_path() if path is None else path
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(
            f"cannot read the privacy policy ({error.strerror or error}); set "
            "PORTABILITY_PRIVACY_POLICY_PATH to a policy file, or unset it for the shipped one",
            source,
        ) from error
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyError(f"not valid YAML: {error}", source) from error
    return policy_from_document(document, source)


class PolicySource:
    """The policy in force, reloaded when its file changes to a new version.

    Attributes:
        reloads: New versions taken into force since start.
        refusals: Changed files that were not taken (invalid, or new rules under an old
            version).
    """

    def __init__(
        self,
        path: Path | None = None,
        check_every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = default_policy_path() if path is None else path
        self._check_every_s = check_every_s
        self._clock = clock
        self._stamp = self._read_stamp()
        self._policy = load_policy(self._path)
        self._next_check = clock() + check_every_s
        self.reloads = 0
        self.refusals = 0
        log.info(
            "privacy policy %s in force, from %s",
            self._policy.version,
            self._path,
            extra={"policy_version": self._policy.version, "policy_path": str(self._path)},
        )

    @property
    def path(self) -> Path:
        return self._path

    @property
    def policy(self) -> PrivacyPolicy:
        """The policy in force now (without checking the file)."""
        return self._policy

    def poll(self) -> PrivacyPolicy:
        """The policy in force, after checking the file if ``check_every_s`` has passed."""
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self._check_every_s
            self.check()
        return self._policy

    def check(self) -> bool:
        """Check the file now; True if a new version came into force."""
        stamp = self._read_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp  # a refused file is not read again until it changes again
        try:
            candidate = load_policy(self._path)
        except PolicyError as error:
            return self._refuse(f"the changed privacy policy file is not valid: {error}")
        current = self._policy
        if candidate == current:
            return False
        if candidate.version == current.version:
            return self._refuse(
                f"{self._path}: the privacy policy's rules changed but its version "
                f"{current.version!r} did not; give the new rules a new version"
            )
        self._policy = candidate
        self.reloads += 1
        log.info(
            "privacy policy %s in force (was %s), reloaded from %s",
            candidate.version,
            current.version,
            self._path,
            extra={
                "policy_version": candidate.version,
                "previous_policy_version": current.version,
                "policy_path": str(self._path),
            },
        )
        return True

    def _refuse(self, why: str) -> bool:
        self.refusals += 1
        log.error(
            "%s; keeping privacy policy %s",
            why,
            self._policy.version,
            extra={"policy_version": self._policy.version, "policy_path": str(self._path)},
        )
        return False

    def _read_stamp(self) -> _Stamp | None:
        try:
            status = os.stat(self._path)
        except OSError as error:
            log.warning("cannot stat the privacy policy file %s: %s", self._path, error)
            return None
        return (status.st_ino, status.st_size, status.st_mtime_ns)
