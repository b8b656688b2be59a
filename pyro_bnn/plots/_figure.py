"""Making, saving and returning figures.

Every plot builds a :class:`matplotlib.figure.Figure` directly, without pyplot: it neither
selects nor switches the backend of a running notebook, works without a display, and leaves no
figure open in pyplot's list.  Saving renders through the Agg canvas that ``Figure.savefig``
picks from the file format.
"""

from __future__ import annotations

import os

import torch
from matplotlib.axes import Axes
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure

from pyro_bnn.util import atomic_write


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _format(path: str) -> str:
    """The file format named by the suffix of ``path``, PNG without one."""
    return os.path.splitext(path)[1].lstrip(".").lower() or "png"


def _check_path(path: str | os.PathLike | None) -> str | None:
    """``path`` as a string, after checking (before anything is drawn) that a figure can be
    saved there: a string or path-like, in an existing directory, with a format matplotlib
    writes."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a string, a path-like object or None, got {path!r}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        raise ValueError(f"path must be a string or a path-like object of one, got {path!r}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"path {path!r}: the directory {directory!r} does not exist")
    supported = FigureCanvasBase.get_supported_filetypes()
    if _format(path) not in supported:
        raise ValueError(
            f"path {path!r}: matplotlib cannot write the format {_format(path)!r}; use one of "
            f"{', '.join(sorted(supported))}"
        )
    return path


def _write_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Save ``fig`` to ``path`` (format from the suffix, PNG without one) atomically
    (:func:`~pyro_bnn.util.atomic_write`)."""
    atomic_write(path, lambda temporary: fig.savefig(temporary, format=_format(path), dpi=110))


def _finish(fig: Figure, path: str | None) -> Figure:
    """Save ``fig`` when a path was given; return it."""
    if path is not None:
        _write_figure(fig, path)
    return fig


def _axes_or_figure(ax: Axes | None, width: float, height: float) -> tuple[Figure, Axes]:
    """A new figure with one axes, or the figure holding ``ax`` (the top-level one when ``ax``
    lies in a subfigure) and ``ax`` itself."""
    if ax is None:
        fig = _figure(width, height)
        return fig, fig.subplots()
    if not isinstance(ax, Axes):
        raise ValueError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    return ax.figure.figure, ax


def _bin_edges(low: float, high: float, num_bins: int) -> torch.Tensor:
    """``num_bins + 1`` equally spaced edges over ``[low, high]``, widened to a unit interval
    around a single value."""
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    return torch.linspace(low, high, num_bins + 1, dtype=torch.float64)
