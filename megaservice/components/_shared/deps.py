"""Optional dependencies: import them where a backend needs them, or say which pip line installs them."""

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from megaservice.exceptions import MissingDependencyError

__all__ = ["package_dir", "require"]


def require(module: str, extra: str, package: str | None = None) -> ModuleType:
    """Import `module`, or raise `MissingDependencyError` naming `pip install 'megaservice[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(package or module.split(".")[0], extra) from exc


def package_dir(package: str, install: str) -> Path:
    """The folder of an installed package, found without importing it (data-only packages: models, weights).

    Raises:
        MissingDependencyError: it is not installed; the message is the `install` line.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(package, hint=install)
    return Path(next(iter(spec.submodule_search_locations)))
