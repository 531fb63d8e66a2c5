"""One error tree: every public exception is a :class:`PortabilityError`, under its package's.

A caller that catches ``PortabilityError`` catches everything this project raises on purpose,
and one that catches a package's error (``WireError``, ``OpsError``...) catches everything that
package raises; ``retriable`` on them is the one way code decides to retry. Exceptions whose
name starts with ``_`` are a module's own control flow and never leave it, so they are free.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import portability
from portability.errors import PortabilityError

# Running ``python -m portability`` is what importing this module does.
_NOT_IMPORTED = {"portability.__main__"}


def _modules() -> list[ModuleType]:
    names = [
        info.name
        for info in pkgutil.walk_packages(portability.__path__, prefix="portability.")
        if info.name not in _NOT_IMPORTED
    ]
    return [portability, *(importlib.import_module(name) for name in sorted(names))]


def _packages() -> list[str]:
    """The packages right under ``portability`` (``portability.wire``...)."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(portability.__path__, prefix="portability.")
        if info.ispkg
    )


def _exceptions(module: ModuleType) -> list[type[BaseException]]:
    """The public exception classes ``module`` defines (not those it imports)."""
    return [
        value
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
        and not name.startswith("_")
    ]


def _package_error(package: str) -> type[PortabilityError] | None:
    """The error of ``package``: the one class of its ``errors`` module right under the root."""
    try:
        errors = importlib.import_module(f"{package}.errors")
    except ModuleNotFoundError:
        return None
    roots = [
        error
        for error in _exceptions(errors)
        if issubclass(error, PortabilityError) and PortabilityError in error.__bases__
    ]
    return roots[0] if len(roots) == 1 else None


def test_every_public_exception_is_a_portability_error() -> None:
    offenders = sorted(
        f"{module.__name__}.{error.__qualname__}"
        for module in _modules()
        for error in _exceptions(module)
        if not issubclass(error, PortabilityError)
    )
    assert offenders == [], f"not under PortabilityError: {offenders}"


def test_each_package_has_one_package_error_in_its_errors_module() -> None:
    missing = [package for package in _packages() if _package_error(package) is None]
    assert missing == [], (
        f"without an errors module holding exactly one XxxError(PortabilityError): {missing}"
    )


def test_a_package_raises_errors_under_its_own_package_error() -> None:
    modules = _modules()
    offenders = []
    for package in _packages():
        root = _package_error(package)
        if root is None:
            continue  # reported by the test above
        for module in modules:
            if module.__name__.startswith(f"{package}."):
                offenders += [
                    f"{module.__name__}.{error.__qualname__} (not a {root.__name__})"
                    for error in _exceptions(module)
                    if not issubclass(error, root)
                ]
    assert offenders == [], f"outside their package's error: {sorted(offenders)}"
