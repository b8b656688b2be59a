"""One place that imports ArviZ, whichever way it was installed.

ArviZ 1.x (Python >= 3.12) is a meta-package over ``arviz-base`` (data: ``from_dict``,
``xarray.DataTree``), ``arviz-stats`` (``ess``, ``rhat``, ``summary``, ``loo``,
``loo_approximate_posterior``, ``compare``) and ``arviz-plots``.  On Python 3.11 those
packages install directly at 0.8.x with the same API.  Both routes are the ``diagnostics``
extra (``pip install pyro-bnn[diagnostics]``); the rest of the project imports them only
through the functions here, so a missing install fails with one clear message.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

INSTALL_HINT = "install the diagnostics extra: pip install 'pyro-bnn[diagnostics]'"


def _import(name: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(f"{purpose} needs the package {name!r}; {INSTALL_HINT}") from error


def arviz_base() -> ModuleType:
    """``arviz_base``: converters to ``xarray.DataTree`` and the data conventions."""
    return _import("arviz_base", "converting to ArviZ")


def arviz_stats() -> ModuleType:
    """``arviz_stats``: ESS, R-hat, summaries, PSIS-LOO and model comparison."""
    stats = _import("arviz_stats", "ArviZ diagnostics")
    # arviz_stats hides a missing optional dependency of its xarray interface (it swallows
    # ModuleNotFoundError in its __init__); ask for one of those functions to surface it.
    if not hasattr(stats, "loo"):
        _import("xarray_einstats", "ArviZ diagnostics")
    return stats


@functools.cache
def arviz_plots() -> ModuleType | None:
    """``arviz_plots`` when it is installed and imports with this matplotlib, else ``None``.

    ArviZ's own plots are optional: ``arviz-plots`` 0.8 (the last release for Python 3.11)
    fails to import with matplotlib 3.11, so any error on import means "not available".
    """
    try:
        return importlib.import_module("arviz_plots")
    except Exception:  # noqa: BLE001 - any failure to import means the plots are unavailable
        return None
