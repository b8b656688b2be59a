"""ArviZ's own plots (``arviz-plots``), as matplotlib figures like the rest of this package."""

from __future__ import annotations

import os
from types import ModuleType

from matplotlib.figure import Figure, FigureBase

from ._figure import _check_path, _finish

_UNAVAILABLE = (
    "arviz_plot needs the package 'arviz-plots', which is not installed or does not import "
    "with this matplotlib (arviz-plots 0.8, the last release for Python 3.11, fails with "
    "matplotlib 3.11); on Python >= 3.12 install the diagnostics extra: "
    "pip install 'pyro-bnn[diagnostics]'"
)


def _module() -> ModuleType:
    from pyro_bnn.diagnostics import arviz_compat

    module = arviz_compat.arviz_plots()
    if module is None:
        raise ImportError(_UNAVAILABLE)
    return module


def _kinds(module: ModuleType) -> list[str]:
    """The plotting functions ``module`` exports: its public callables named ``plot_*``."""
    names = getattr(module, "__all__", None) or dir(module)
    return sorted(
        name for name in names if name.startswith("plot_") and callable(getattr(module, name, None))
    )


def _as_figure(candidate) -> Figure | None:
    if isinstance(candidate, FigureBase):
        return candidate.figure  # the top-level figure of a subfigure, a figure itself
    item = getattr(candidate, "item", None)  # a 0-d array or DataArray holding the figure
    if callable(item):
        try:
            candidate = item()
        except (TypeError, ValueError):
            return None
        if isinstance(candidate, FigureBase):
            return candidate.figure
    return None


def _figure_of(result) -> Figure | None:
    """The matplotlib figure of what a plotting function of ``arviz_plots`` returned: a
    ``PlotCollection`` or ``PlotMatrix`` holds it in ``.viz["figure"]`` (``get_viz("figure")``
    from arviz-plots 0.6; ``.viz["chart"]`` before); a figure or an axes is taken as is."""
    candidates = [lambda: result, lambda: result.get_viz("figure")]
    for key in ("figure", "chart"):
        candidates.append(lambda key=key: result.viz[key])
    candidates.append(lambda: result.figure)  # an axes
    for candidate in candidates:
        try:
            figure = _as_figure(candidate())
        except (AttributeError, LookupError, TypeError, ValueError):
            continue
        if figure is not None:
            return figure
    return None


def arviz_plot(kind: str, data, *, path: str | os.PathLike | None = None, **kwargs) -> Figure:
    """One of ArviZ's plots (Kumar et al., 2019) through ``arviz-plots``, the plotting part of
    ArviZ 1.x, with the matplotlib backend, returned as a matplotlib figure: for instance
    ``"plot_dist"`` (marginal posteriors), ``"plot_forest"`` (credible intervals of many
    parameters), ``"plot_trace"`` (MCMC traces), ``"plot_rank"``, ``"plot_ess"``,
    ``"plot_ppc_dist"`` (posterior predictive checks) or ``"plot_loo_pit"``, whichever the
    installed version exports.

    ``arviz-plots`` is imported through :func:`pyro_bnn.diagnostics.arviz_compat.arviz_plots`
    only.  It draws with pyplot, so unlike the other plots here the figure is also in pyplot's
    list of open figures.

    :param kind: the name of a plotting function of ``arviz_plots``, with or without its
        ``plot_`` prefix (``"dist"`` is ``"plot_dist"``).
    :param data: what that function plots: an ``xarray.DataTree`` (e.g. from
        ``arviz_base.from_dict({"posterior": {"w": samples}})`` with samples shaped ``(chain,
        draw, ...)``), a dataset, or whatever else it accepts.
    :param path: also save the figure there (PNG unless the suffix names another format).
    :param kwargs: passed on to the plotting function; ``backend`` must be ``"matplotlib"``,
        the default here.
    :returns: the figure holding ArviZ's plot.
    :raises ImportError: ``arviz-plots`` is not available.
    :raises ValueError: an unknown ``kind`` (the message lists the available ones), no data, or
        another backend.
    :raises TypeError: the plotting function returned no matplotlib figure.

    R. Kumar, C. Carroll, A. Hartikainen and O. Martin, *ArviZ a unified library for
    exploratory analysis of Bayesian models in Python*, Journal of Open Source Software 4(33),
    2019.
    """
    path = _check_path(path)
    if not isinstance(kind, str) or not kind:
        raise ValueError(
            f"kind must be the name of an ArviZ plot such as 'plot_dist', got {kind!r}"
        )
    if data is None:
        raise ValueError("data is None: give the DataTree (or dataset) to plot")
    backend = kwargs.setdefault("backend", "matplotlib")
    if backend != "matplotlib":
        raise ValueError(
            f"arviz_plot returns matplotlib figures: backend must be 'matplotlib', got {backend!r}"
        )
    module = _module()
    kinds = _kinds(module)
    name = kind if kind.startswith("plot_") else f"plot_{kind}"
    if name not in kinds:
        raise ValueError(
            f"unknown kind {kind!r}: arviz_plots {getattr(module, '__version__', '')} has "
            f"{', '.join(kinds) or 'no plotting functions'}"
        )
    result = getattr(module, name)(data, **kwargs)
    figure = _figure_of(result)
    if figure is None:
        raise TypeError(
            f"arviz_plots.{name} returned a {type(result).__name__} holding no matplotlib figure"
        )
    return _finish(figure, path)
